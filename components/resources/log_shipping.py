"""Every node's logs shipped to the monitoring host (components/render/log_shipping.py says how)."""
from __future__ import annotations

import pulumi
from pulumi_command import remote

from components.model.config import ClusterConfig
from components.render import log_shipping
from components.render.remote_files import StagedFiles
from components.resources.staged_files import install_staged_files

RESTART_RSYSLOG = "systemctl restart rsyslog"


def _rsyslog_command(name: str, files: dict[str, str], then: str, connection, vm, firewall_ready, parent) -> remote.Command:
    # A changed config re-runs the install: rsyslog restarts with it, and again once the files are removed.
    staged = StagedFiles(name, files, then=then, after_removal=RESTART_RSYSLOG)
    return install_staged_files(staged, connection, vm, firewall_ready, parent)


def ship_logs_command(
    node_name: str, cfg: ClusterConfig, connection: remote.ConnectionArgs, vm: pulumi.Resource,
    firewall_ready: pulumi.Resource, parent: pulumi.Resource,
) -> remote.Command:
    """The node's rsyslog forwards Ray's logs and the Ray container's output to the monitoring host."""
    return _rsyslog_command(
        f"{node_name}-log-shipping", log_shipping.node_files(cfg), RESTART_RSYSLOG,
        connection, vm, firewall_ready, parent,
    )


def log_archive_command(
    cfg: ClusterConfig, connection: remote.ConnectionArgs, vm: pulumi.Resource,
    firewall_ready: pulumi.Resource, parent: pulumi.Resource,
) -> remote.Command:
    """The monitoring host's rsyslog files every node's lines per day and node, kept retentionDays."""
    return _rsyslog_command(
        f"{cfg.monitoring_host.node.name}-log-archive", log_shipping.receiver_files(cfg),
        f"systemd-tmpfiles --create {log_shipping.TMPFILES_CONFIG} && {RESTART_RSYSLOG}",
        connection, vm, firewall_ready, parent,
    )
