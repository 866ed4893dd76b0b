"""The stack's typed config model, validated once, before any resource exists.

`load(raw)` takes the `ray-cluster:*` keys of a stack (as Pulumi or a YAML file
gives them) and returns a `ClusterConfig`, or raises `ConfigError` listing every
problem as `ray-cluster:<key>: <rule>`. Nothing else in the program reads raw
config. Secrets (SSH private key, Ray token, Grafana password, vSphere password)
are not part of this model: they stay Pulumi secrets and are read in
`__main__.py`.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple, Optional, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from components.schedule import DailyWindow

NAMESPACE = "ray-cluster"
REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"

_HOSTNAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_EXACT_TAG = re.compile(r"^v?(?P<version>\d+\.\d+\.\d+)([-.+_][\w.-]+)?$")
_DIGEST = r"^sha256:[0-9a-f]{64}$"
# The firewall opens Ray's internal ports to the whole cluster network: it must be a real subnet.
MIN_CLUSTER_PREFIX = 8
_SSH_PUBLIC_KEY = r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$"


class Problem(NamedTuple):
    key: str
    rule: str


class ConfigError(ValueError):
    """Every problem in a stack's config, each naming its key and the rule."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  {NAMESPACE}:{p.key}: {p.rule}" for p in problems)
        super().__init__(f"invalid stack config ({len(problems)} problem(s)):\n{lines}")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def pinned_version(image: str) -> Optional[str]:
    """The exact X.Y.Z version in an image's tag, or None if it has none."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return None
    match = _EXACT_TAG.match(tag)
    return match.group("version") if match else None


def _require_pinned(image: str) -> str:
    if pinned_version(image) is None:
        raise ValueError(
            f"image {image!r} must be pinned to an exact version tag "
            "(like rayproject/ray:2.60.0-py311), never latest or a bare name"
        )
    return image


class Vsphere(_Model):
    datacenter: str = Field(min_length=1)
    compute_cluster: Optional[str] = None
    resource_pool: Optional[str] = None
    datastore: str = Field(min_length=1)
    network: str = Field(min_length=1)
    template: str = Field(min_length=1)
    folder: Optional[str] = None


class Network(_Model):
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    dns_servers: list[ipaddress.IPv4Address] = Field(min_length=1)
    admin_cidrs: list[ipaddress.IPv4Network] = Field(min_length=1)
    search_domains: list[str] = []


class Ssh(_Model):
    user: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    public_key: str = Field(pattern=_SSH_PUBLIC_KEY)

    @field_validator("user")
    @classmethod
    def _not_root(cls, user: str) -> str:
        if user == "root":
            raise ValueError("must not be root: cloud-init creates a sudo user for the program")
        return user


class Ray(_Model):
    image: str
    image_digest: Optional[str] = Field(default=None, pattern=_DIGEST)
    drain_grace_minutes: int = Field(default=10, gt=0)
    object_store_fraction: float = Field(default=0.3, gt=0, le=0.8)

    _pinned = field_validator("image")(classmethod(lambda cls, v: _require_pinned(v)))

    @property
    def version(self) -> str:
        return pinned_version(self.image)  # type: ignore[return-value]

    @property
    def drain_grace(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.drain_grace_minutes)


class Window(_Model):
    start: dt.time
    end: dt.time
    timezone: str
    drain_lead_minutes: int = Field(default=15, ge=0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hh_mm(cls, value: Any) -> Any:
        # Unquoted, YAML 1.1 (PyYAML) reads 18:00 as the sexagesimal 1080; Pulumi reads "18:00".
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a time: quote it in the stack file, like \"18:00\"")
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError(f"{value!r} must be a 24-hour HH:MM time like 18:00")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {zone!r}: use an IANA name like Europe/Berlin")
        return zone

    def daily(self) -> DailyWindow:
        return DailyWindow(
            start=self.start,
            end=self.end,
            timezone=self.timezone,
            drain_lead=dt.timedelta(minutes=self.drain_lead_minutes),
        )


class Node(_Model):
    name: str = Field(pattern=_HOSTNAME)
    ip: ipaddress.IPv4Address
    head: bool = False


class Tier(_Model):
    vcpu: int = Field(gt=0)
    memory_gb: int = Field(gt=0)
    disk_gb: int = Field(gt=0)
    schedule: Union[Literal["always"], Window]
    override: Optional[Literal["on", "off"]] = None
    nodes: list[Node] = Field(min_length=1)

    @field_validator("override", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 readers turn a bare on/off into booleans.
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @property
    def always_on(self) -> bool:
        return self.schedule == "always"

    @property
    def window(self) -> Optional[DailyWindow]:
        return None if isinstance(self.schedule, str) else self.schedule.daily()

    def live_at(self, at: dt.datetime) -> bool:
        """Whether the schedule, then the override, want this tier's VMs at `at`."""
        if self.override is not None:
            return self.override == "on"
        return self.window is None or self.window.wants_live(at)


class Images(_Model):
    prometheus: str = "prom/prometheus:v2.53.4"
    grafana: str = "grafana/grafana:12.0.2"
    node_exporter: str = "prom/node-exporter:v1.9.1"
    cadvisor: str = "gcr.io/cadvisor/cadvisor:v0.52.1"

    _pinned = field_validator("*")(classmethod(lambda cls, v: _require_pinned(v)))


class Monitoring(_Model):
    host: Optional[str] = None
    retention_days: int = Field(default=15, gt=0)
    images: Images = Images()


class PlacedNode(NamedTuple):
    """A node with the tier it belongs to."""

    tier_name: str
    tier: Tier
    node: Node


class ClusterConfig(_Model):
    vsphere: Vsphere
    network: Network
    ssh: Ssh
    ray: Ray
    tiers: dict[str, Tier] = Field(min_length=1)
    monitoring: Monitoring = Monitoring()
    at: Optional[dt.datetime] = None

    @field_validator("at", mode="before")
    @classmethod
    def _iso_with_offset(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an ISO 8601 instant like 2026-11-22T22:00:00+01:00")
            if parsed.tzinfo is None:
                raise ValueError(f"{value!r} must carry a UTC offset, like +01:00 or Z")
            return parsed
        return value

    @property
    def placed_nodes(self) -> list[PlacedNode]:
        return [PlacedNode(name, tier, node) for name, tier in self.tiers.items() for node in tier.nodes]

    @property
    def head(self) -> PlacedNode:
        return next(p for p in self.placed_nodes if p.node.head)

    def placed(self, node_name: str) -> Optional[PlacedNode]:
        """The node of that name with its tier, or None."""
        return next((p for p in self.placed_nodes if p.node.name == node_name), None)

    @property
    def monitoring_host(self) -> PlacedNode:
        return self.placed(self.monitoring.host or self.head.node.name)  # type: ignore[return-value]

    def instant(self) -> dt.datetime:
        """The pinned `at`, or now: the instant the desired state is computed for."""
        return self.at or dt.datetime.now(dt.timezone.utc)

    def live_tiers(self, at: dt.datetime) -> list[str]:
        return [name for name, tier in self.tiers.items() if tier.live_at(at)]

    def live_nodes(self, at: dt.datetime) -> list[PlacedNode]:
        live = set(self.live_tiers(at))
        return [p for p in self.placed_nodes if p.tier_name in live]


def _key(loc: tuple) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part in ("always", "Window") or part.startswith(("literal[", "function-")):
            continue  # pydantic's union branch names are not config keys
        else:
            key += f".{part}" if key else str(part)
    return key


def _cross_checks(cfg: ClusterConfig) -> list[Problem]:
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


def pinned_ray_client() -> str:
    """The Ray client version pinned in requirements.txt (the single source)."""
    match = re.search(r"^ray(\[[\w,]+\])?==(\S+)$", REQUIREMENTS.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"{REQUIREMENTS} must pin ray with ==")
    return match.group(2)


def load(raw: dict[str, Any]) -> ClusterConfig:
    """Validate a stack's `ray-cluster:*` keys (namespace stripped) into the model."""
    try:
        cfg = ClusterConfig.model_validate(raw)
    except pydantic.ValidationError as error:
        problems = []
        for e in error.errors():
            rule = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                rule = "unknown key (a typo?)"
            problems.append(Problem(_key(e["loc"]), rule))
        raise ConfigError(problems) from None
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg
