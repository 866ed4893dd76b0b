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
from typing import Annotated, Any, Literal, NamedTuple, Optional, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from components.model.checks import cross_checks
from components.model.errors import NAMESPACE, ConfigError, Problem  # noqa: F401  (NAMESPACE: re-exported)
from components.model.schedule import DailyWindow
from components.model.versions import pinned_version, require_pinned


_HOSTNAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_DIGEST = r"^sha256:[0-9a-f]{64}$"
_SSH_PUBLIC_KEY = r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


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
    # Also let in while a key is rotated (README "Day 2"): the old and the new key both work.
    additional_public_keys: list[Annotated[str, Field(pattern=_SSH_PUBLIC_KEY)]] = []

    @property
    def authorized_keys(self) -> list[str]:
        return [self.public_key, *self.additional_public_keys]

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

    _pinned = field_validator("image")(classmethod(lambda cls, v: require_pinned(v)))

    @property
    def version(self) -> str:
        return pinned_version(self.image)  # type: ignore[return-value]

    @property
    def drain_grace(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.drain_grace_minutes)


class WindowSchedule(_Model):
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
    # Drained and kept out of Ray (its Ray container removed; VM, firewall and exporters
    # stay) until the flag is removed: survives every later `up`, whoever runs it.
    maintenance: bool = False


class Tier(_Model):
    vcpu: int = Field(gt=0)
    memory_gb: int = Field(gt=0)
    disk_gb: int = Field(gt=0)
    schedule: Union[Literal["always"], WindowSchedule]
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

    _pinned = field_validator("*")(classmethod(lambda cls, v: require_pinned(v)))


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

    def in_ray(self, at: dt.datetime) -> list[PlacedNode]:
        """The live nodes that run Ray: all but those in maintenance."""
        return [p for p in self.live_nodes(at) if not p.node.maintenance]


def _key(loc: tuple) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part in ("always", "WindowSchedule") or part.startswith(("literal[", "function-")):
            continue  # pydantic's union branch names are not config keys
        else:
            key += f".{part}" if key else str(part)
    return key


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
    problems = cross_checks(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg
