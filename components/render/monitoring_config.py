"""The monitoring stack's files and settings, as text (no Pulumi).

Prometheus, Grafana, node-exporter and cAdvisor run in containers with host
networking on the monitoring host; node-exporter and cAdvisor also run on every
node. Everything they read is rendered here, and `monitoring/` holds what is
static (alert rules and their promtool tests, Grafana dashboards).

Which nodes exist changes twice a day, so Prometheus finds its targets in
file_sd files (`scrape_targets`): a tier change rewrites those files and
Prometheus re-reads them by itself, with no container replacement.
`prometheus_yml()` and the rules change only with the code.

"A node of an active tier is missing" needs to know what should run when.
`expected_nodes_metrics` writes it for node-exporter's textfile collector on the
monitoring host: every declared node, and each tier's live intervals (from its
schedule and override) over the next weeks as Unix times. The alert rules
compare those with `time()`, so the heavy tier missing by day is normal and
missing at night alerts, even if the scheduler never ran to bring it up.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Optional
from zoneinfo import ZoneInfo

import yaml

from components.model.config import ClusterConfig, PlacedNode, Tier
from components.model.ports import MONITORING, RAY, MonitoringPorts, RayPorts

REPO_MONITORING_DIR = Path(__file__).resolve().parents[2] / "monitoring"
RULES_SOURCE_DIR = REPO_MONITORING_DIR / "rules"
DASHBOARDS_SOURCE_DIR = REPO_MONITORING_DIR / "grafana" / "dashboards"


class Mount(NamedTuple):
    """A directory on the monitoring host and where its container sees it."""

    host: str
    container: str


# Not under Ray's own data dir (/var/lib/ray-cluster), which the Ray container mounts.
HOST_DIR = "/var/lib/ray-cluster-monitoring"
# Directories, never single files, are mounted: a file replaced by rename (as
# the program writes them) would stay stale behind a single-file bind mount.
# /etc/prometheus is the prom/prometheus image's config dir: it finds
# prometheus.yml there without flags; rules and targets are relative to it.
PROMETHEUS_CONFIG = Mount(f"{HOST_DIR}/prometheus", "/etc/prometheus")
# Data lives in named Docker volumes (created with the image's ownership), mounted here.
PROMETHEUS_DATA = "/prometheus"  # the image's --storage.tsdb.path
# node-exporter needs --collector.textfile.directory=<container path>.
NODE_EXPORTER_TEXTFILE = Mount(f"{HOST_DIR}/node-exporter-textfile", "/var/lib/node-exporter/textfile")
# node-exporter needs --path.rootfs=<container path> to report the host's filesystems
# under their host mountpoints (the disk alert watches DATA_MOUNTPOINT).
NODE_EXPORTER_ROOTFS = Mount("/", "/host")
GRAFANA_PROVISIONING = Mount(f"{HOST_DIR}/grafana/provisioning", "/etc/grafana/provisioning")
GRAFANA_DASHBOARDS = Mount(f"{HOST_DIR}/grafana/dashboards", "/etc/grafana/dashboards")
GRAFANA_DATA = "/var/lib/grafana"

PROMETHEUS_YML = "prometheus.yml"
RULES_DIR = "rules"
TARGETS_DIR = "targets"
EXPECTED_NODES_FILE = "ray-cluster-expected-nodes.prom"  # the collector reads *.prom only
# The VMs have one disk; Ray's temp and spill dirs (/var/lib/ray-cluster) live on it.
DATA_MOUNTPOINT = "/"

SCRAPE_INTERVAL = "15s"
# Ray's dashboard links Grafana panels to this datasource (RAY_PROMETHEUS_NAME);
# "Prometheus" is also Ray's default, so a head without the variable agrees.
DATASOURCE_NAME = "Prometheus"
DATASOURCE_UID = "ray-cluster-prometheus"
OVERVIEW_DASHBOARD = "ray-cluster-overview.json"
# How far ahead of any instant the expected-nodes file always reaches: long
# enough that a scheduler down for days still gets nightly alerts.
SCHEDULE_COVERAGE = dt.timedelta(days=14)


class Endpoint(NamedTuple):
    """Where one node's metrics listen: its IP and the shipped ports, unless a test remaps them."""

    address: str
    ray: RayPorts = RAY
    monitoring: MonitoringPorts = MONITORING


class ScrapeJob(NamedTuple):
    name: str
    nodes: Callable[[ClusterConfig, dt.datetime], list[PlacedNode]]
    port: Callable[[Endpoint], int]
    # node-exporter carries the expected-nodes file, whose own node/tier labels must win.
    honor_labels: bool = False


def _live(cfg: ClusterConfig, at: dt.datetime) -> list[PlacedNode]:
    return cfg.live_nodes(at)


RAY_NODE_JOB = "ray-node"
SCRAPE_JOBS = (
    # The dashboard agent on every node exports the raylet's, workers' and (on the head) GCS metrics.
    ScrapeJob(RAY_NODE_JOB, _live, lambda e: e.ray.metrics_export),
    ScrapeJob("ray-autoscaler", lambda cfg, at: [cfg.head], lambda e: e.ray.autoscaler_metrics),
    ScrapeJob("ray-dashboard", lambda cfg, at: [cfg.head], lambda e: e.ray.dashboard_metrics),
    ScrapeJob("node-exporter", _live, lambda e: e.monitoring.node_exporter, honor_labels=True),
    ScrapeJob("cadvisor", _live, lambda e: e.monitoring.cadvisor),
    ScrapeJob("prometheus", lambda cfg, at: [cfg.monitoring_host], lambda e: e.monitoring.prometheus),
)


def role(placed: PlacedNode) -> str:
    return "head" if placed.node.head else "worker"


def node_labels(placed: PlacedNode) -> dict[str, str]:
    """The labels every series of a node carries: what the alerts and dashboards group by."""
    return {"node": placed.node.name, "tier": placed.tier_name, "role": role(placed)}


def _target_file(job: ScrapeJob) -> str:
    return f"{TARGETS_DIR}/{job.name}.json"


def prometheus_yml(remote_write_url: Optional[str] = None) -> str:
    """prometheus.yml; every path in it is relative to its own directory (PROMETHEUS_CONFIG).

    Alerts go to the Alertmanager beside Prometheus (host network, so loopback);
    `remote_write_url` (monitoring.remoteWrite) also ships every sample elsewhere.
    """
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{MONITORING.alertmanager}"]}]}]},
        "rule_files": [f"{RULES_DIR}/*.yml"],
        "scrape_configs": [
            {
                "job_name": job.name,
                **({"honor_labels": True} if job.honor_labels else {}),
                "file_sd_configs": [{"files": [_target_file(job)]}],
            }
            for job in SCRAPE_JOBS
        ],
    }
    if remote_write_url:
        config["remote_write"] = [{"url": remote_write_url}]
    header = "# Rendered by components/monitoring_config.py. Targets: targets/*.json (re-read on change).\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def rule_files() -> dict[str, str]:
    """The alert rules, by path relative to PROMETHEUS_CONFIG."""
    return {f"{RULES_DIR}/{p.name}": p.read_text() for p in sorted(RULES_SOURCE_DIR.glob("*.yml"))}


def scrape_targets(
    cfg: ClusterConfig, at: dt.datetime, endpoints: Optional[Mapping[str, Endpoint]] = None
) -> dict[str, str]:
    """file_sd files (path relative to PROMETHEUS_CONFIG -> JSON) for the nodes live at `at`.

    `endpoints` (node name -> Endpoint) remaps addresses and ports, for tests.
    Every job has its file, even when empty, so Prometheus never misses one.
    """
    def endpoint(placed: PlacedNode) -> Endpoint:
        return (endpoints or {}).get(placed.node.name) or Endpoint(str(placed.node.ip))

    files = {}
    for job in SCRAPE_JOBS:
        groups = [
            {"targets": [f"{endpoint(p).address}:{job.port(endpoint(p))}"], "labels": node_labels(p)}
            for p in job.nodes(cfg, at)
        ]
        files[_target_file(job)] = json.dumps(groups, indent=2) + "\n"
    return files


def _on_host(mount: Mount, files: dict[str, str]) -> dict[str, str]:
    return {f"{mount.host}/{path}": text for path, text in files.items()}


def config_files(cfg: ClusterConfig) -> dict[str, str]:
    """The monitoring host's files that change only with the code or config, by host path.

    Not the dashboards (dashboard_files): about 2 MB, copied by a resource of their own.
    """
    return {
        **_on_host(PROMETHEUS_CONFIG, {PROMETHEUS_YML: prometheus_yml(remote_write_url(cfg)), **rule_files()}),
        **_on_host(GRAFANA_PROVISIONING, grafana_provisioning(cfg)),
    }


def dashboard_files() -> dict[str, str]:
    """The Grafana dashboards, by host path."""
    return _on_host(GRAFANA_DASHBOARDS, dashboards())


def schedule_files(cfg: ClusterConfig, at: dt.datetime) -> dict[str, str]:
    """The monitoring host's files that change when a tier comes or goes, by host path."""
    return {
        **_on_host(PROMETHEUS_CONFIG, scrape_targets(cfg, at)),
        f"{NODE_EXPORTER_TEXTFILE.host}/{EXPECTED_NODES_FILE}": expected_nodes_metrics(cfg, at),
    }


def live_intervals(tier: Tier, at: dt.datetime) -> list[tuple[float, float]]:
    """[from, until) Unix times in which `tier` should run, covering `at`'s month plus SCHEDULE_COVERAGE.

    `Tier.expected_at`, over time: a tier without a scheduled window is live always
    or never; a window counts from its start (not its bring-up) until its drain start.
    The span is anchored to the calendar month, not to `at`, so the file (and the
    command that writes it) stays the same from run to run: a run with nothing
    to do changes nothing, and the file changes once a month.
    """
    window = tier.scheduled_window
    if window is None:
        return [(0.0, math.inf)] if tier.live_at(at) else []
    zone = ZoneInfo(window.timezone)
    month = at.astimezone(zone).date().replace(day=1)
    anchor = dt.datetime.combine(month, dt.time(), tzinfo=zone)
    until = anchor + dt.timedelta(days=31) + SCHEDULE_COVERAGE
    occurrences = (window.occurrence(month + dt.timedelta(days=d)) for d in range(-1, (until - anchor).days + 1))
    return [
        (w.start.timestamp(), w.drain_start.timestamp())
        for w in occurrences
        if w.drain_start > anchor and w.start < until
    ]


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    rendered = ",".join(f'{key}="{labels[key]}"' for key in sorted(labels))
    number = "+Inf" if value == math.inf else f"{value:.0f}"
    return f"{name}{{{rendered}}} {number}"


def expected_nodes_metrics(cfg: ClusterConfig, at: dt.datetime) -> str:
    """EXPECTED_NODES_FILE for node-exporter's textfile collector on the monitoring host.

    `raycluster_node_declared` lists every node of the config but those in maintenance; each tier's live
    intervals are `raycluster_tier_live_{from,until}_seconds{tier, occurrence}`.
    The rule `raycluster:node_expected` joins them with `time()`.
    """
    lines = [
        "# HELP raycluster_node_declared A node of the stack's config (its tier may be off now).",
        "# TYPE raycluster_node_declared gauge",
        # A node in maintenance is out of Ray on purpose: nothing to expect, nothing to page about.
        *(_sample("raycluster_node_declared", node_labels(p), 1) for p in cfg.placed_nodes if not p.node.maintenance),
    ]
    intervals = {name: live_intervals(tier, at) for name, tier in cfg.tiers.items()}
    for bound, metric, meaning in (
        (0, "raycluster_tier_live_from_seconds", "Start (Unix time) of an interval in which the tier should run."),
        (1, "raycluster_tier_live_until_seconds", "End (Unix time; a window's drain start) of an interval in which the tier should run."),
    ):
        lines += [f"# HELP {metric} {meaning}", f"# TYPE {metric} gauge"]
        lines += [
            _sample(metric, {"tier": name, "occurrence": str(i)}, interval[bound])
            for name, tier_intervals in intervals.items()
            for i, interval in enumerate(tier_intervals)
        ]
    return "\n".join(lines) + "\n"


def remote_write_url(cfg: ClusterConfig) -> Optional[str]:
    return cfg.monitoring.remote_write.url if cfg.monitoring.remote_write else None


def _url(cfg: ClusterConfig, port: int) -> str:
    return f"http://{cfg.monitoring_host.node.ip}:{port}"


def prometheus_url(cfg: ClusterConfig) -> str:
    return _url(cfg, MONITORING.prometheus)


def grafana_url(cfg: ClusterConfig) -> str:
    # Admins' browsers reach the monitoring host directly (the firewall opens Grafana to them).
    return _url(cfg, MONITORING.grafana)


def grafana_provisioning(cfg: ClusterConfig) -> dict[str, str]:
    """Files under GRAFANA_PROVISIONING, by relative path: the datasource and the dashboards provider."""
    datasource = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": DATASOURCE_NAME,
                "uid": DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": prometheus_url(cfg),
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": SCRAPE_INTERVAL},
            }
        ],
    }
    provider = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "ray-cluster",
                "folder": "Ray",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "options": {"path": GRAFANA_DASHBOARDS.container},
            }
        ],
    }
    return {
        "datasources/ray-cluster.yml": yaml.safe_dump(datasource, sort_keys=False),
        "dashboards/ray-cluster.yml": yaml.safe_dump(provider, sort_keys=False),
    }


GRAFANA_CONTAINER = "grafana"
# How long the password rotation waits for a (re)started Grafana to answer: 2 s apart.
GRAFANA_READY_TRIES = 90


def grafana_env(cfg: ClusterConfig) -> dict[str, str]:
    """Grafana's non-secret settings. GF_SECURITY_ADMIN_PASSWORD comes from a Pulumi secret."""
    anonymous = cfg.monitoring.grafana_anonymous_viewing
    return {
        "GF_SERVER_HTTP_PORT": str(MONITORING.grafana),
        "GF_SERVER_ROOT_URL": grafana_url(cfg),
        "GF_PATHS_PROVISIONING": GRAFANA_PROVISIONING.container,
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": f"{GRAFANA_DASHBOARDS.container}/{OVERVIEW_DASHBOARD}",
        # The Ray dashboard embeds Grafana panels in iframes.
        "GF_SECURITY_ALLOW_EMBEDDING": "true",
        # monitoring.grafanaAnonymousViewing: whoever reaches Grafana (the admin networks) may view
        # it without a login, so the Ray dashboard's embedded panels show for everyone.
        "GF_AUTH_ANONYMOUS_ENABLED": str(anonymous).lower(),
        **({"GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer"} if anonymous else {}),
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_USERS_ALLOW_ORG_CREATE": "false",
        # On-prem: no calls home.
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
    }


def grafana_password_rotation() -> str:
    """Shell (on the monitoring host) that sets Grafana's admin password to the line on its stdin.

    GF_SECURITY_ADMIN_PASSWORD is read only when Grafana creates its database; on
    the volume's existing database a new value changes nothing and the old
    password keeps working. `grafana cli admin reset-admin-password` writes the
    password into the database itself (grafana/grafana
    pkg/cmd/grafana-cli/commands/reset_password_command.go, user id 1 = the
    admin Grafana created). The password comes on stdin, never on a command line.
    Waits first for Grafana to answer (it may just have been (re)started); fails
    if it never does, or if the reset fails.
    """
    probe = f"http://127.0.0.1:{MONITORING.grafana}/api/health"
    return (
        "set -e; tries=0; "
        f"until sudo docker exec {GRAFANA_CONTAINER} wget -q -O /dev/null {probe} </dev/null; do "
        f'tries=$((tries + 1)); [ "$tries" -lt {GRAFANA_READY_TRIES} ] || {{ echo "grafana never answered" >&2; exit 1; }}; sleep 2; '
        "done; "
        f"sudo docker exec -i {GRAFANA_CONTAINER} grafana cli admin reset-admin-password --password-from-stdin"
    )


def ray_dashboard_env(cfg: ClusterConfig) -> dict[str, str]:
    """The head container's variables that make Ray's dashboard show Grafana and query Prometheus."""
    return {
        "RAY_GRAFANA_HOST": grafana_url(cfg),  # the head checks Grafana's health server-side
        "RAY_GRAFANA_IFRAME_HOST": grafana_url(cfg),  # what the admin's browser loads
        "RAY_PROMETHEUS_HOST": prometheus_url(cfg),
        "RAY_PROMETHEUS_NAME": DATASOURCE_NAME,
    }


def dashboards() -> dict[str, str]:
    """Files for GRAFANA_DASHBOARDS: Ray's own dashboards and the cluster overview."""
    return {p.name: p.read_text() for p in sorted(DASHBOARDS_SOURCE_DIR.glob("*.json"))}
