"""Every container of the cluster, as a plain spec (no Pulumi).

`node_containers` says which containers a node runs and how: image, command,
environment, mounts, health check, sizes. The components turn each spec into a
pulumi-docker Container (`docker_container.docker_container`), the offline
render into a `docker run` line (`render.docker_run`), so both always agree.
All containers use host networking (published ports would bypass UFW), restart
unless stopped, and are health-checked.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Optional

from components.render import alerting_config as ac
from components.render import monitoring_config as mc
from components.render import dashboard_proxy, data_disk, image_mirror, ray_start, redis_store, tls
from components.render.image_mirror import image_reference, on_mirror
from components.model.config import ClusterConfig, PlacedNode
from components.model.ports import MONITORING, REDIS


@dataclass(frozen=True)
class HealthCheck:
    test: tuple[str, ...]  # Docker's exec form: ("CMD", argv...)
    interval: str
    timeout: str
    retries: int
    start_period: str


@dataclass(frozen=True)
class Bind:
    """A host path in the container; `propagation` or `must_exist` makes it a --mount (Pulumi `mounts`)."""

    source: str
    target: str
    read_only: bool = True
    propagation: Optional[str] = None
    # A --mount refuses a missing source, where -v would create it (on the VM's own disk).
    must_exist: bool = False

    @property
    def is_mount(self) -> bool:
        return bool(self.propagation) or self.must_exist


def data_bind(data_dir: data_disk.DataDir, target: str) -> Bind:
    """A directory on the data disk, written by the container."""
    return Bind(data_dir.host, target, read_only=False, must_exist=True)


@dataclass(frozen=True)
class ContainerSpec:
    """One container: host network, restart unless-stopped, nothing published."""

    name: str
    image: str  # the pinned reference Pulumi pulls
    command: tuple[str, ...]
    health: HealthCheck
    env: dict[str, str] = field(default_factory=dict)
    secret_env: tuple[str, ...] = ()  # set from a Pulumi secret at deploy time
    binds: tuple[Bind, ...] = ()
    volumes: dict[str, str] = field(default_factory=dict)  # named volume -> container path
    devices: tuple[str, ...] = ()
    pid_host: bool = False
    user: Optional[str] = None  # uid:gid, when not the image's
    privileged: bool = False
    shm_size_mb: Optional[int] = None
    stop_timeout: Optional[int] = None
    labels: dict[str, str] = field(default_factory=dict)
    # Docker's log driver and its options; None: the engine's default (json-file).
    log_driver: Optional[str] = None
    log_opts: dict[str, str] = field(default_factory=dict)


RESTART = "unless-stopped"


def go_duration(text: str) -> str:
    """A duration ("90s", "1m30s", "1h") as Go's time.Duration.String() writes it ("1m30s"):
    how terraform-provider-docker reads a health check back, so a second preview is empty."""
    parts = re.findall(r"(\d+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r}: write durations like 30s, 1m30s or 1h")
    seconds = sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def http_probe(url: str) -> HealthCheck:
    """A health check with the busybox wget the monitoring images ship."""
    return HealthCheck(("CMD", "wget", "-q", "-O", "/dev/null", url), "30s", "5s", 3, "30s")


def ray_container(cfg: ClusterConfig, placed: PlacedNode) -> ContainerSpec:
    settings = ray_start.node_settings(cfg, placed)
    env = ray_start.ray_env(settings)
    if placed.node.head:
        env |= mc.ray_dashboard_env(cfg)  # the dashboard embeds Grafana and queries Prometheus
    return ContainerSpec(
        name=ray_start.CONTAINER_NAME,
        image=on_mirror(cfg, image_reference(cfg)),
        command=("sh", "-c", ray_start.entrypoint_script(settings)),
        health=HealthCheck(tuple(ray_start.health_check_command(settings)), "15s", "5s", 4, "60s"),
        env=env,
        secret_env=("RAY_AUTH_TOKEN",) + ((ray_start.REDIS_PASSWORD_ENV,) if settings.gcs_store else ()),
        binds=(
            Bind(ray_start.HOST_DATA_DIR, ray_start.CONTAINER_DATA_DIR, read_only=False),
            Bind(tls.HOST_TLS_DIR, tls.CONTAINER_TLS_DIR),
        ),
        shm_size_mb=settings.shm_bytes // 2**20,
        stop_timeout=ray_start.stop_grace_seconds(cfg, placed),
        labels={"ray-cluster.tier": placed.tier_name},
        # To the journal, tagged with the container's name: the host's rsyslog forwards it to the
        # monitoring host (render/log_shipping.py), and `docker logs` still reads it.
        log_driver="journald",
        log_opts={"tag": ray_start.CONTAINER_NAME},
    )


def dashboard_proxy_container(cfg: ClusterConfig) -> ContainerSpec:
    """The head's TLS proxy: nginx with the rendered config and the head's certificate."""
    settings = dashboard_proxy.proxy_settings(cfg)
    conf = f"{dashboard_proxy.CONTAINER_CONF_DIR}/{dashboard_proxy.NGINX_CONF}"
    return ContainerSpec(
        name=dashboard_proxy.CONTAINER_NAME,
        image=cfg.image(cfg.ray.dashboard_proxy_image),  # head only: pulled by day, not through the LAN mirror
        command=tuple(dashboard_proxy.nginx_command(conf)),
        health=HealthCheck(tuple(dashboard_proxy.health_check_command(settings)), "30s", "5s", 3, "30s"),
        env={"NGINX_ENTRYPOINT_QUIET_LOGS": "1"},
        binds=(
            Bind(dashboard_proxy.HOST_CONF_DIR, dashboard_proxy.CONTAINER_CONF_DIR),
            Bind(tls.HOST_TLS_DIR, tls.CONTAINER_TLS_DIR),
        ),
    )


def node_exporter_container(cfg: ClusterConfig, placed: PlacedNode) -> ContainerSpec:
    port = MONITORING.node_exporter
    # Only the monitoring host's node-exporter serves the expected-nodes file.
    textfile = placed.node.name == cfg.monitoring_host.node.name
    return ContainerSpec(
        name="node-exporter",
        image=on_mirror(cfg, cfg.monitoring.images.node_exporter),
        command=(
            f"--path.rootfs={mc.NODE_EXPORTER_ROOTFS.container}",
            f"--web.listen-address=:{port}",
            *([f"--collector.textfile.directory={mc.NODE_EXPORTER_TEXTFILE.container}"] if textfile else []),
        ),
        health=http_probe(f"http://127.0.0.1:{port}/metrics"),
        binds=(
            Bind(*mc.NODE_EXPORTER_ROOTFS, propagation="rslave"),
            *([Bind(*mc.NODE_EXPORTER_TEXTFILE)] if textfile else []),
        ),
        pid_host=True,
    )


# cAdvisor's documented unprivileged run (google/cadvisor docs/running.md, "With Docker",
# v0.52.1): these read-only mounts give every container's cgroup CPU, memory, network and
# filesystem metrics. Not privileged: that is only for process metrics (off by default,
# cmd/cadvisor.go ignoreMetrics) and for RHEL/CentOS hosts. No /dev/kmsg: it feeds only
# OOM events, which cAdvisor then disables with a warning (manager/manager.go); our OOM
# alert reads Ray's own counter. No /dev/disk: only disk labels in machine info.
CADVISOR_MOUNTS = (("/", "/rootfs"), ("/var/run", "/var/run"), ("/sys", "/sys"), ("/var/lib/docker", "/var/lib/docker"))


def cadvisor_container(cfg: ClusterConfig) -> ContainerSpec:
    return ContainerSpec(
        name="cadvisor",
        image=on_mirror(cfg, cfg.monitoring.images.cadvisor),
        command=(f"--port={MONITORING.cadvisor}", "--docker_only=true", "--housekeeping_interval=30s"),
        health=http_probe(f"http://127.0.0.1:{MONITORING.cadvisor}/healthz"),
        binds=tuple(Bind(host, container) for host, container in CADVISOR_MOUNTS),
    )


def prometheus_container(cfg: ClusterConfig) -> ContainerSpec:
    return ContainerSpec(
        name="prometheus",
        image=cfg.image(cfg.monitoring.images.prometheus),
        command=(
            f"--config.file={mc.PROMETHEUS_CONFIG.container}/{mc.PROMETHEUS_YML}",
            f"--storage.tsdb.path={mc.PROMETHEUS_DATA}",
            f"--storage.tsdb.retention.time={cfg.monitoring.retention_days}d",
            f"--web.listen-address=:{MONITORING.prometheus}",
        ),
        health=http_probe(f"http://127.0.0.1:{MONITORING.prometheus}/-/healthy"),
        binds=(Bind(*mc.PROMETHEUS_CONFIG), data_bind(data_disk.PROMETHEUS, mc.PROMETHEUS_DATA)),
        user=data_disk.PROMETHEUS.user,
    )


def grafana_container(cfg: ClusterConfig) -> ContainerSpec:
    return ContainerSpec(
        name=mc.GRAFANA_CONTAINER,
        image=cfg.image(cfg.monitoring.images.grafana),
        command=(),
        health=http_probe(f"http://127.0.0.1:{MONITORING.grafana}/api/health"),
        env=mc.grafana_env(cfg),
        secret_env=("GF_SECURITY_ADMIN_PASSWORD",),
        binds=(Bind(*mc.GRAFANA_PROVISIONING), Bind(*mc.GRAFANA_DASHBOARDS), data_bind(data_disk.GRAFANA, mc.GRAFANA_DATA)),
        user=data_disk.GRAFANA.user,
    )


def image_mirror_container(cfg: ClusterConfig) -> ContainerSpec:
    """The LAN registry every node pulls from; its own image comes from Docker Hub, once, by day."""
    return ContainerSpec(
        name=image_mirror.CONTAINER_NAME,
        image=cfg.image(cfg.monitoring.images.registry),
        # `registry serve FILE`, whether the image's entrypoint is `registry` or its entrypoint script.
        command=("serve", image_mirror.CONFIG_FILE),
        health=http_probe(f"http://127.0.0.1:{MONITORING.image_mirror}/v2/"),
        binds=(Bind(image_mirror.CONFIG_FILE, image_mirror.CONFIG_FILE),),
        volumes={image_mirror.DATA_VOLUME: image_mirror.DATA_DIR},
        # Labels are ForceNew: a changed config replaces the container, which then reads the new file.
        labels={"ray-cluster.config-sha256": hashlib.sha256(image_mirror.config_yml(cfg).encode()).hexdigest()},
    )


def redis_container(cfg: ClusterConfig) -> ContainerSpec:
    """The GCS's Redis on redis.host: on the node's address (for the head) and loopback (for its health check)."""
    conf = redis_store.redis_conf([str(cfg.redis_host.node.ip), "127.0.0.1"], REDIS)
    return ContainerSpec(
        name=redis_store.CONTAINER_NAME,
        image=cfg.image(cfg.redis.image),
        command=("sh", "-c", redis_store.entrypoint_script(conf)),
        health=HealthCheck(tuple(redis_store.health_check_command(REDIS)), "10s", "5s", 3, "10s"),
        secret_env=(redis_store.PASSWORD_ENV,),
        binds=(data_bind(data_disk.REDIS, redis_store.DATA_DIR),),
        user=data_disk.REDIS.user,
    )


def alertmanager_container(cfg: ClusterConfig) -> ContainerSpec:
    return ContainerSpec(
        name="alertmanager",
        image=cfg.image(cfg.monitoring.images.alertmanager),
        command=(
            f"--config.file={ac.ALERTMANAGER_CONFIG.container}/{ac.ALERTMANAGER_YML}",
            f"--storage.path={ac.ALERTMANAGER_DATA}",
            f"--web.listen-address=:{MONITORING.alertmanager}",
            f"--web.external-url={ac.alertmanager_url(cfg)}",
            "--cluster.listen-address=",  # one Alertmanager: no gossip port to open
        ),
        health=http_probe(f"http://127.0.0.1:{MONITORING.alertmanager}/-/healthy"),
        binds=(Bind(*ac.ALERTMANAGER_CONFIG), data_bind(data_disk.ALERTMANAGER, ac.ALERTMANAGER_DATA)),
        user=data_disk.ALERTMANAGER.user,
    )


def node_containers(cfg: ClusterConfig, placed: PlacedNode) -> list[ContainerSpec]:
    """Every container `placed` runs, in the order Pulumi creates them."""
    containers = [ray_container(cfg, placed), node_exporter_container(cfg, placed), cadvisor_container(cfg)]
    if placed.node.head:
        containers.insert(1, dashboard_proxy_container(cfg))
    if placed.node.name == cfg.redis_host.node.name:
        containers.insert(0, redis_container(cfg))  # before the head, which needs it to start
    if placed.node.name == cfg.monitoring_host.node.name:
        containers = [image_mirror_container(cfg), *containers, prometheus_container(cfg), grafana_container(cfg), alertmanager_container(cfg)]
    return containers
