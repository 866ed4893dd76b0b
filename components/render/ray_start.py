"""What each VM's Ray container runs, as text (no Pulumi).

One `RayNodeSettings` per node, computed from the config, renders the `ray
start` argv, the container's environment, its entrypoint script and its
health check. Tests and the local rehearsal start real Ray from the very same
text, with addresses, ports, sizes and directories remapped via
`dataclasses.replace`.
"""
from __future__ import annotations

import datetime as dt
import json
import shlex
from dataclasses import dataclass

from components.model.config import ClusterConfig, PlacedNode
from components.model.ports import RAY, REDIS, RayPorts
from components.render import tls

CONTAINER_NAME = "ray-node"
HOST_DATA_DIR = "/var/lib/ray-cluster"
CONTAINER_DATA_DIR = "/ray-data"
# The rayproject/ray image runs as user ray (uid 1000, gid 100): it must own HOST_DATA_DIR.
IMAGE_UID, IMAGE_GID = 1000, 100
# Ray puts its unix sockets at <temp dir>/session_<timestamp>_<pid>/sockets/plasma_store
# (about 62 characters after the temp dir) and a unix socket path has at most 107.
MAX_TEMP_DIR_LENGTH = 40
TEMP_DIR = f"{CONTAINER_DATA_DIR}/tmp"
SPILL_DIR = f"{CONTAINER_DATA_DIR}/spill"

GIB = 2**30
# Ray uses /dev/shm only if it has room for the whole object store at start,
# and libraries in tasks (torch DataLoader, NCCL) take some shm of their own.
SHM_SLACK_BYTES = 1 * GIB
# After the drain wait, `ray start --block` still stops its processes gracefully.
STOP_MARGIN_SECONDS = 60
# Ray's own name for it (its client server reads it); the head's container gets it as a secret.
REDIS_PASSWORD_ENV = "RAY_REDIS_PASSWORD"


@dataclass(frozen=True)
class GcsStore:
    """Where the head's GCS keeps its state, so a restarted head resumes the same cluster."""

    address: str  # host:port of the Redis
    namespace: str  # the same on every restart: the key prefix of this cluster's state


def gcs_store(cfg: ClusterConfig) -> GcsStore:
    return GcsStore(f"{cfg.redis_host.node.ip}:{REDIS}", f"ray-cluster-{cfg.head.node.name}")


@dataclass(frozen=True)
class RayNodeSettings:
    node_name: str
    tier_name: str
    is_head: bool
    node_ip: str
    head_ip: str
    head_gcs_port: int
    ports: RayPorts
    num_cpus: int
    object_store_bytes: int
    shm_bytes: int
    temp_dir: str
    spill_dir: str
    shutdown_drain_seconds: int  # how long a SIGTERM'd node drains before stopping
    head_outage_seconds: int  # how long the node's raylet (and its drivers) wait for a restarting GCS
    tls_dir: str  # the node's certificate, key and the cluster CA (components/render/tls.py)
    # The tier's own additions (`rayStartArgs`, `rayEnv`), validated never to touch what is pinned.
    extra_args: tuple[str, ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()
    gcs_store: GcsStore | None = None  # the head's Redis; None: a head restart ends the cluster

    @property
    def gcs_address(self) -> str:
        return f"{self.head_ip}:{self.head_gcs_port}"


def longest_drain(cfg: ClusterConfig, placed: PlacedNode) -> dt.timedelta:
    """The longest drain this node can get: the grace, or a scheduled removal's lead."""
    window = placed.tier.window
    return max(cfg.ray.drain_grace, window.drain_lead) if window else cfg.ray.drain_grace


def node_settings(cfg: ClusterConfig, placed: PlacedNode) -> RayNodeSettings:
    tier = placed.tier
    object_store = int(cfg.ray.object_store_fraction * tier.memory_gb * GIB)
    return RayNodeSettings(
        node_name=placed.node.name,
        tier_name=placed.tier_name,
        is_head=placed.node.head,
        node_ip=str(placed.node.ip),
        head_ip=str(cfg.head.node.ip),
        head_gcs_port=RAY.gcs,
        ports=RAY,
        num_cpus=tier.vcpu,
        object_store_bytes=object_store,
        shm_bytes=object_store + SHM_SLACK_BYTES,
        temp_dir=TEMP_DIR,
        spill_dir=SPILL_DIR,
        shutdown_drain_seconds=int(longest_drain(cfg, placed).total_seconds()),
        head_outage_seconds=cfg.redis.head_outage_minutes * 60,
        extra_args=tuple(tier.ray_start_args),
        extra_env=tuple(sorted(tier.ray_env.items())),
        gcs_store=gcs_store(cfg) if placed.node.head else None,
        tls_dir=tls.CONTAINER_TLS_DIR,
    )


def stop_grace_seconds(cfg: ClusterConfig, placed: PlacedNode) -> int:
    """Docker's stop timeout: the SIGTERM drain may run its full length, then Ray stops."""
    return node_settings(cfg, placed).shutdown_drain_seconds + STOP_MARGIN_SECONDS


def ray_start_args(s: RayNodeSettings) -> list[str]:
    """The `ray start` argv (the entrypoint adds --block)."""
    if len(s.temp_dir) > MAX_TEMP_DIR_LENGTH:
        raise ValueError(f"temp dir {s.temp_dir!r} is longer than {MAX_TEMP_DIR_LENGTH} characters: Ray's unix sockets would not fit")
    p = s.ports
    if s.is_head:
        role = [
            "--head",
            f"--port={p.gcs}",
            f"--ray-client-server-port={p.client}",
            "--include-dashboard=true",
            # Plain HTTP: loopback only; the TLS proxy serves it to the network (dashboard_proxy.py).
            f"--dashboard-host={tls.LOOPBACK}",
            f"--dashboard-port={p.dashboard}",
        ]
    else:
        role = [f"--address={s.gcs_address}"]
    return [
        "ray",
        "start",
        *role,
        f"--node-ip-address={s.node_ip}",
        f"--node-name={s.node_name}",  # the VM's name: in the dashboard, and how a drain finds its node
        f"--node-manager-port={p.node_manager}",
        f"--object-manager-port={p.object_manager}",
        f"--runtime-env-agent-port={p.runtime_env_agent}",
        f"--dashboard-agent-grpc-port={p.dashboard_agent_grpc}",
        f"--dashboard-agent-listen-port={p.dashboard_agent_http}",
        f"--metrics-export-port={p.metrics_export}",
        f"--min-worker-port={p.min_worker}",
        f"--max-worker-port={p.max_worker}",
        f"--num-cpus={s.num_cpus}",
        f"--object-store-memory={s.object_store_bytes}",
        f"--temp-dir={s.temp_dir}",
        f"--object-spilling-directory={s.spill_dir}",
        # Labels are Ray's way to pick a tier; the custom resource is what the users' code uses.
        # The role lets a job's driver avoid the head (README: jobs that outlive the head).
        f"--labels=tier={s.tier_name},role={'head' if s.is_head else 'worker'}",
        f"--resources={json.dumps({f'tier:{s.tier_name}': s.num_cpus})}",
        "--disable-usage-stats",
        *s.extra_args,
    ]


def ray_env(s: RayNodeSettings) -> dict[str, str]:
    """The container's non-secret environment (RAY_AUTH_TOKEN is added as a secret)."""
    env = {
        **dict(s.extra_env),
        "RAY_AUTH_MODE": "token",
        # Every gRPC channel, in and out, is mutual TLS with the node's certificate.
        **tls.tls_env(s.tls_dir),
        # On SIGTERM, `ray start --block` drains its node for up to this long, then stops.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": str(s.shutdown_drain_seconds),
        # While the head restarts, raylets and the drivers they start wait this long instead of exiting.
        "RAY_gcs_rpc_server_reconnect_timeout_s": str(s.head_outage_seconds),
    }
    if s.gcs_store:
        env["RAY_REDIS_ADDRESS"] = s.gcs_store.address
        env["RAY_external_storage_namespace"] = s.gcs_store.namespace
    if s.is_head:
        # The head's two metrics servers have no flag, only these variables.
        env["AUTOSCALER_METRIC_PORT"] = str(s.ports.autoscaler_metrics)
        env["DASHBOARD_METRIC_PORT"] = str(s.ports.dashboard_metrics)
    return env


# A drained raylet exits 0 and `ray start --block` keeps running, so the script
# watches the raylet (a child of `ray start`) and exits non-zero when it is gone:
# Docker restarts a container whose process exits, never an unhealthy one.
# TERM is forwarded to `ray start`, which drains and stops only its own processes.
_SUPERVISE = """\
ray_pid=$!
trap 'kill -TERM "$ray_pid"; wait "$ray_pid"; exit 0' TERM INT
raylet_running() {
  for pid in $(cat "/proc/$ray_pid/task/$ray_pid/children" 2>/dev/null); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = raylet ] && return 0
  done
  return 1
}
until raylet_running; do kill -0 "$ray_pid" 2>/dev/null || exit 1; sleep 1; done
while raylet_running; do sleep 2; done
echo "ray-node: the raylet exited; stopping so the container can be restarted" >&2
kill -TERM "$ray_pid" 2>/dev/null; wait "$ray_pid"
exit 1
"""


def entrypoint_script(s: RayNodeSettings) -> str:
    """The container's command, for `sh -c`.

    `ray start` takes the Redis password only as a flag (a hidden click option, no
    environment variable) and hands it on to the GCS's command line: it comes from
    the container's secret environment at run time, never from the container's
    declared command.
    """
    password = f' --redis-password="${REDIS_PASSWORD_ENV}"' if s.gcs_store else ""
    return f"{shlex.join(ray_start_args(s))}{password} --block &\n{_SUPERVISE}"


def health_urls(s: RayNodeSettings) -> list[str]:
    urls = [f"http://127.0.0.1:{s.ports.dashboard_agent_http}/api/local_raylet_healthz"]
    if s.is_head:
        urls.append(f"http://127.0.0.1:{s.ports.dashboard}/api/gcs_healthz")
    return urls


def health_check_command(s: RayNodeSettings) -> list[str]:
    """Docker healthcheck test, CMD form (the image has python, maybe not curl).

    Both endpoints answer without the token. Each probe gets 2 s, so both fit
    in Docker's health check timeout.
    """
    probe = (
        "import sys, urllib.request\n"
        f"for url in {health_urls(s)!r}:\n"
        "    try:\n"
        "        urllib.request.urlopen(url, timeout=2)\n"
        "    except Exception as error:\n"
        "        sys.exit(f'{url}: {error}')\n"
    )
    return ["CMD", "python", "-c", probe]
