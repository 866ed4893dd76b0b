"""The rules that span several keys of a stack config.

They run on whatever validated: on the whole model, or, when the schema found
problems, on each section and node that is valid on its own, so one fix does
not uncover the next error. Nodes are named by name.
"""
from __future__ import annotations

import datetime as dt
import functools
import re
from typing import TYPE_CHECKING, Any, NamedTuple, Optional
from zoneinfo import ZoneInfo

from components.model.errors import Problem
from components.model.versions import pinned_ray_client

if TYPE_CHECKING:
    from components.model.config import Alerting, Monitoring, Network, Node, Ray, Redis, Tier, Vsphere, WindowSchedule

# Alertmanager's receiver for routes without one (components/render/alerting_config.py).
NOBODY_RECEIVER = "nobody"
# The firewall opens Ray's internal ports to the whole cluster network: it must be a real subnet.
MIN_CLUSTER_PREFIX = 8


class TierView(NamedTuple):
    """What the rules need of a tier; None where that part of the tier did not validate."""

    always_on: Optional[bool]
    override: Optional[str]
    window: Optional[WindowSchedule]
    nodes: list[Node]

    @classmethod
    def of(cls, tier: Tier) -> TierView:
        window = None if isinstance(tier.schedule, str) else tier.schedule
        return cls(tier.always_on, tier.override, window, tier.nodes)

    @property
    def can_hold_the_head(self) -> Optional[bool]:
        return None if self.always_on is None else self.always_on and self.override != "off"


def cross_checks(
    *,
    tiers: dict[str, TierView],
    all_nodes_known: bool,
    vsphere: Optional[Vsphere] = None,
    network: Optional[Network] = None,
    ray: Optional[Ray] = None,
    monitoring: Optional[Monitoring] = None,
    redis: Optional[Redis] = None,
    alerting: Optional[Alerting] = None,
    **_: Any,
) -> list[Problem]:
    """Every cross-key problem among the parts given (a part that did not validate is None)."""
    problems = _network_rules(network) if network else []
    for name, tier in tiers.items():
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
            problems.append(Problem(f"tiers.{name}", "a tier name must be lowercase letters, digits and dashes, starting with a letter"))
        if tier.window is not None:
            problems += _window_rules(f"tiers.{name}.schedule", tier.window)
    problems += _node_rules(tiers, network)
    problems += _head_rules(tiers, all_nodes_known)
    for key, section, what in (("monitoring.host", monitoring, "monitoring"), ("redis.host", redis, "the GCS's state")):
        if section is not None and section.host is not None:
            problems += _always_on_host_rules(key, section.host, what, tiers, all_nodes_known)
    if alerting is not None:
        problems += _alerting_rules(alerting)
    if ray is not None:
        client = pinned_ray_client()
        if ray.version != client:
            problems.append(Problem("ray.image", f"Ray {ray.version} in the image must equal the pinned Ray client {client} (requirements.txt)"))
    if vsphere is not None and not vsphere.compute_cluster and not vsphere.resource_pool:
        problems.append(Problem("vsphere", "set computeCluster or resourcePool: VMs need a place to run"))
    return problems


def _network_rules(net: Network) -> list[Problem]:
    problems = []
    if net.cidr.prefixlen < MIN_CLUSTER_PREFIX:
        problems.append(Problem(
            "network.cidr",
            f"{net.cidr} is wider than /{MIN_CLUSTER_PREFIX}: Ray's internal ports are open to all of network.cidr; name the cluster's subnet",
        ))
    if net.gateway not in net.cidr:
        problems.append(Problem("network.gateway", f"{net.gateway} is outside network.cidr {net.cidr}"))
    elif net.gateway in (net.cidr.network_address, net.cidr.broadcast_address):
        problems.append(Problem("network.gateway", f"{net.gateway} is the network or broadcast address of {net.cidr}"))
    for i, admin in enumerate(net.admin_cidrs):
        if admin.prefixlen == 0:
            problems.append(
                Problem(f"network.adminCidrs[{i}]", f"{admin} would open SSH and dashboards to everyone; name the admin networks")
            )
    return problems


def _window_rules(key: str, window: WindowSchedule) -> list[Problem]:
    problems = []
    length = (
        dt.datetime.combine(dt.date.min + dt.timedelta(days=1), window.end)
        - dt.datetime.combine(dt.date.min, window.start)
    ) % dt.timedelta(days=1)
    if length == dt.timedelta(0):
        problems.append(Problem(f"{key}.end", "must differ from start (use schedule: always for 24/7)"))
    elif dt.timedelta(minutes=window.drain_lead_minutes) >= length:
        problems.append(Problem(f"{key}.drainLeadMinutes", f"must be shorter than the window ({length})"))
    for edge in ("start", "end"):
        skipped = _skipped_by_dst(getattr(window, edge), window.timezone)
        if skipped:
            problems.append(
                Problem(f"{key}.{edge}", f"{getattr(window, edge):%H:%M} does not exist on {skipped} in {window.timezone} (daylight saving): pick another time")
            )
    return problems


def _node_rules(tiers: dict[str, TierView], net: Optional[Network]) -> list[Problem]:
    problems = []
    seen_names: dict[str, str] = {}
    seen_ips: dict[str, str] = {}
    for tier_name, tier in tiers.items():
        for node in tier.nodes:
            key = f"tiers.{tier_name}.nodes[{node.name}]"
            if node.name in seen_names:
                problems.append(Problem(f"{key}.name", f"duplicate node name {node.name!r} (also in {seen_names[node.name]})"))
            seen_names.setdefault(node.name, f"tiers.{tier_name}")
            ip = str(node.ip)
            if ip in seen_ips:
                problems.append(Problem(f"{key}.ip", f"duplicate IP {ip} (also {seen_ips[ip]})"))
            seen_ips.setdefault(ip, key)
            if net is None:
                continue
            if node.ip not in net.cidr:
                problems.append(Problem(f"{key}.ip", f"{ip} is outside network.cidr {net.cidr}"))
            elif node.ip in (net.cidr.network_address, net.cidr.broadcast_address):
                problems.append(Problem(f"{key}.ip", f"{ip} is the network or broadcast address of {net.cidr}"))
            if node.ip == net.gateway:
                problems.append(Problem(f"{key}.ip", f"{ip} is the gateway"))
            if node.ip in net.dns_servers:
                problems.append(Problem(f"{key}.ip", f"{ip} is a DNS server (network.dnsServers)"))
    return problems


def _head_rules(tiers: dict[str, TierView], all_nodes_known: bool) -> list[Problem]:
    problems, heads = [], []
    for tier_name, tier in tiers.items():
        for node in tier.nodes:
            if not node.head:
                continue
            key = f"tiers.{tier_name}.nodes[{node.name}]"
            heads.append(key)
            if node.maintenance:
                problems.append(Problem(f"{key}.maintenance", "the head cannot be in maintenance: the cluster would go with it"))
            if tier.can_hold_the_head is False:
                problems.append(
                    Problem(f"{key}.head", f"the head must be in an always-on tier (schedule: always, no override: off); {tier_name!r} is not")
                )
    if all_nodes_known and len(heads) != 1:
        problems.append(Problem("tiers", f"exactly one node must have head: true, found {len(heads)}" + (f" ({', '.join(heads)})" if heads else "")))
    return problems


def _always_on_host_rules(key: str, host: str, what: str, tiers: dict[str, TierView], all_nodes_known: bool) -> list[Problem]:
    tier = next((t for t in tiers.values() if any(n.name == host for n in t.nodes)), None)
    if tier is None:
        return [Problem(key, f"{host!r} is not a node of any tier")] if all_nodes_known else []
    if tier.can_hold_the_head is False:
        return [Problem(key, f"{host!r} must be in an always-on tier, or {what} vanishes with its tier")]
    return []


def _alerting_rules(alerting: Alerting) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for receiver in alerting.receivers:
        key = f"alerting.receivers[{receiver.name}]"  # named by name, as nodes are
        if receiver.name in seen:
            problems.append(Problem(f"{key}.name", f"duplicate receiver name {receiver.name!r}"))
        if receiver.name == NOBODY_RECEIVER:
            problems.append(Problem(f"{key}.name", f"{NOBODY_RECEIVER!r} is reserved: alerts without a receiver go there"))
        seen.add(receiver.name)
        if receiver.name == NOBODY_RECEIVER:
            problems.append(Problem(f"{key}.name", f"{NOBODY_RECEIVER!r} is reserved: alerts without a receiver go there"))
        if not (receiver.email or receiver.webhook or receiver.slack):
            problems.append(Problem(key, f"receiver {receiver.name!r} needs one of email, webhook, slack"))
    for route in ("critical", "warning", "watchdog"):
        name = getattr(alerting, route)
        if name is not None and name not in seen:
            problems.append(Problem(f"alerting.{route}", f"{name!r} is not the name of one of alerting.receivers"))
    return problems


@functools.lru_cache(maxsize=None)
def _skipped_by_dst(wall: dt.time, zone_name: str) -> Optional[dt.date]:
    """A day on which `wall` does not exist in the zone (a spring-forward gap), if any."""
    zone = ZoneInfo(zone_name)
    for day in range(366 * 2):  # a fixed span: the rule cannot depend on today's date
        date = dt.date(2026, 1, 1) + dt.timedelta(days=day)
        local = dt.datetime.combine(date, wall, tzinfo=zone)
        if local.astimezone(dt.timezone.utc).astimezone(zone).time() != wall:
            return date
    return None
