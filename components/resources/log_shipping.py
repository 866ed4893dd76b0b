"""Every node's logs shipped to the monitoring host (components/render/log_shipping.py says how)."""
from __future__ import annotations

import pulumi
from pulumi_command import remote

from components.model.config import ClusterConfig
from components.render import log_shipping
from components.render.remote_files import write_files_script


def _rsyslog_command(name: str, files: dict[str, str], then: str, connection, vm, firewall_ready, parent) -> remote.Command:
    return remote.Command(
        name,
        connection=connection,
        create="sudo sh -s",
        # A changed config changes stdin, which re-runs the command: rsyslog restarts with it.
        stdin=write_files_script(files, then=then),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[firewall_ready], deleted_with=vm),
    )


def ship_logs_command(
    node_name: str, cfg: ClusterConfig, connection: remote.ConnectionArgs, vm: pulumi.Resource,
    firewall_ready: pulumi.Resource, parent: pulumi.Resource,
) -> remote.Command:
    """The node's rsyslog forwards Ray's logs and the Ray container's output to the monitoring host."""
    return _rsyslog_command(
        f"{node_name}-log-shipping", log_shipping.node_files(cfg), "systemctl restart rsyslog",
        connection, vm, firewall_ready, parent,
    )


def log_archive_command(
    cfg: ClusterConfig, connection: remote.ConnectionArgs, vm: pulumi.Resource,
    firewall_ready: pulumi.Resource, parent: pulumi.Resource,
) -> remote.Command:
    """The monitoring host's rsyslog files every node's lines per day and node, kept retentionDays."""
    return _rsyslog_command(
        f"{cfg.monitoring_host.node.name}-log-archive", log_shipping.receiver_files(cfg),
        f"systemd-tmpfiles --create {log_shipping.TMPFILES_CONFIG} && systemctl restart rsyslog",
        connection, vm, firewall_ready, parent,
    )
