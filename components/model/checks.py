"""The rules that span several keys of a stack config.

They run on whatever validated: on the whole model, or, when the schema found
problems, on each section and node that is valid on its own, so one fix does
not uncover the next error. Nodes are named by name.
"""
from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Optional
from zoneinfo import ZoneInfo

from components.model.errors import Problem
from components.model.versions import pinned_ray_client

if TYPE_CHECKING:
    from components.model.config import Alerting, Monitoring, Network, Node, Ray, Redis, Tier, Vsphere, WindowSchedule

# Alertmanager's receiver for routes without one (components/render/alerting_config.py).
NOBODY_RECEIVER = "nobody"
# The cluster network bounds who may reach the Ray dashboard (the policy pack): a real subnet.
MIN_CLUSTER_PREFIX = 8
# The most addresses a set of source networks may cover together: a /8's worth. More is
# most of the world however it is split (0.0.0.0/1 + 128.0.0.0/1 is 0.0.0.0/0).
MAX_SOURCE_ADDRESSES = 2 ** (32 - MIN_CLUSTER_PREFIX)


def source_set_problem(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> Optional[str]:
    """Why a set of source networks is too wide to open anything to, or None.

    Overlaps count once; per IP version, more than a /8's share of the address
    space is too much (for IPv4, MAX_SOURCE_ADDRESSES)."""
    networks = list(networks)
    v4 = list(ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv4Network)))
    v6 = list(ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv6Network)))
    for merged in (v4, v6):
        covered = sum(net.num_addresses for net in merged)
        if merged and covered > 2 ** (merged[0].max_prefixlen - MIN_CLUSTER_PREFIX):
            return (
                f"together cover {covered} addresses ({', '.join(map(str, merged))}), more than a /{MIN_CLUSTER_PREFIX}: "
                "most of the world however it is split; name only the networks that need it"
            )
    return None


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
            f"{net.cidr} is wider than /{MIN_CLUSTER_PREFIX}: the Ray dashboard may be opened to all of network.cidr; name the cluster's subnet",
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
    too_wide = source_set_problem(net.admin_cidrs)
    if too_wide and all(admin.prefixlen > 0 for admin in net.admin_cidrs):
        problems.append(Problem("network.adminCidrs", f"SSH and the dashboards are opened to these networks, which {too_wide}"))
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
    elif dt.timedelta(minutes=window.bring_up_lead_minutes) > dt.timedelta(days=1) - length:
        # The last night's VMs drain from end minus drainLeadMinutes and are removed by `end`:
        # the next bring-up may not start before, or the two nights' VMs (same names, same IPs) overlap.
        problems.append(Problem(
            f"{key}.bringUpLeadMinutes",
            f"must not reach back past the previous window's end {window.end:%H:%M} (at most {dt.timedelta(days=1) - length} before start), "
            f"when its drain (drainLeadMinutes: {window.drain_lead_minutes}) and removal are over",
        ))
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
