"""Per-tier additions a data centre needs: extra open ports, extra `ray start` flags and environment.

Each is refused when it would undo what the program pins: a port the firewall
already gives to Ray, SSH or monitoring, a port open to the world, a flag or
variable that sets a port, an address or the token auth.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from components.model.checks import source_set_problem
from components.model.fields import ConfigModel, Port, ipv4_network, refuse_booleans
from components.model.ports import MONITORING, RAY, REDIS, SSH

# The `ray start` flags components/render/ray_start.py sets (tests/test_config.py checks the
# rendered argv against this list): an extra flag may not set them again.
PINNED_RAY_FLAGS = frozenset({
    "--head", "--address", "--port", "--ray-client-server-port", "--include-dashboard", "--dashboard-host",
    "--dashboard-port", "--node-ip-address", "--node-name", "--node-manager-port", "--object-manager-port",
    "--runtime-env-agent-port", "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port",
    "--metrics-export-port", "--min-worker-port", "--max-worker-port", "--worker-port-list", "--num-cpus",
    "--object-store-memory", "--temp-dir", "--object-spilling-directory", "--labels", "--resources",
    "--disable-usage-stats", "--block", "--redis-password", "--gcs-server-port",
})
# Variables the program sets on Ray containers, and the families that carry auth, addresses and ports.
PINNED_RAY_ENV = frozenset({
    "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "AUTOSCALER_METRIC_PORT",
    "DASHBOARD_METRIC_PORT", "RAY_GRAFANA_HOST", "RAY_PROMETHEUS_HOST", "RAY_PROMETHEUS_NAME",
    "RAY_GRAFANA_IFRAME_HOST", "RAY_REDIS_ADDRESS", "RAY_ADDRESS", "RAY_external_storage_namespace",
    "RAY_REDIS_PASSWORD", "RAY_gcs_rpc_server_reconnect_timeout_s",
    "RAY_USE_TLS", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT",
})
_PINNED_ENV_PATTERN = re.compile(r"(RAY_AUTH.*|.*_PORT|.*_ADDRESS|.*_HOST)", re.IGNORECASE)


def _reserved_ports() -> dict[int, str]:
    """Every port the firewall already opens, with whose it is."""
    reserved = {SSH: "SSH", REDIS: "the GCS's Redis port"}
    for name, port in vars(RAY).items():
        if name not in ("min_worker", "max_worker"):
            reserved[port] = f"Ray's {name.replace('_', ' ')} port"
    for name, port in vars(MONITORING).items():
        reserved[port] = f"the {name.replace('_', ' ')} port"
    return reserved


def _source(value: Any) -> Any:
    refuse_booleans(value)
    if value in ("cluster", "admins"):
        return value
    network = ipv4_network(value)
    if isinstance(network, ipaddress.IPv4Network) and network.prefixlen == 0:
        raise ValueError(f"{value} would open the port to the world: name the networks (or cluster / admins)")
    if not isinstance(network, ipaddress.IPv4Network):
        raise ValueError(f"{value!r} is not a source: write cluster, admins or a network like 10.30.0.0/24")
    return network


Source = Annotated[Union[Literal["cluster", "admins"], ipaddress.IPv4Network], BeforeValidator(_source)]


class ExtraPort(ConfigModel):
    """One more port (or range) a tier's VMs open, to the named sources only."""

    port: Port
    to_port: Optional[Port] = None  # the last port of a range
    protocol: Literal["tcp", "udp"] = "tcp"
    sources: list[Source] = Field(alias="from", min_length=1)

    @model_validator(mode="after")
    def _free_range(self) -> "ExtraPort":
        last = self.to_port or self.port
        if last < self.port:
            raise ValueError(f"toPort {last} is below port {self.port}")
        reserved = _reserved_ports()
        taken = sorted(p for p in reserved if self.port <= p <= last)
        if taken:
            raise ValueError(f"{taken[0]} is {reserved[taken[0]]}, which the firewall already opens to whom it belongs: pick another port")
        if self.port <= RAY.max_worker and last >= RAY.min_worker:
            raise ValueError(f"overlaps Ray's worker ports {RAY.min_worker}-{RAY.max_worker}: pick another port")
        return self

    @model_validator(mode="after")
    def _not_the_world_in_pieces(self) -> "ExtraPort":
        too_wide = source_set_problem(source for source in self.sources if not isinstance(source, str))
        if too_wide:
            raise ValueError(f"the networks in `from` {too_wide}")
        return self

    @property
    def ufw_port(self) -> str:
        """The port as ufw writes it: 8000, or 8000:8010 for a range."""
        return f"{self.port}:{self.to_port}" if self.to_port and self.to_port != self.port else str(self.port)


def _start_args(args: list[str]) -> list[str]:
    for arg in args:
        flag = arg.split("=", 1)[0]
        if not re.fullmatch(r"--[a-z0-9][a-z0-9-]*", flag):
            raise ValueError(f"{arg!r} is not a ray start flag: write --flag=value in one item, like --num-gpus=1")
        if flag in PINNED_RAY_FLAGS or flag.endswith(("-port", "-address", "-host")):
            raise ValueError(f"{flag} is set by the program (ports, addresses, sizes, labels and auth are pinned): leave it out")
    return args


def _env(env: dict[str, str]) -> dict[str, str]:
    for name in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"{name!r} is not an environment variable name: letters, digits and _")
        if name in PINNED_RAY_ENV or _PINNED_ENV_PATTERN.fullmatch(name):
            raise ValueError(f"{name} is set by the program (auth, TLS, addresses and ports are pinned): leave it out")
    return env


RayStartArgs = Annotated[list[str], AfterValidator(_start_args)]
RayEnv = Annotated[dict[str, Annotated[str, BeforeValidator(refuse_booleans)]], AfterValidator(_env)]
