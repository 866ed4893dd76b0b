"""Monitoring: node-exporter and cAdvisor on every node; Prometheus, Grafana and
Alertmanager on the monitoring host. All containers use host networking (published ports
would bypass UFW) and are health-checked; the firewall decides who reaches them.

Config files are copied over SFTP and installed by a command
(components/resources/staged_files.py), from the pure renderers in
`monitoring_config`. The schedule-dependent ones (scrape targets, expected
nodes) have their own command, so a tier change rewrites those files and
reloads Prometheus without touching any container. Alertmanager's file holds
the receivers' secrets: it travels in a command's secret stdin, never staged.

Prometheus', Grafana's and Alertmanager's data are directories on the host's
data disk (components/render/data_disk.py), which outlives a replaced container
and a replaced VM (README "Monitoring data").
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Mapping, Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random
from pulumi_command import remote

from components.render import alerting_config as ac
from components.render import containers
from components.render import monitoring_config as mc
from components.model.stack import PROJECT_DIR
from components.resources.docker_container import docker_container, on_docker
from components.resources.node import OnNode
from components.render.remote_files import StagedFiles, write_files_script
from components.resources.staged_files import install_staged_files

RELOAD_PROMETHEUS = "docker kill --signal HUP prometheus >/dev/null 2>&1 || true"
ALERTMANAGER_FILE = f"{ac.ALERTMANAGER_CONFIG.host}/{ac.ALERTMANAGER_YML}"
# Readable by the image's user only (group nobody), then Alertmanager re-reads it.
SECURE_AND_RELOAD_ALERTMANAGER = (
    f"chgrp {ac.IMAGE_GID} {ALERTMANAGER_FILE} && (docker kill --signal HUP alertmanager >/dev/null 2>&1 || true)"
)


class _Pinned:
    """Pulls images by their pinned reference on one node's Docker engine."""

    def __init__(self, node_name: str, on_node: pulumi.ResourceOptions):
        self.node_name, self.on_node = node_name, on_node

    def image(self, key: str, reference: str) -> docker.RemoteImage:
        return docker.RemoteImage(f"{self.node_name}-{key}-image", name=reference, keep_locally=True, opts=self.on_node)

    def container(self, spec: containers.ContainerSpec, opts: pulumi.ResourceOptions, **kwargs) -> docker.Container:
        """`spec`'s container, from its image pulled by the pinned reference."""
        image = self.image(spec.name, spec.image)
        return docker_container(f"{self.node_name}-{spec.name}", spec, image.image_id, opts, **kwargs)


@dataclass(frozen=True)
class NodeExportersArgs:
    on: OnNode
    containers: tuple[containers.ContainerSpec, ...]  # node-exporter and cAdvisor, as rendered for this node


class NodeExporters(pulumi.ComponentResource):
    """node-exporter and cAdvisor on one node."""

    def __init__(self, args: NodeExportersArgs, opts: Optional[pulumi.ResourceOptions] = None):
        on = args.on
        super().__init__("ray-cluster:index:NodeExporters", on.name, None, opts)
        on_node = on_docker(self, on.docker_provider, on.vm)
        # From the LAN image mirror, once this node's Docker trusts it and it is filled.
        images = _Pinned(on.name, pulumi.ResourceOptions.merge(on_node, pulumi.ResourceOptions(depends_on=list(on.images_ready))))
        on_node = pulumi.ResourceOptions.merge(on_node, pulumi.ResourceOptions(depends_on=[on.firewall_ready]))
        self.containers = [images.container(spec, on_node) for spec in args.containers]
        self.register_outputs({})


@dataclass(frozen=True)
class MonitoringArgs:
    on: OnNode  # the monitoring host
    ssh_user: str  # owns the dashboards directory, which SFTP writes as that user
    config_files: dict[str, str]  # host path -> text: prometheus.yml, rules, Grafana provisioning
    schedule_files: dict[str, str]  # host path -> text: what changes when a tier comes or goes
    prometheus: containers.ContainerSpec
    grafana: containers.ContainerSpec
    grafana_admin_password: Optional[pulumi.Output]  # None: generated
    prometheus_url: str
    grafana_url: str
    alertmanager: containers.ContainerSpec
    alertmanager_yml: Callable[[Mapping[str, str]], str]  # receiver secrets -> alertmanager.yml
    alerting_secrets: Optional[pulumi.Output]  # receiver name -> URL or password
    alertmanager_url: str


class Monitoring(pulumi.ComponentResource):
    """Prometheus and Grafana on the monitoring host, and the files they read."""

    def __init__(self, args: MonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None):
        on, host = args.on, args.on.name
        super().__init__("ray-cluster:index:Monitoring", host, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        on_host = on_docker(self, on.docker_provider, on.vm)
        images = _Pinned(host, on_host)

        def install(name: str, files: dict[str, str]) -> remote.Command:
            staged = StagedFiles(f"{host}-{name}", files, then=RELOAD_PROMETHEUS)
            return install_staged_files(staged, on.connection, on.vm, on.firewall_ready, parent=self)

        config_files = install("monitoring-config", args.config_files)
        # Changes when a tier comes or goes: files only, Prometheus re-reads them.
        self.targets = install("scrape-targets", args.schedule_files)

        def alertmanager_script(receiver_secrets: Mapping[str, str]) -> str:
            files = {ALERTMANAGER_FILE: args.alertmanager_yml(receiver_secrets)}
            return write_files_script(files, mode="0640", then=SECURE_AND_RELOAD_ALERTMANAGER)

        # Holds the receivers' secrets: a secret stdin, never a staged file (components/render/remote_files.py).
        receiver_secrets: pulumi.Input[Mapping[str, str]] = args.alerting_secrets if args.alerting_secrets is not None else {}
        alertmanager_config = remote.Command(
            f"{host}-alertmanager-config",
            connection=on.connection,
            create="sudo sh -s",
            stdin=pulumi.Output.secret(receiver_secrets).apply(alertmanager_script),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[on.firewall_ready], deleted_with=on.vm),
        )
        self.dashboards = self._dashboards(on, args.ssh_user)

        after_config = pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(depends_on=[config_files]))
        self.prometheus = images.container(args.prometheus, after_config)

        self.grafana_admin_password = args.grafana_admin_password or random.RandomPassword(
            f"{host}-grafana-admin-password", length=32, special=False,
            # Prefixed like every child; the alias keeps an existing stack's password.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(aliases=[pulumi.Alias(name="grafana-admin-password")])),
        ).result
        self.grafana = images.container(
            args.grafana,
            pulumi.ResourceOptions.merge(after_config, pulumi.ResourceOptions(depends_on=[self.dashboards])),
            secrets={"GF_SECURITY_ADMIN_PASSWORD": self.grafana_admin_password},
        )
        # The container's variable sets the password only in a new database: this sets it in
        # the one on the data disk, on every rotation (and on every new container), so the old
        # password stops working and the stack output is the password that works.
        remote.Command(
            f"{host}-grafana-password-reset",
            connection=on.connection,
            create=mc.grafana_password_rotation(),
            stdin=self.grafana_admin_password,
            triggers=pulumi.Output.secret([self.grafana_admin_password, self.grafana.id]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.grafana], deleted_with=on.vm),
        )
        self.alertmanager = images.container(
            args.alertmanager,
            pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(depends_on=[alertmanager_config])),
        )
        self.register_outputs(
            {"prometheusUrl": args.prometheus_url, "grafanaUrl": args.grafana_url, "alertmanagerUrl": args.alertmanager_url}
        )

    def _dashboards(self, on: OnNode, ssh_user: str) -> remote.CopyToRemote:
        """The Grafana dashboards (about 2 MB) copied as files over SFTP, not carried in a command's stdin.

        SFTP writes as the SSH user: the directory is made theirs first. A source
        directory without a trailing slash lands in remote_path/<its name>
        (pulumi-command provider/pkg/provider/remote/copyController.go, sftpCopy).
        Grafana's file provider picks changes up by itself.
        """
        target = PurePosixPath(mc.GRAFANA_DASHBOARDS.host)
        on_vm = pulumi.ResourceOptions(parent=self, depends_on=[on.firewall_ready], deleted_with=on.vm)
        owned = remote.Command(
            f"{on.name}-grafana-dashboards-dir",
            connection=on.connection,
            create=f"sudo install -d -m 0755 -o {shlex.quote(ssh_user)} {shlex.quote(str(target))}",
            opts=on_vm,
        )
        return remote.CopyToRemote(
            f"{on.name}-grafana-dashboards",
            connection=on.connection,
            # Relative to the project directory, where Pulumi runs the program: the same on every machine.
            source=pulumi.FileArchive(str(mc.DASHBOARDS_SOURCE_DIR.relative_to(PROJECT_DIR))),
            remote_path=str(target.parent),
            opts=pulumi.ResourceOptions.merge(on_vm, pulumi.ResourceOptions(depends_on=[owned])),
        )
