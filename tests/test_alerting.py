"""Alertmanager's rendered configuration, against amtool and a real Alertmanager.

amtool (Debian's prometheus-alertmanager, the version the pinned image runs)
checks the file and walks its routes. A real Alertmanager on 127.0.0.1 with
every receiver a webhook into this test then shows what reaches whom: the
head-down page, the Watchdog, a windowed tier's alert inside its window, and
nothing for the per-node alerts the head's death inhibits or for a windowed
tier outside its window. Only the grouping timers are shortened.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import re
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from components.model import config
from components.model.versions import pinned_version
from components.model.ports import MONITORING
from components.render import alerting_config as ac
from components.render import containers, data_disk, firewall_rules
from components.render import monitoring_config as mc
from conftest import prod_raw, require_tool

SECRETS = {
    "oncall": "https://hooks.chat.example.internal/services/T000/B000/XXXX",
    "deadman": "https://hc-ping.example.internal/0000-1111",
    "mail-relay": "smtp-password",
}


def receivers_raw() -> dict:
    return {
        "receivers": [
            {"name": "oncall", "slack": {"channel": "#ray-oncall"}},
            {"name": "team", "email": {"to": "ray-team@example.internal", "from": "am@example.internal", "smarthost": "smtp.example.internal:587"}},
            {"name": "mail-relay", "email": {"to": "ops@example.internal", "from": "am@example.internal", "smarthost": "smtp.example.internal:587", "authUsername": "am"}},
            {"name": "deadman", "webhook": {}},
        ],
        "critical": "oncall",
        "warning": "team",
        "watchdog": "deadman",
    }


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    raw = prod_raw()
    raw["alerting"] = receivers_raw()
    path = tmp_path_factory.mktemp("am") / ac.ALERTMANAGER_YML
    path.write_text(ac.alertmanager_yml(config.load(raw), SECRETS))
    return path


def amtool(*args: str) -> subprocess.CompletedProcess:
    require_tool("amtool", "prometheus-alertmanager")
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60)


def test_amtool_accepts_the_rendered_config(rendered):
    result = amtool("check-config", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 receivers" in result.stdout and "1 inhibit rules" in result.stdout


def test_amtool_accepts_the_config_without_any_receiver(tmp_path, prod_config):
    path = tmp_path / ac.ALERTMANAGER_YML
    path.write_text(ac.alertmanager_yml(prod_config, {}))
    result = amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("labels,receiver", [
    ({"alertname": "RayHeadNodeDown", "severity": "critical", "tier": "always-on", "role": "head", "node": "ray-ao-1"}, "oncall"),
    ({"alertname": "RayNodeMissing", "severity": "warning", "tier": "heavy-compute", "role": "worker", "node": "ray-hc-2"}, "team"),
    ({"alertname": "DataDiskAlmostFull", "severity": "warning", "tier": "always-on", "node": "ray-ao-2"}, "team"),
    ({"alertname": "Watchdog", "severity": "none"}, "deadman"),
    ({"alertname": "SomethingNew"}, ac.NOBODY),
], ids=["head-down", "heavy-tier", "always-on-warning", "watchdog", "unlabelled"])
def test_amtool_routes_each_alert_to_its_receiver(rendered, labels, receiver):
    result = amtool("config", "routes", "test", f"--config.file={rendered}", f"--verify.receivers={receiver}",
                    *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_a_windowed_tier_never_pages_and_is_heard_only_inside_its_window(rendered, prod_config):
    routes = yaml.safe_load(rendered.read_text())["route"]["routes"]
    heavy = [r for r in routes if 'tier="heavy-compute"' in r["matchers"]]
    assert [(r["receiver"], r["active_time_intervals"]) for r in heavy] == [("team", ["heavy-compute-live"])]
    [interval] = [i for i in yaml.safe_load(rendered.read_text())["time_intervals"] if i["name"] == "heavy-compute-live"]
    # 18:00 to the drain start 05:45, Berlin time (the prod window and its 15-minute lead).
    assert interval["time_intervals"] == [{
        "times": [{"start_time": "18:00", "end_time": "24:00"}, {"start_time": "00:00", "end_time": "05:45"}],
        "location": "Europe/Berlin",
    }]


def test_a_receiver_without_its_secret_is_refused_and_routes_name_receivers(prod_config):
    raw = prod_raw()
    raw["alerting"] = receivers_raw()
    with pytest.raises(ValueError, match=r"alertingSecrets has no value for receiver\(s\) \['deadman'\]"):
        ac.alertmanager_yml(config.load(raw), {k: v for k, v in SECRETS.items() if k != "deadman"})
    raw["alerting"]["critical"] = "pager"
    with pytest.raises(config.ConfigError, match=r"ray-cluster:alerting.critical: 'pager' is not the name of one of alerting.receivers"):
        config.load(raw)


def test_alertmanager_runs_pinned_health_checked_with_its_config_and_kept_data(prod_config):
    spec = containers.alertmanager_container(prod_config)
    version = amtool("--version")
    assert pinned_version(spec.image) == re.search(r"version (\d+\.\d+\.\d+)", version.stdout + version.stderr).group(1)
    assert spec.health.test[0] == "CMD" and "/-/healthy" in spec.health.test[-1]
    assert f"--config.file={ac.ALERTMANAGER_CONFIG.container}/{ac.ALERTMANAGER_YML}" in spec.command
    assert (data_disk.ALERTMANAGER.host, ac.ALERTMANAGER_DATA) in [(b.source, b.target) for b in spec.binds if not b.read_only]
    assert spec.user == data_disk.ALERTMANAGER.user and data_disk.ALERTMANAGER.gid == ac.IMAGE_GID


# ---- A real Alertmanager ----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink(http.server.BaseHTTPRequestHandler):
    """Every webhook notification: (receiver path, alertname, tier) of each alert in it."""

    received: list[tuple[str, str, str]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Sink.received += [(self.path.strip("/"), a["labels"]["alertname"], a["labels"].get("tier", "")) for a in body["alerts"]]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def windowed_tiers_around(now: dt.datetime) -> dict:
    """prod with heavy-compute's window hours away from now, and a second windowed tier live now."""
    raw = prod_raw()
    def hhmm(hours: int) -> str:
        return (now + dt.timedelta(hours=hours)).strftime("%H:%M")

    raw["tiers"]["heavy-compute"]["schedule"] = {"start": hhmm(3), "end": hhmm(6), "timezone": "UTC"}
    raw["tiers"]["night-batch"] = {
        **{k: raw["tiers"]["heavy-compute"][k] for k in ("vcpu", "memoryGb", "diskGb")},
        "schedule": {"start": hhmm(-2), "end": hhmm(2), "timezone": "UTC"},
        "nodes": [{"name": "ray-nb-1", "ip": "10.20.0.31"}],
    }
    raw["alerting"] = {
        "receivers": [{"name": name, "webhook": {}} for name in ("page", "team", "deadman")],
        "critical": "page", "warning": "team", "watchdog": "deadman",
    }
    return raw


@contextlib.contextmanager
def real_alertmanager(tmp_path: Path) -> Iterator[tuple[str, type[Sink]]]:
    require_tool("prometheus-alertmanager", "prometheus-alertmanager")
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    Sink.received = []
    hook = f"http://127.0.0.1:{sink.server_address[1]}"
    cfg = config.load(windowed_tiers_around(dt.datetime.now(dt.timezone.utc)))
    rendered = yaml.safe_load(ac.alertmanager_yml(cfg, {name: f"{hook}/{name}" for name in ("page", "team", "deadman")}))
    # Shorter timers, so the test takes seconds; routes, receivers, inhibition and intervals as rendered.
    rendered["route"].update(group_wait="1s", group_interval="1s")
    for route in rendered["route"]["routes"]:
        route.update({timer: "1s" for timer in ("group_wait", "group_interval") if timer in route})
    (tmp_path / ac.ALERTMANAGER_YML).write_text(yaml.safe_dump(rendered))
    port = free_port()
    with open(tmp_path / "alertmanager.log", "wb") as log:
        process = subprocess.Popen(
            ["prometheus-alertmanager", f"--config.file={tmp_path / ac.ALERTMANAGER_YML}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        give_up = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=2)
                break
            except OSError:
                assert time.monotonic() < give_up, (tmp_path / "alertmanager.log").read_text()
                time.sleep(0.5)
        yield url, Sink
    finally:
        process.kill()
        process.wait()
        sink.shutdown()


def post_alerts(url: str, alerts: list[dict[str, str]]) -> None:
    body = json.dumps([{"labels": labels, "annotations": {"summary": "test"}} for labels in alerts]).encode()
    request = urllib.request.Request(f"{url}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"})
    assert urllib.request.urlopen(request, timeout=10).status == 200


def test_real_alertmanager_pages_the_head_inhibits_its_flood_and_keeps_windows(tmp_path):
    with real_alertmanager(tmp_path) as (url, sink):
        post_alerts(url, [
            {"alertname": "RayHeadNodeDown", "severity": "critical", "tier": "always-on", "role": "head", "node": "ray-ao-1"},
            {"alertname": "RayNodeMissing", "severity": "warning", "tier": "always-on", "role": "worker", "node": "ray-ao-3"},
            {"alertname": "ScrapeTargetDown", "severity": "warning", "tier": "always-on", "role": "head", "node": "ray-ao-1", "job": "ray-dashboard"},
            {"alertname": "DataDiskAlmostFull", "severity": "warning", "tier": "heavy-compute", "node": "ray-hc-1"},
            {"alertname": "DataDiskAlmostFull", "severity": "warning", "tier": "night-batch", "node": "ray-nb-1"},
            {"alertname": "Watchdog", "severity": "none"},
        ])
        expected = {
            ("page", "RayHeadNodeDown", "always-on"),
            ("team", "DataDiskAlmostFull", "night-batch"),
            ("deadman", "Watchdog", ""),
        }
        give_up = time.monotonic() + 60
        while not expected <= set(sink.received) and time.monotonic() < give_up:
            time.sleep(0.5)
        time.sleep(5)  # several more group intervals: anything else would have arrived by now
        assert set(sink.received) == expected
        with urllib.request.urlopen(f"{url}/api/v2/alerts?inhibited=true", timeout=10) as response:
            inhibited = {a["labels"]["alertname"] for a in json.load(response) if a["status"]["inhibitedBy"]}
        assert inhibited == set(ac.INHIBITED_BY_HEAD_DOWN)


def test_prometheus_alerts_the_alertmanager_beside_it_and_can_remote_write(tmp_path, prod_config):
    url = "https://metrics.example.internal/api/v1/write"
    shipped = yaml.safe_load(mc.prometheus_yml(url))
    assert shipped["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": [f"127.0.0.1:{MONITORING.alertmanager}"]}]}]
    assert shipped["remote_write"] == [{"url": url}] and "remote_write" not in yaml.safe_load(mc.prometheus_yml())
    (tmp_path / mc.PROMETHEUS_YML).write_text(mc.prometheus_yml(url))
    for relative, text in {**mc.rule_files(), **mc.scrape_targets(prod_config, dt.datetime.now(dt.timezone.utc))}.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    require_tool("promtool", "prometheus")
    check = subprocess.run(["promtool", "check", "config", str(tmp_path / mc.PROMETHEUS_YML)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    raw = prod_raw()
    raw["monitoring"]["remoteWrite"] = {"url": url}
    assert yaml.safe_load(mc.config_files(config.load(raw))[f"{mc.PROMETHEUS_CONFIG.host}/{mc.PROMETHEUS_YML}"].split("\n", 1)[1])["remote_write"] == [{"url": url}]


def test_alertmanager_listens_where_prometheus_and_the_firewall_say(prod_config):
    spec = containers.alertmanager_container(prod_config)
    assert f"--web.listen-address=:{MONITORING.alertmanager}" in spec.command
    monitor = prod_config.monitoring_host
    rules = [r for p in prod_config.placed_nodes for r in firewall_rules.firewall_rules(prod_config, p) if MONITORING.alertmanager in r.opened]
    assert {r.source for r in rules} == {str(c) for c in prod_config.network.admin_cidrs}
    assert all(r in firewall_rules.firewall_rules(prod_config, monitor) for r in rules)
