"""Monitoring: node-exporter and cAdvisor on every node; Prometheus and Grafana
on the monitoring host. All containers use host networking (published ports
would bypass UFW) and are health-checked; the firewall decides who reaches them.

Config files are written over SSH from the pure renderers in
`monitoring_config`. The schedule-dependent ones (scrape targets, expected
nodes) have their own command, so a tier change rewrites those files and
reloads Prometheus without touching any container.
"""
from __future__ import annotations

import datetime as dt
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random
from pulumi_command import remote

from components import monitoring_config as mc
from components.config import ClusterConfig, PlacedNode
from components.ports import MONITORING
from components.remote_files import write_files_script

RELOAD_PROMETHEUS = "docker kill --signal HUP prometheus >/dev/null 2>&1 || true"


def http_probe(url: str) -> docker.ContainerHealthcheckArgs:
    """A health check with the busybox wget these images ship."""
    return docker.ContainerHealthcheckArgs(
        tests=["CMD", "wget", "-q", "-O", "/dev/null", url], interval="30s", timeout="5s", retries=3, start_period="30s"
    )


def _bind(host: str, container: str, read_only: bool = True) -> docker.ContainerVolumeArgs:
    return docker.ContainerVolumeArgs(host_path=host, container_path=container, read_only=read_only)


def _under(mount: mc.Mount, files: dict[str, str]) -> dict[str, str]:
    return {f"{mount.host}/{path}": text for path, text in files.items()}


class _Pinned:
    """Pulls images by their pinned reference on one node's Docker engine."""

    def __init__(self, parent: pulumi.Resource, node_name: str, provider: docker.Provider):
        self.parent, self.node_name, self.provider = parent, node_name, provider

    def image(self, key: str, reference: str) -> docker.RemoteImage:
        return docker.RemoteImage(
            f"{self.node_name}-{key}-image",
            name=reference,
            keep_locally=True,
            opts=pulumi.ResourceOptions(parent=self.parent, provider=self.provider),
        )


class NodeExporters(pulumi.ComponentResource):
    """node-exporter and cAdvisor on one node."""

    def __init__(
        self,
        cfg: ClusterConfig,
        placed: PlacedNode,
        docker_provider: docker.Provider,
        firewall_ready: pulumi.Resource,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        name = placed.node.name
        super().__init__("ray-cluster:index:NodeExporters", name, None, opts)
        images = _Pinned(self, name, docker_provider)
        on_node = pulumi.ResourceOptions(parent=self, provider=docker_provider, depends_on=[firewall_ready])
        port = MONITORING.node_exporter
        # Only the monitoring host's node-exporter serves the expected-nodes file.
        textfile = placed.node.name == cfg.monitoring_host.node.name

        node_exporter_image = images.image("node-exporter", cfg.monitoring.images.node_exporter)
        self.node_exporter = docker.Container(
            f"{name}-node-exporter",
            name="node-exporter",
            image=node_exporter_image.image_id,
            network_mode="host",
            pid_mode="host",
            command=[
                f"--path.rootfs={mc.NODE_EXPORTER_ROOTFS.container}",
                f"--web.listen-address=:{port}",
                *([f"--collector.textfile.directory={mc.NODE_EXPORTER_TEXTFILE.container}"] if textfile else []),
            ],
            mounts=[
                docker.ContainerMountArgs(
                    type="bind",
                    source=mc.NODE_EXPORTER_ROOTFS.host,
                    target=mc.NODE_EXPORTER_ROOTFS.container,
                    read_only=True,
                    bind_options=docker.ContainerMountBindOptionsArgs(propagation="rslave"),
                )
            ],
            volumes=[_bind(*mc.NODE_EXPORTER_TEXTFILE)] if textfile else None,
            healthcheck=http_probe(f"http://127.0.0.1:{port}/metrics"),
            restart="unless-stopped",
            opts=on_node,
        )

        cadvisor_image = images.image("cadvisor", cfg.monitoring.images.cadvisor)
        self.cadvisor = docker.Container(
            f"{name}-cadvisor",
            name="cadvisor",
            image=cadvisor_image.image_id,
            network_mode="host",
            privileged=True,  # reads every container's cgroups and /dev/kmsg
            command=[f"--port={MONITORING.cadvisor}", "--docker_only=true", "--housekeeping_interval=30s"],
            volumes=[
                _bind("/", "/rootfs"),
                _bind("/var/run", "/var/run"),
                _bind("/sys", "/sys"),
                _bind("/var/lib/docker", "/var/lib/docker"),
                _bind("/dev/disk", "/dev/disk"),
            ],
            devices=[docker.ContainerDeviceArgs(host_path="/dev/kmsg", container_path="/dev/kmsg")],
            healthcheck=http_probe(f"http://127.0.0.1:{MONITORING.cadvisor}/healthz"),
            restart="unless-stopped",
            opts=on_node,
        )
        self.register_outputs({})


class MonitoringStack(pulumi.ComponentResource):
    """Prometheus and Grafana on the monitoring host, and the files they read."""

    def __init__(
        self,
        cfg: ClusterConfig,
        at: dt.datetime,
        docker_provider: docker.Provider,
        connection: remote.ConnectionArgs,
        firewall_ready: pulumi.Resource,
        grafana_admin_password: Optional[pulumi.Output],
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        host = cfg.monitoring_host.node.name
        super().__init__("ray-cluster:index:Monitoring", host, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        on_host = pulumi.ResourceOptions(parent=self, provider=docker_provider)
        images = _Pinned(self, host, docker_provider)

        def write(name: str, files: dict[str, str]) -> remote.Command:
            return remote.Command(
                f"{host}-{name}",
                connection=connection,
                create="sudo sh -s",
                stdin=write_files_script(files, then=RELOAD_PROMETHEUS),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[firewall_ready]),
            )

        config_files = write(
            "monitoring-config",
            {
                **_under(mc.PROMETHEUS_CONFIG, {mc.PROMETHEUS_YML: mc.prometheus_yml(), **mc.rule_files()}),
                **_under(mc.GRAFANA_PROVISIONING, mc.grafana_provisioning(cfg)),
                **_under(mc.GRAFANA_DASHBOARDS, mc.dashboards()),
            },
        )
        # Changes when a tier comes or goes: files only, Prometheus re-reads them.
        self.targets = write(
            "scrape-targets",
            {
                **_under(mc.PROMETHEUS_CONFIG, mc.scrape_targets(cfg, at)),
                f"{mc.NODE_EXPORTER_TEXTFILE.host}/{mc.EXPECTED_NODES_FILE}": mc.expected_nodes_metrics(cfg, at),
            },
        )

        prometheus_data = docker.Volume(f"{host}-prometheus-data", name="prometheus-data", opts=on_host)
        prometheus_image = images.image("prometheus", cfg.monitoring.images.prometheus)
        self.prometheus = docker.Container(
            f"{host}-prometheus",
            name="prometheus",
            image=prometheus_image.image_id,
            network_mode="host",
            command=[
                f"--config.file={mc.PROMETHEUS_CONFIG.container}/{mc.PROMETHEUS_YML}",
                f"--storage.tsdb.path={mc.PROMETHEUS_DATA}",
                f"--storage.tsdb.retention.time={cfg.monitoring.retention_days}d",
                f"--web.listen-address=:{MONITORING.prometheus}",
            ],
            volumes=[
                _bind(*mc.PROMETHEUS_CONFIG),
                docker.ContainerVolumeArgs(volume_name=prometheus_data.name, container_path=mc.PROMETHEUS_DATA),
            ],
            healthcheck=http_probe(f"http://127.0.0.1:{MONITORING.prometheus}/-/healthy"),
            restart="unless-stopped",
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(depends_on=[config_files])),
        )

        self.grafana_admin_password = grafana_admin_password or random.RandomPassword(
            "grafana-admin-password", length=32, special=False, opts=child
        ).result
        grafana_data = docker.Volume(f"{host}-grafana-data", name="grafana-data", opts=on_host)
        grafana_image = images.image("grafana", cfg.monitoring.images.grafana)
        plain_env = mc.grafana_env(cfg)
        self.grafana = docker.Container(
            f"{host}-grafana",
            name="grafana",
            image=grafana_image.image_id,
            network_mode="host",
            envs=pulumi.Output.secret(self.grafana_admin_password).apply(
                lambda password: [f"{k}={v}" for k, v in sorted(plain_env.items())]
                + [f"GF_SECURITY_ADMIN_PASSWORD={password}"]
            ),
            volumes=[
                _bind(*mc.GRAFANA_PROVISIONING),
                _bind(*mc.GRAFANA_DASHBOARDS),
                docker.ContainerVolumeArgs(volume_name=grafana_data.name, container_path=mc.GRAFANA_DATA),
            ],
            healthcheck=http_probe(f"http://127.0.0.1:{MONITORING.grafana}/api/health"),
            restart="unless-stopped",
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(depends_on=[config_files])),
        )
        self.register_outputs(
            {"prometheusUrl": mc.prometheus_url(cfg), "grafanaUrl": mc.grafana_url(cfg)}
        )
