"""The rules that span several keys of a stack config, run once the schema holds."""
from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Optional
from zoneinfo import ZoneInfo

from components.model.errors import Problem
from components.model.versions import pinned_ray_client

if TYPE_CHECKING:
    from components.model.config import ClusterConfig

# The firewall opens Ray's internal ports to the whole cluster network: it must be a real subnet.
MIN_CLUSTER_PREFIX = 8


def cross_checks(cfg: ClusterConfig) -> list[Problem]:
    problems: list[Problem] = []
    net = cfg.network
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

    for name in cfg.tiers:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
            problems.append(Problem(f"tiers.{name}", "a tier name must be lowercase letters, digits and dashes, starting with a letter"))

    seen_names: dict[str, str] = {}
    seen_ips: dict[str, str] = {}
    heads: list[str] = []
    for tier_name, tier in cfg.tiers.items():
        window = tier.schedule if not isinstance(tier.schedule, str) else None
        if window is not None:
            key = f"tiers.{tier_name}.schedule"
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
        for i, node in enumerate(tier.nodes):
            key = f"tiers.{tier_name}.nodes[{i}]"
            if node.name in seen_names:
                problems.append(Problem(f"{key}.name", f"duplicate node name {node.name!r} (also {seen_names[node.name]})"))
            seen_names.setdefault(node.name, key)
            ip = str(node.ip)
            if ip in seen_ips:
                problems.append(Problem(f"{key}.ip", f"duplicate IP {ip} (also {seen_ips[ip]})"))
            seen_ips.setdefault(ip, key)
            if node.ip not in net.cidr:
                problems.append(Problem(f"{key}.ip", f"{ip} is outside network.cidr {net.cidr}"))
            elif node.ip in (net.cidr.network_address, net.cidr.broadcast_address):
                problems.append(Problem(f"{key}.ip", f"{ip} is the network or broadcast address of {net.cidr}"))
            if node.ip == net.gateway:
                problems.append(Problem(f"{key}.ip", f"{ip} is the gateway"))
            if node.ip in net.dns_servers:
                problems.append(Problem(f"{key}.ip", f"{ip} is a DNS server (network.dnsServers)"))
            if node.head and node.maintenance:
                problems.append(Problem(f"{key}.maintenance", "the head cannot be in maintenance: the cluster would go with it"))
            if node.head:
                heads.append(key)
                if not tier.always_on or tier.override == "off":
                    problems.append(
                        Problem(f"{key}.head", f"the head must be in an always-on tier (schedule: always, no override: off); {tier_name!r} is not")
                    )
    if len(heads) != 1:
        problems.append(Problem("tiers", f"exactly one node must have head: true, found {len(heads)}" + (f" ({', '.join(heads)})" if heads else "")))

    if cfg.monitoring.host is not None:
        host = cfg.placed(cfg.monitoring.host)
        if host is None:
            problems.append(Problem("monitoring.host", f"{cfg.monitoring.host!r} is not a node of any tier"))
        elif not host.tier.always_on or host.tier.override == "off":
            problems.append(Problem("monitoring.host", f"{cfg.monitoring.host!r} must be in an always-on tier, or monitoring vanishes with its tier"))

    client = pinned_ray_client()
    if cfg.ray.version != client:
        problems.append(Problem("ray.image", f"Ray {cfg.ray.version} in the image must equal the pinned Ray client {client} (requirements.txt)"))
    if not cfg.vsphere.compute_cluster and not cfg.vsphere.resource_pool:
        problems.append(Problem("vsphere", "set computeCluster or resourcePool: VMs need a place to run"))
    return problems


def _skipped_by_dst(wall: dt.time, zone_name: str) -> Optional[dt.date]:
    """A day on which `wall` does not exist in the zone (a spring-forward gap), if any."""
    zone = ZoneInfo(zone_name)
    for day in range(366 * 2):  # a fixed span: the rule cannot depend on today's date
        date = dt.date(2026, 1, 1) + dt.timedelta(days=day)
        local = dt.datetime.combine(date, wall, tzinfo=zone)
        if local.astimezone(dt.timezone.utc).astimezone(zone).time() != wall:
            return date
    return None
