"""Every TCP port the cluster uses, defined once.

Ray flags, UFW rules, Prometheus targets and the local rehearsal all read these,
so a port can never be open in the firewall but different in `ray start` (or the
reverse). Every port Ray would otherwise pick at random is pinned.

`RAY` and `MONITORING` are what ships to the VMs. `RayPorts.shifted()` gives the
same set moved by an offset, for several nodes sharing one machine (tests and
the rehearsal).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SSH = 22
# The Redis that keeps the GCS's state (GCS fault tolerance), on redis.host; open to the head only.
# Not 6379: that is the GCS's own port on the head, and Redis may run there.
REDIS = 6390


@dataclass(frozen=True)
class RayPorts:
    # Fixed by Ray's defaults; pinned anyway so flags and firewall agree.
    gcs: int = 6379
    dashboard: int = 8265  # dashboard + Jobs API, plain HTTP on 127.0.0.1 only (the TLS proxy serves it)
    dashboard_https: int = 8443  # head only: the TLS proxy in front of the dashboard and Jobs API
    client: int = 10001
    dashboard_agent_http: int = 52365
    autoscaler_metrics: int = 44217  # head only
    dashboard_metrics: int = 44227  # head only
    # Random unless pinned.
    node_manager: int = 6380
    object_manager: int = 6381
    runtime_env_agent: int = 6382
    dashboard_agent_grpc: int = 6383
    metrics_export: int = 9091  # the seeds' metrics port (8080 clashed with an exporter)
    min_worker: int = 10002
    max_worker: int = 19999

    def shifted(self, offset: int, worker_range: tuple[int, int] | None = None) -> "RayPorts":
        """Every single port moved by `offset`; the worker range replaced if given."""
        moved = {
            f.name: getattr(self, f.name) + offset
            for f in dataclasses.fields(self)
            if f.name not in ("min_worker", "max_worker")
        }
        low, high = worker_range or (self.min_worker, self.max_worker)
        return RayPorts(**moved, min_worker=low, max_worker=high)


@dataclass(frozen=True)
class MonitoringPorts:
    prometheus: int = 9090
    grafana: int = 3000
    node_exporter: int = 9100
    cadvisor: int = 8081  # the seeds' cAdvisor port
    image_mirror: int = 5000  # the LAN registry the nodes pull from (render/image_mirror.py)
    log_archive: int = 514  # syslog over TCP: every node's logs to the monitoring host (render/log_shipping.py)
    alertmanager: int = 9093


RAY = RayPorts()
MONITORING = MonitoringPorts()
