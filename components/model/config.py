"""The stack's typed config model, validated once, before any resource exists.

`load(raw)` takes the `ray-cluster:*` keys of a stack (as Pulumi or a YAML file
gives them) and returns a `ClusterConfig`, or raises `ConfigError` listing every
problem as `ray-cluster:<key>: <rule>`, nodes named by name. Nothing else in the
program reads raw config. Secrets (SSH private key, Ray token, Grafana password,
registry password, vSphere password) are not part of this model: they stay
Pulumi secrets (components/resources/stack_config.py).
"""
from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
from typing import Annotated, Any, Literal, Mapping, NamedTuple, Optional, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from pydantic import BaseModel, BeforeValidator, Discriminator, Field, Tag, field_validator

from components.model import fields as f
from components.model.fields import ConfigModel
from components.model.alerting import Alerting
from components.model.checks import TierView, cross_checks
from components.model.errors import NAMESPACE, ConfigError, Problem  # noqa: F401  (re-exported)
from components.model.extras import ExtraPort, RayEnv, RayStartArgs
from components.model.schedule import DailyWindow, parse_instant
from components.model.schema_errors import schema_problems
from components.model.versions import pinned_version, require_pinned


class Vsphere(ConfigModel):
    datacenter: str = Field(min_length=1)
    compute_cluster: Optional[str] = None
    resource_pool: Optional[str] = None
    datastore: str = Field(min_length=1)
    network: str = Field(min_length=1)
    template: str = Field(min_length=1)
    folder: Optional[str] = None


class Network(ConfigModel):
    cidr: f.Cidr
    gateway: ipaddress.IPv4Address
    dns_servers: list[ipaddress.IPv4Address] = Field(min_length=1)
    admin_cidrs: list[f.Cidr] = Field(min_length=1)
    search_domains: list[str] = []


class Ssh(ConfigModel):
    user: f.SshUser
    public_key: f.SshPublicKey
    # Also let in while a key is rotated (README "Day 2"): the old and the new key both work.
    additional_public_keys: list[f.SshPublicKey] = []

    @property
    def authorized_keys(self) -> list[str]:
        return [self.public_key, *self.additional_public_keys]


class Ray(ConfigModel):
    image: str
    image_digest: Optional[f.Digest] = None
    drain_grace_minutes: int = Field(default=10, gt=0)
    object_store_fraction: float = Field(default=0.3, gt=0, le=0.8)
    # nginx serving the dashboard and Jobs API over TLS (components/render/dashboard_proxy.py); it ships curl.
    dashboard_proxy_image: str = "nginx:1.26.3-alpine"

    _pinned = field_validator("image", "dashboard_proxy_image")(classmethod(lambda cls, v: require_pinned(v)))

    @property
    def version(self) -> str:
        return pinned_version(self.image)  # type: ignore[return-value]

    @property
    def drain_grace(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.drain_grace_minutes)


class WindowSchedule(ConfigModel):
    start: dt.time
    end: dt.time
    timezone: str
    drain_lead_minutes: int = Field(default=15, ge=0)
    # Cloned, booted and joined by `start` (README "Time to capacity"); alerts still expect the tier from `start`.
    bring_up_lead_minutes: int = Field(default=0, ge=0)

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
            bring_up_lead=dt.timedelta(minutes=self.bring_up_lead_minutes),
        )


def _schedule_word(value: Any) -> Any:
    f.refuse_booleans(value)
    if not isinstance(value, dict) and value != "always":
        raise ValueError(
            f"{value!r} is not a schedule: write always, or a daily window like "
            '{start: "18:00", end: "06:00", timezone: Europe/Berlin}'
        )
    return value


def _override_word(value: Any) -> Any:
    f.refuse_booleans(value)
    if value not in ("on", "off", None):
        raise ValueError(f'{value!r} is not an override: write "on" or "off" (quoted), or leave override out')
    return value


Schedule = Annotated[
    Union[Annotated[Literal["always"], Tag("always")], Annotated[WindowSchedule, Tag("window")]],
    Discriminator(lambda v: "window" if isinstance(v, (dict, WindowSchedule)) else "always"),
    BeforeValidator(_schedule_word),
]
Override = Annotated[Optional[Literal["on", "off"]], BeforeValidator(_override_word)]


class Node(ConfigModel):
    name: f.Hostname
    ip: ipaddress.IPv4Address
    head: bool = False
    # Drained and kept out of Ray (its Ray container removed; VM, firewall and exporters
    # stay) until the flag is removed: survives every later `up`, whoever runs it.
    maintenance: bool = False


class Tier(ConfigModel):
    vcpu: f.Vcpu
    memory_gb: f.MemoryGb
    disk_gb: f.DiskGb
    schedule: Schedule
    override: Override = None
    nodes: list[Node] = Field(min_length=1)
    extra_ports: list[ExtraPort] = []
    ray_start_args: RayStartArgs = []
    ray_env: RayEnv = {}

    @property
    def always_on(self) -> bool:
        return self.schedule == "always"

    @property
    def window(self) -> Optional[DailyWindow]:
        return None if isinstance(self.schedule, str) else self.schedule.daily()

    @property
    def scheduled_window(self) -> Optional[DailyWindow]:
        """The window that makes this tier come and go: None when it is always on, or an override holds it."""
        return self.window if self.override is None else None

    def live_at(self, at: dt.datetime) -> bool:
        """Whether this tier's VMs are wanted at `at`: the override first, then the schedule.

        The one home of that rule; without a scheduled window the answer never changes.
        """
        window = self.scheduled_window
        if window is not None:
            return window.wants_live(at)
        return self.override != "off"

    def expected_at(self, at: dt.datetime) -> bool:
        """Whether monitoring expects this tier's nodes at `at`: as `live_at`, but a window from its start
        (not its bring-up: VMs still booting in the bring-up lead are no outage)."""
        window = self.scheduled_window
        if window is not None:
            return window.serving(at)
        return self.override != "off"


def _pinned_image(reference: str) -> str:
    """An exact version tag, optionally followed by `@sha256:<digest>` (then pulled by digest)."""
    tagged, at, digest = reference.partition("@")
    if at:
        f._digest(digest)
    require_pinned(tagged)
    return reference


class Images(ConfigModel):
    """Each image by exact tag; `<image>:<tag>@sha256:<digest>` pins the digest too."""

    prometheus: str = "prom/prometheus:v2.53.4"
    grafana: str = "grafana/grafana:12.0.2"
    node_exporter: str = "prom/node-exporter:v1.9.1"
    cadvisor: str = "gcr.io/cadvisor/cadvisor:v0.52.1"
    registry: str = "registry:3.0.0"  # the LAN image mirror (components/render/image_mirror.py)
    alertmanager: str = "prom/alertmanager:v0.25.0"  # the version amtool checks the rendered config with

    _pinned = field_validator("*")(classmethod(lambda cls, v: _pinned_image(v)))


class RemoteWrite(ConfigModel):
    url: str = Field(pattern=r"^https?://\S+$")


class Monitoring(ConfigModel):
    host: Optional[f.Hostname] = None
    retention_days: int = Field(default=15, gt=0)
    images: Images = Images()
    # Off: every Grafana page needs a login (README "Grafana": what the Ray dashboard shows then).
    grafana_anonymous_viewing: bool = False
    remote_write: Optional[RemoteWrite] = None


class Redis(ConfigModel):
    """The Redis behind GCS fault tolerance (see README "When the head fails")."""

    host: Optional[f.Hostname] = None  # default: the head's VM
    image: str = "redis:7.0.15"  # the version Debian's redis-server, used by the tests, has
    # Workers and long-lived drivers wait this long for a restarting head before they exit.
    head_outage_minutes: int = Field(default=10, gt=0)

    _pinned = field_validator("image")(classmethod(lambda cls, v: require_pinned(v)))


class Registry(ConfigModel):
    """Where the VMs pull every image from, instead of the public registries."""

    mirror: f.RegistryPath
    username: Optional[str] = Field(default=None, min_length=1)

    def reference(self, image: str) -> str:
        """`image` as pulled through the mirror: <mirror>/<image as written>."""
        return f"{self.mirror}/{image}"

    @property
    def host(self) -> str:
        return self.mirror.split("/", 1)[0]


class Proxy(ConfigModel):
    """The data centre's HTTP proxy, for apt and for Docker's image pulls."""

    http: f.ProxyUrl
    https: Optional[f.ProxyUrl] = None
    no_proxy: list[str] = []


class PlacedNode(NamedTuple):
    """A node with the tier it belongs to."""

    tier_name: str
    tier: Tier
    node: Node


class ClusterConfig(ConfigModel):
    vsphere: Vsphere
    network: Network
    ssh: Ssh
    ray: Ray
    tiers: dict[str, Tier] = Field(min_length=1)
    monitoring: Monitoring = Monitoring()
    redis: Redis = Redis()
    alerting: Alerting = Alerting()
    registry: Optional[Registry] = None
    proxy: Optional[Proxy] = None
    # The size of the data disk that outlives its VM, on the monitoring host and on redis.host.
    data_disk_gb: f.DataDiskGb = 100
    at: Optional[dt.datetime] = None

    @field_validator("at", mode="before")
    @classmethod
    def _iso_with_offset(cls, value: Any) -> Any:
        return parse_instant(value) if isinstance(value, str) else value

    def model_copy(self, *, update: Optional[Mapping[str, Any]] = None, deep: bool = False) -> ClusterConfig:
        """A copy; what was cached from this model's nodes is not carried over."""
        copied = super().model_copy(update=update, deep=deep)
        for name in ("placed_nodes", "_by_name", "head", "monitoring_host", "redis_host"):
            copied.__dict__.pop(name, None)
        return copied

    # Cached: the model is frozen, and the program asks these for every node.
    @functools.cached_property
    def placed_nodes(self) -> list[PlacedNode]:
        return [PlacedNode(name, tier, node) for name, tier in self.tiers.items() for node in tier.nodes]

    @functools.cached_property
    def _by_name(self) -> dict[str, PlacedNode]:
        return {p.node.name: p for p in self.placed_nodes}

    @functools.cached_property
    def head(self) -> PlacedNode:
        return next(p for p in self.placed_nodes if p.node.head)

    def placed(self, node_name: str) -> Optional[PlacedNode]:
        """The node of that name with its tier, or None."""
        return self._by_name.get(node_name)

    @functools.cached_property
    def monitoring_host(self) -> PlacedNode:
        """monitoring.host, or the first always-on node that is not the head (the head if alone):
        monitoring must outlive the head to say that it is down."""
        if self.monitoring.host:
            return self._by_name[self.monitoring.host]
        standby = [p for p in self.placed_nodes if p.tier.always_on and p.tier.override != "off" and not p.node.head]
        return (standby or [self.head])[0]

    @functools.cached_property
    def redis_host(self) -> PlacedNode:
        return self._by_name[self.redis.host] if self.redis.host else self.head

    def data_disk_roles(self, node_name: str) -> tuple[str, ...]:
        """What keeps its data on `node_name`'s data disk: "monitoring", "redis", both or neither."""
        return tuple(
            role for role, host in (("monitoring", self.monitoring_host), ("redis", self.redis_host)) if host.node.name == node_name
        )

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

    def image(self, image: str) -> str:
        """The reference a VM pulls `image` by: through the registry mirror when there is one."""
        return self.registry.reference(image) if self.registry else image


def _valid(model: Any, value: Any) -> Any:
    """`value` validated as `model` (a model class or a type), or None when it is not valid."""
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(value)
        return pydantic.TypeAdapter(model).validate_python(value)
    except pydantic.ValidationError:
        return None


def _salvage(raw: dict[str, Any]) -> dict[str, Any]:
    """Whatever validates on its own, when the whole does not: the cross-key rules run on it."""
    parts: dict[str, Any] = {
        name: _valid(field.annotation, raw.get(field.alias or name, field.default))
        for name, field in ClusterConfig.model_fields.items()
        if name != "tiers"
    }
    tiers: dict[str, TierView] = {}
    complete = isinstance(raw.get("tiers"), dict)
    for name, tier_raw in (raw.get("tiers") or {}).items() if complete else ():
        tier = _valid(Tier, tier_raw)
        if tier is not None:
            tiers[name] = TierView.of(tier)
            continue
        tier_raw = tier_raw if isinstance(tier_raw, dict) else {}
        node_list: list[Any] = tier_raw["nodes"] if isinstance(tier_raw.get("nodes"), list) else []
        nodes = [n for n in (_valid(Node, n) for n in node_list) if n is not None]
        complete = complete and len(nodes) == len(node_list)
        schedule = _valid(Schedule, tier_raw.get("schedule"))
        override = _valid(Override, tier_raw.get("override"))
        tiers[name] = TierView(
            always_on=None if schedule is None else schedule == "always",
            override=override,
            window=schedule if isinstance(schedule, WindowSchedule) else None,
            nodes=nodes,
        )
    parts["tiers"], parts["all_nodes_known"] = tiers, complete
    return parts


def _parts(cfg: ClusterConfig) -> dict[str, Any]:
    parts: dict[str, Any] = {name: getattr(cfg, name) for name in ClusterConfig.model_fields}
    parts["tiers"] = {name: TierView.of(tier) for name, tier in cfg.tiers.items()}
    parts["all_nodes_known"] = True
    return parts


def load(raw: dict[str, Any]) -> ClusterConfig:
    """Validate a stack's `ray-cluster:*` keys (namespace stripped) into the model.

    Every problem in one pass: the schema's, then the rules across keys on
    whatever part of the config is valid on its own.
    """
    try:
        cfg = ClusterConfig.model_validate(raw)
    except pydantic.ValidationError as error:
        problems = schema_problems(error, raw, ClusterConfig)
        problems += [p for p in cross_checks(**_salvage(raw)) if p not in problems]
        raise ConfigError(problems) from None
    problems = cross_checks(**_parts(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg
