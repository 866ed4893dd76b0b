"""The monitoring stack's files, checked by the tools that consume them.

Pure tests: the rendered prometheus.yml, rules and targets pass `promtool
check`, the rule unit tests pass `promtool test rules` and cover every alert,
the expected-nodes file agrees with the schedule, Grafana's datasource is the
one Ray's dashboard links to, and the committed Ray dashboards are what the
pinned Ray generates.

Real run: Debian's Prometheus and node-exporter on 127.0.0.1, from the very
rendered files (only addresses and ports remapped), scrape a real Ray 2.60
head started from its rendered entrypoint; the rules evaluate on real metrics.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from ray.dashboard.modules.metrics.metrics_head import DEFAULT_PROMETHEUS_NAME

from components.model import config

from components.render import alerting_config as ac, monitoring_config as mc, ray_start
from components.render.monitoring_config import Endpoint
from components.model.ports import MONITORING, RAY
from conftest import prod_raw, require_tool
from scripts.export_ray_dashboards import RAY_DASHBOARD_SUFFIX, ray_dashboards
from scripts.ops.local_cluster import LocalCluster, driver, localize, wait_for
from scripts.ops.local_monitoring import LocalPrometheus, on_one_port

RULE_TESTS = sorted((mc.REPO_MONITORING_DIR / "tests").glob("*.yml"))
# Instants of the prod stack (heavy-compute 18:00-06:00 Europe/Berlin, 15-minute lead).
NOON = dt.datetime(2026, 1, 15, 12, tzinfo=dt.timezone.utc)  # 13:00 in Berlin
NIGHT = dt.datetime(2026, 1, 15, 22, tzinfo=dt.timezone.utc)  # 23:00 in Berlin
HEAD_OFFSET = 3000  # the real head's ports: the shipped ones moved by this
WORKER_PORTS = (38000, 38999)


def run(*args: str, stdin: str | None = None) -> str:
    require_tool(args[0], "Debian's prometheus")
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def lay_out_prometheus(root: Path, cfg, at, endpoints=None) -> Path:
    """The Prometheus config dir as the program writes it on the monitoring host."""
    files = {mc.PROMETHEUS_YML: mc.prometheus_yml(), **mc.rule_files(), **mc.scrape_targets(cfg, at, endpoints)}
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root / mc.PROMETHEUS_YML


def rules() -> list[dict]:
    return [rule for path in mc.RULES_SOURCE_DIR.glob("*.yml") for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alert_rules() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def target_groups(files: dict[str, str], job: str) -> list[dict]:
    return json.loads(files[f"{mc.TARGETS_DIR}/{job}.json"])


# ---- Prometheus config, rules and targets ----


@pytest.mark.parametrize("at", [NOON, NIGHT], ids=["noon", "night"])
def test_promtool_accepts_the_rendered_config_with_its_rules_and_targets(tmp_path, prod_config, at):
    output = run("promtool", "check", "config", str(lay_out_prometheus(tmp_path, prod_config, at)))
    assert "SUCCESS: 1 rule files found" in output


def test_promtool_rule_unit_tests_pass():
    run("promtool", "test", "rules", *map(str, RULE_TESTS))


def test_every_alert_has_a_firing_and_a_quiet_test_case():
    cases: dict[str, set[bool]] = {}
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    # The Watchdog has no quiet case: it must fire always.
    expected = {name: {True} if name == ac.WATCHDOG else {True, False} for name in alert_rules()}
    assert {name: cases.get(name, set()) for name in alert_rules()} == expected


def test_every_alert_says_how_bad_it_is_and_what_to_check():
    for name, rule in alert_rules().items():
        # The Watchdog is no problem: it is how a dead man's switch knows monitoring lives.
        assert rule["labels"]["severity"] in (("none",) if name == ac.WATCHDOG else ("critical", "warning")), name
        assert rule["annotations"]["summary"] and "Check first" in rule["annotations"]["description"], name


def test_the_rules_name_what_the_program_ships():
    text = "\n".join(path.read_text() for path in mc.RULES_SOURCE_DIR.glob("*.yml"))
    assert set(re.findall(r'job[!=]~?"([\w-]+)"', text)) <= {job.name for job in mc.SCRAPE_JOBS}
    assert set(re.findall(r"mountpoint=\"([^\"]+)\"", text)) == {mc.DATA_MOUNTPOINT}
    assert f"{mc.NODE_EXPORTER_TEXTFILE.host}" in text and mc.EXPECTED_NODES_FILE in text
    assert f"{mc.PROMETHEUS_CONFIG.host}" in text
    assert set(re.findall(r"docker (?:exec|logs --tail \d+) ([\w-]+)", text)) == {ray_start.CONTAINER_NAME}


def test_targets_follow_the_schedule_and_carry_node_tier_and_role(prod_config):
    noon, night = mc.scrape_targets(prod_config, NOON), mc.scrape_targets(prod_config, NIGHT)
    assert noon.keys() == night.keys() == {f"{mc.TARGETS_DIR}/{job.name}.json" for job in mc.SCRAPE_JOBS}
    heavy = {p.node.name for p in prod_config.placed_nodes if p.tier_name == "heavy-compute"}
    for job in ("ray-node", "node-exporter", "cadvisor"):
        nodes_at = {when: {g["labels"]["node"] for g in target_groups(files, job)} for when, files in (("noon", noon), ("night", night))}
        assert nodes_at["night"] - nodes_at["noon"] == heavy
        assert nodes_at["night"] == {p.node.name for p in prod_config.placed_nodes}
    by_node = {p.node.name: p for p in prod_config.placed_nodes}
    for files in (noon, night):
        for job in mc.SCRAPE_JOBS:
            for group in target_groups(files, job.name):
                placed = by_node[group["labels"]["node"]]
                role = "head" if placed.node.name == "ray-ao-1" else "worker"  # Pulumi.prod.yaml's head
                assert group["labels"] == {"node": placed.node.name, "tier": placed.tier_name, "role": role}
                assert group["targets"] == [f"{placed.node.ip}:{job.port(Endpoint(str(placed.node.ip)))}"]
    head, monitor = prod_config.head.node.name, prod_config.monitoring_host.node.name
    assert [g["labels"]["node"] for g in target_groups(night, "ray-autoscaler")] == [head]
    assert [g["labels"]["node"] for g in target_groups(night, "prometheus")] == [monitor]


def test_every_scraped_port_comes_from_ports_py(prod_config):
    ports = {
        int(target.rsplit(":", 1)[1])
        for text in mc.scrape_targets(prod_config, NIGHT).values()
        for group in json.loads(text)
        for target in group["targets"]
    }
    assert ports == {
        RAY.metrics_export, RAY.autoscaler_metrics, RAY.dashboard_metrics,
        MONITORING.node_exporter, MONITORING.cadvisor, MONITORING.prometheus,
    }


# ---- The expected-nodes file ----


def parse_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, labels, value = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line).groups()
            samples.setdefault(name, []).append((dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
    return samples


def test_promtool_accepts_the_expected_nodes_file(prod_config):
    run("promtool", "check", "metrics", stdin=mc.expected_nodes_metrics(prod_config, NOON))


@pytest.mark.parametrize("override", [None, "on", "off"])
def test_expected_intervals_agree_with_the_schedule_for_two_weeks(override):
    raw = prod_raw()
    if override:
        raw["tiers"]["heavy-compute"]["override"] = override
    cfg = config.load(raw)
    samples = parse_samples(mc.expected_nodes_metrics(cfg, NOON))
    intervals: dict[tuple[str, str], list[float]] = {}
    for bound in ("from", "until"):
        for labels, value in samples.get(f"raycluster_tier_live_{bound}_seconds", []):
            intervals.setdefault((labels["tier"], labels["occurrence"]), []).append(value)
    assert all(len(pair) == 2 for pair in intervals.values())
    # Every ten minutes of the horizon.
    for step in range(int(mc.SCHEDULE_COVERAGE / dt.timedelta(minutes=10))):
        at = NOON + step * dt.timedelta(minutes=10)
        for name, tier in cfg.tiers.items():
            inside = any(start <= at.timestamp() < until for (tier_name, _), (start, until) in intervals.items() if tier_name == name)
            assert inside == tier.expected_at(at), (name, at)
    assert [labels for labels, _ in samples["raycluster_node_declared"]] == [
        {"node": name, "tier": tier, "role": "head" if name == "ray-ao-1" else "worker"}
        for tier, names in (("always-on", ("ray-ao-1", "ray-ao-2", "ray-ao-3")), ("heavy-compute", ("ray-hc-1", "ray-hc-2", "ray-hc-3")))
        for name in names
    ]


def test_the_bring_up_lead_is_deployed_but_not_yet_expected(prod_config):
    """In the bring-up lead the VMs exist and are booting: no alert until the window's start."""
    heavy = prod_config.tiers["heavy-compute"]
    window = heavy.window
    assert window.bring_up_lead > dt.timedelta(0)
    start = window.occurrence(dt.date(2026, 6, 10)).start
    booting = start - window.bring_up_lead
    starts = {from_ for from_, _ in mc.live_intervals(heavy, booting)}
    assert heavy.live_at(booting) and not heavy.live_at(booting - dt.timedelta(seconds=1))
    assert start.timestamp() in starts and booting.timestamp() not in starts
    assert not any(from_ <= (start - dt.timedelta(seconds=1)).timestamp() < until for from_, until in mc.live_intervals(heavy, booting))


def test_live_intervals_follow_daylight_saving():
    cfg = config.load(prod_raw())
    heavy = cfg.tiers["heavy-compute"]
    before = dt.datetime(2026, 3, 27, 12, tzinfo=dt.timezone.utc)  # Berlin moves to summer time on 29 March
    upcoming = [start for start, _ in mc.live_intervals(heavy, before) if start > before.timestamp()]
    starts = [dt.datetime.fromtimestamp(start, dt.timezone.utc).hour for start in upcoming[:4]]
    assert starts == [17, 17, 16, 16]  # 18:00 in Berlin: UTC+1, then UTC+2


def test_expected_nodes_file_is_stable_within_a_month(prod_config):
    """The scheduler's second run in a night must change nothing, so neither may this file."""
    evening = dt.datetime(2026, 11, 22, 18, 0, 5, tzinfo=dt.timezone.utc)
    same = [mc.expected_nodes_metrics(prod_config, evening + dt.timedelta(hours=h)) for h in (0, 12, 100)]
    assert same[0] == same[1] == same[2]
    assert mc.expected_nodes_metrics(prod_config, dt.datetime(2026, 12, 1, 1, tzinfo=dt.timezone.utc)) != same[0]


# ---- Grafana and the Ray dashboard ----


def test_grafana_datasource_is_the_one_rays_dashboard_links_to(prod_config):
    ray_env = mc.ray_dashboard_env(prod_config)
    provisioning = {path: yaml.safe_load(text) for path, text in mc.grafana_provisioning(prod_config).items()}
    [datasource] = provisioning["datasources/ray-cluster.yml"]["datasources"]
    assert datasource["name"] == ray_env["RAY_PROMETHEUS_NAME"] == DEFAULT_PROMETHEUS_NAME
    assert datasource["url"] == ray_env["RAY_PROMETHEUS_HOST"] == f"http://{prod_config.monitoring_host.node.ip}:{MONITORING.prometheus}"
    assert datasource["type"] == "prometheus" and datasource["isDefault"]
    [provider] = provisioning["dashboards/ray-cluster.yml"]["providers"]
    assert provider["options"]["path"] == mc.GRAFANA_DASHBOARDS.container
    assert ray_env["RAY_GRAFANA_HOST"] == ray_env["RAY_GRAFANA_IFRAME_HOST"] == f"http://{prod_config.monitoring_host.node.ip}:{MONITORING.grafana}"


def test_grafana_allows_embedding_but_no_default_password(prod_config):
    env = mc.grafana_env(prod_config)
    assert env["GF_SECURITY_ALLOW_EMBEDDING"] == "true"
    # Anonymous viewing: monitoring.grafanaAnonymousViewing (tests/test_least_privilege.py).
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert not any("PASSWORD" in key for key in env)
    assert env["GF_PATHS_PROVISIONING"] == mc.GRAFANA_PROVISIONING.container
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(mc.GRAFANA_DASHBOARDS.container + "/") and Path(home).name in mc.dashboards()


def test_committed_ray_dashboards_are_what_the_pinned_ray_generates():
    committed = {name: text for name, text in mc.dashboards().items() if name.endswith(RAY_DASHBOARD_SUFFIX)}
    assert committed == ray_dashboards(), "run: python -m scripts.export_ray_dashboards"


def all_panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # a collapsed row keeps its panels inside


def test_every_dashboard_queries_the_provisioned_prometheus():
    this_datasource = ("${datasource}", {"type": "prometheus", "uid": "${datasource}"})
    for name, text in mc.dashboards().items():
        dashboard = json.loads(text)
        [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
        # The variable picks a Prometheus datasource; ours is the only (and default) one.
        assert (variable["name"], variable["query"]) == ("datasource", "prometheus"), name
        for panel in all_panels(dashboard["panels"]):
            if panel["type"] != "row":
                assert panel["datasource"] in this_datasource, (name, panel["title"])
                assert all(t.get("datasource", "${datasource}") in this_datasource for t in panel["targets"]), name


# ---- Real run: Prometheus and node-exporter scrape a real Ray head ----


def config_with_heavy_tier_live(now: dt.datetime) -> config.ClusterConfig:
    """The prod stack with its heavy window moved so that `now` is well inside it, past the start-up grace,
    and monitoring on the head: the one node whose exporters this test runs."""
    raw = prod_raw()
    raw["monitoring"]["host"] = "ray-ao-1"
    raw["tiers"]["heavy-compute"]["schedule"] = {
        "start": (now - dt.timedelta(hours=2)).strftime("%H:%M"),
        "end": (now + dt.timedelta(hours=2)).strftime("%H:%M"),
        "timezone": "UTC",
    }
    return config.load(raw)


@dataclasses.dataclass
class RealMonitoring:
    cfg: config.ClusterConfig
    head: ray_start.RayNodeSettings
    cluster: LocalCluster
    prometheus: LocalPrometheus

    def query(self, expr: str) -> list[dict]:
        return self.prometheus.query(expr)


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Iterator[RealMonitoring]:
    """A real Ray head, node-exporter and Prometheus on 127.0.0.1, from the rendered files.

    The stack is prod with the heavy window around now. The other five nodes
    do not exist here: their targets point at a port bound but never
    listened on, so every scrape of them is refused.
    """
    require_tool("prometheus", "Debian's prometheus")
    require_tool("prometheus-node-exporter", "Debian's prometheus-node-exporter")
    now = dt.datetime.now(dt.timezone.utc)
    cfg = config_with_heavy_tier_live(now)
    with contextlib.ExitStack() as stack:
        # Ray's unix socket paths must stay short: a temp dir of our own under /tmp.
        ray_root = Path(tempfile.mkdtemp(prefix="mon", dir="/tmp"))
        stack.callback(shutil.rmtree, ray_root, ignore_errors=True)
        [head] = localize([ray_start.node_settings(cfg, cfg.head)], ray_root, HEAD_OFFSET, 100, WORKER_PORTS)
        with pytest.MonkeyPatch.context() as env:
            # Ray kills any task while the machine uses over 1% of its memory: a cheap, real OOM kill.
            env.setenv("RAY_memory_usage_threshold", "0.01")
            cluster = stack.enter_context(LocalCluster([head]))

        refused = stack.enter_context(socket.socket())
        refused.bind(("127.0.0.1", 0))
        prometheus = LocalPrometheus(tmp_path_factory.mktemp("monitoring"))
        endpoints = {p.node.name: on_one_port(refused.getsockname()[1]) for p in cfg.placed_nodes}
        endpoints[cfg.head.node.name] = Endpoint(
            "127.0.0.1", head.ports, prometheus.serving(endpoints[cfg.head.node.name].monitoring)
        )
        prometheus.write_targets(cfg, now, endpoints)
        prometheus.write_expected_nodes(cfg, now)
        prometheus.start(stack)
        wait_for("Prometheus ready", prometheus.ready)
        yield RealMonitoring(cfg, head, cluster, prometheus)


@pytest.mark.ray
def test_real_prometheus_scrapes_ray_with_node_tier_and_role(real):
    head = real.cfg.head.node.name
    for job in mc.SCRAPE_JOBS:
        if job.name != "cadvisor":  # no cAdvisor here
            wait_for(f"{job.name} on the head up", lambda: real.query(f'up{{job="{job.name}", node="{head}"}} == 1'))
    [series] = real.query(f'ray_node_mem_total{{node="{head}"}}')
    assert (series["metric"]["tier"], series["metric"]["role"]) == ("always-on", "head")


@pytest.mark.ray
def test_real_ray_exports_every_metric_the_rules_use(real):
    used = set(re.findall(r"\bray_\w+", "\n".join(rule["expr"] for rule in rules())))
    assert {"ray_tasks", "ray_memory_manager_worker_eviction_total"} <= used
    with driver(real.cluster) as ray:
        @ray.remote(max_retries=0)
        def hog_memory():
            held = bytearray(100 * 2**20)
            time.sleep(60)  # the memory monitor kills it long before
            return len(held)

        with pytest.raises(ray.exceptions.OutOfMemoryError):
            ray.get(hog_memory.remote())
        # The driver owns the failed task's count: stay connected until it is scraped.
        selector = f'{{__name__=~"{"|".join(sorted(used))}", node="{real.cfg.head.node.name}"}}'
        wait_for(f"{sorted(used)} in Prometheus", lambda: {s["metric"]["__name__"] for s in real.query(selector)} == used)


@pytest.mark.ray
def test_real_rules_evaluate_without_errors(real):
    def evaluated():
        rules_now = [r for g in real.prometheus.api("rules")["groups"] for r in g["rules"]]
        return rules_now if all(r["health"] != "unknown" for r in rules_now) else None

    rules_now = wait_for("every rule evaluated", evaluated)
    assert {r["name"] for r in rules_now} == {rule.get("alert") or rule["record"] for rule in rules()}
    assert [(r["name"], r.get("lastError")) for r in rules_now if r["health"] != "ok"] == []


@pytest.mark.ray
def test_real_node_missing_alerts_for_every_expected_node_without_ray_but_the_head(real):
    everyone = {p.node.name for p in real.cfg.placed_nodes}
    head = real.cfg.head.node.name
    # The program's textfile, through node-exporter and honor_labels, into the recording rule.
    wait_for("all nodes expected", lambda: {s["metric"]["node"] for s in real.query("raycluster:node_expected")} == everyone)
    wait_for("RayNodeMissing for the absent nodes", lambda: real.prometheus.alerting("RayNodeMissing") == everyone - {head})
    assert not real.prometheus.alerting("RayHeadNodeDown") and not real.prometheus.alerting("RayExpectedNodesUnknown")


@pytest.mark.ray
def test_real_overview_dashboard_queries_return_data(real):
    dashboard = json.loads(mc.dashboards()[mc.OVERVIEW_DASHBOARD])
    must_have_data = {"Ray nodes up / expected now", "Ray nodes up per tier", "CPU utilisation per tier",
                      "Ray CPUs in use per tier", "Memory used per tier", "Object store used per tier", "Data disk used per node"}
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$tier", ".+").replace("$__rate_interval", "1m")
            result = real.query(expr)  # fails on a query Prometheus rejects
            assert result or panel["title"] not in must_have_data, (panel["title"], expr)


@pytest.mark.ray
def test_real_head_writes_the_committed_ray_dashboards(real):
    written = Path(real.head.temp_dir, "session_latest", "metrics", "grafana", "dashboards")
    committed = {name: text for name, text in mc.dashboards().items() if name.endswith(RAY_DASHBOARD_SUFFIX)}
    assert {p.name: p.read_text() for p in written.glob("*.json")} == committed
