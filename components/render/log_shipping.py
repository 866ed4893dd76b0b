"""Logs that outlive the VM: rsyslog configs, as text (no Pulumi).

Every node's rsyslog (Ubuntu's, part of the template) tails Ray's log files and
takes the Ray container's output as they are written, and forwards each line over TCP to
the rsyslog of the always-on monitoring host, which files them per day and
node under `ARCHIVE_DIR`: `<date>/<node>/ray.log` (each line prefixed with
the Ray log file it came from, e.g. `worker-….out`) and `<date>/<node>/container.log`
(the Ray container's output, which Docker writes to the journal).
A night's lines are on the monitoring host seconds after they are written, so
a heavy VM removed at 06:00 takes nothing with it; the next morning they are
read there (`ssh`, `less`, `grep`). The archive is kept `monitoring.retentionDays`
(systemd-tmpfiles).

The forwarding queue (in memory, on disk when full or when rsyslog stops) is
retried without end: a monitoring host that restarts loses no line. Lines
still queued when a VM is removed are lost: only while the monitoring host is
unreachable during the drain.
"""
from __future__ import annotations

from components.model.config import ClusterConfig
from components.model.ports import MONITORING
from components.render.ray_start import CONTAINER_DATA_DIR, CONTAINER_NAME, HOST_DATA_DIR, TEMP_DIR

ARCHIVE_DIR = "/var/log/ray-cluster"
NODE_CONFIG = "/etc/rsyslog.d/60-ray-cluster-ship.conf"
RECEIVER_CONFIG = "/etc/rsyslog.d/60-ray-cluster-archive.conf"
TMPFILES_CONFIG = "/etc/tmpfiles.d/ray-cluster-logs.conf"
# Ray's session directories under the temp dir, as the host sees the container's bind mount.
RAY_LOGS = f"{HOST_DATA_DIR}{TEMP_DIR.removeprefix(CONTAINER_DATA_DIR)}/session_*/logs/*"
RAY_TAG = "ray"
CONTAINER_TAG = "container"


def node_config(
    cfg: ClusterConfig,
    ray_logs: str = RAY_LOGS,
    receiver: str = "",
    port: int = MONITORING.log_archive,
) -> str:
    """The rsyslog fragment every node runs: tail Ray's files, take the Ray container's journal
    lines (Docker's journald driver, tagged with the container's name, reach rsyslog as on every
    Ubuntu host), and forward both to the monitoring host."""
    target = receiver or str(cfg.monitoring_host.node.ip)
    forward = (
        f'type="omfwd" target="{target}" port="{port}" protocol="tcp" queue.type="LinkedList" '
        'queue.saveOnShutdown="on" queue.maxDiskSpace="1g" action.resumeRetryCount="-1" action.resumeInterval="5"'
    )
    return f"""# ray-cluster: ship Ray's logs and the Ray container's output to {target} (components/render/log_shipping.py).
module(load="imfile")
# A Ray file's line carries its file name: a worker's .out/.err, the raylet, the GCS.
template(name="RayClusterShipFile" type="string"
         string="<%PRI%>%TIMESTAMP:::date-rfc3339% %HOSTNAME% {RAY_TAG}: %$!metadata!filename:R,ERE,1,FIELD:([^/]+)$--end%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n")
template(name="RayClusterShipContainer" type="string"
         string="<%PRI%>%TIMESTAMP:::date-rfc3339% %HOSTNAME% {CONTAINER_TAG}: {CONTAINER_NAME}%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n")
ruleset(name="RayClusterShipFile") {{
    action({forward} queue.filename="ray-cluster-ship-files" template="RayClusterShipFile")
}}
input(type="imfile" File="{ray_logs}" Tag="{RAY_TAG}" addMetadata="on" ruleset="RayClusterShipFile" freshStartTail="off")
if $programname == "{CONTAINER_NAME}" then {{
    action({forward} queue.filename="ray-cluster-ship-container" template="RayClusterShipContainer")
}}
"""


def receiver_config(cfg: ClusterConfig, archive_dir: str = ARCHIVE_DIR, port: int = MONITORING.log_archive) -> str:
    """The monitoring host's rsyslog fragment: receive from the nodes, file per day and node."""
    return f"""# ray-cluster: the nodes' Ray logs and container output, per day and node (components/render/log_shipping.py).
module(load="imtcp")
template(name="RayClusterArchiveFile" type="string"
         string="{archive_dir}/%$year%-%$month%-%$day%/%hostname:::secpath-replace%/%programname:::secpath-replace%.log")
template(name="RayClusterArchiveLine" type="string" string="%TIMESTAMP:::date-rfc3339% %msg:2:$%\\n")
ruleset(name="RayClusterArchive") {{
    action(type="omfile" dynaFile="RayClusterArchiveFile" template="RayClusterArchiveLine"
           dirCreateMode="0755" fileCreateMode="0644" createDirs="on")
    stop
}}
input(type="imtcp" port="{port}" ruleset="RayClusterArchive")
"""


def tmpfiles_config(cfg: ClusterConfig) -> str:
    """systemd-tmpfiles ages the archive out after the metrics' retention."""
    # Owned by the user Ubuntu's rsyslog drops its privileges to, which writes the files.
    return f"d {ARCHIVE_DIR} 0755 syslog adm {cfg.monitoring.retention_days}d\n"


def node_files(cfg: ClusterConfig) -> dict[str, str]:
    return {NODE_CONFIG: node_config(cfg)}


def receiver_files(cfg: ClusterConfig) -> dict[str, str]:
    return {RECEIVER_CONFIG: receiver_config(cfg), TMPFILES_CONFIG: tmpfiles_config(cfg)}
