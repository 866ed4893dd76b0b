"""The local rehearsal, run as its users run it: `python -m scripts.rehearse` from the repo root.

The prod stack with --schedule, once: the smoke test passes on every tier; the
heavy tier comes up at its next 18:00 in Berlin, is drained from 05:45 by the
rendered drain program with the real 15 minutes left, and no work is lost or
re-run; the alerts Prometheus raised are reported, the scale-down's marked
expected. A changed copy of the stack (a third tier, a renamed node), kept
running with --keep-running: what runs and what Prometheus scrapes is the
changed stack; Ctrl-C then ends it. After either, nothing of the rehearsal is
left: no process, no listening port, no temp dir.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from scripts.ops import local_cluster
from tls_probe import refusal

from scripts.ops import rehearsal_setup
from scripts.ops.local_cluster import listening_ports
from scripts.ops.rehearsal_setup import MIN_OBJECT_STORE_BYTES, machine_share

ROOT = Path(__file__).resolve().parent.parent
BERLIN = ZoneInfo("Europe/Berlin")
RUN_TIMEOUT_S = 400

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]


@dataclasses.dataclass
class Rehearsed:
    started: dt.datetime
    returncode: int
    summary: dict
    stderr: str
    live: dict  # what the test saw while it ran (--keep-running only)

    @property
    def token(self) -> str:
        return re.search(r"RAY_AUTH_TOKEN=(\w+)", self.stderr).group(1)

    def printed_url(self, name: str) -> str:
        return re.search(rf"{name}: +(http://\S+)", self.stderr).group(1)

    def printed_tls(self, variable: str) -> str:
        """From the printed `TLS env: export ...` line."""
        return re.search(rf"TLS env: +export .*\b{variable}=(\S+)", self.stderr).group(1)

    def printed_gcs_port(self) -> int:
        return int(re.search(r"Ray address: +127\.0\.0\.1:(\d+)", self.stderr).group(1))


def rehearse(*args: str) -> list[str]:
    return [sys.executable, "-m", "scripts.rehearse", "--stack", "prod", *args]


def get_json(url: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def prod_night() -> Rehearsed:
    started = dt.datetime.now(dt.timezone.utc)
    result = subprocess.run(rehearse("--schedule", "--json"), cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return Rehearsed(started, result.returncode, json.loads(result.stdout), result.stderr, live={})


def changed_stack(project: Path) -> None:
    """Pulumi.prod.yaml with a third tier and the heavy tier's first node renamed."""
    document = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    tiers = document["config"]["ray-cluster:tiers"]
    tiers["heavy-compute"]["nodes"][0]["name"] = "ray-hc-7"
    tiers["gpu-night"] = {
        "vcpu": 16, "memoryGb": 64, "diskGb": 200,
        "schedule": {"start": "20:00", "end": "04:00", "timezone": "UTC", "drainLeadMinutes": 10},
        "nodes": [{"name": "ray-gpu-1", "ip": "10.20.0.31"}],
    }
    (project / "Pulumi.prod.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def interrupted(argv: list[str], when: str, look=lambda up: {}) -> Rehearsed:
    """Run the rehearsal until a progress line contains `when`, `look` at it, then Ctrl-C."""
    started = dt.datetime.now(dt.timezone.utc)
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read_stderr() -> None:
        for line in process.stderr:
            lines.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        give_up = time.monotonic() + RUN_TIMEOUT_S
        while not any(when in line for line in lines):
            assert process.poll() is None and time.monotonic() < give_up, "".join(lines)
            time.sleep(0.2)
        live = look(Rehearsed(started, 0, {}, "".join(lines), {}))
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=120)
        reader.join(timeout=10)
        return Rehearsed(started, returncode, json.loads(process.stdout.read()), "".join(lines), live)
    finally:
        if process.poll() is None:  # the test failed midway: still stop what it started
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def changed_and_interrupted(tmp_path_factory) -> Rehearsed:
    """The changed stack kept running: looked at while up, then stopped with Ctrl-C."""
    project = tmp_path_factory.mktemp("changed-stack")
    changed_stack(project)

    def look(up: Rehearsed) -> dict:
        dashboard, prometheus = up.printed_url("Ray dashboard"), up.printed_url("Prometheus")
        nodes = get_json(f"{dashboard}/api/v0/nodes?detail=true", up.token)["data"]["result"]["result"]
        printed_ports = {int(url.rsplit(":", 1)[1]) for url in (dashboard, prometheus)}
        ca, node_cert = up.printed_tls("RAY_TLS_CA_CERT"), (up.printed_tls("RAY_TLS_SERVER_CERT"), up.printed_tls("RAY_TLS_SERVER_KEY"))
        return {
            "gcsRefusal": {"nodeCertificate": refusal(up.printed_gcs_port(), ca, node_cert), "none": refusal(up.printed_gcs_port(), ca, None)},
            "alive": {(n["node_name"], n["labels"]["tier"]) for n in nodes if n["state"] == "ALIVE"},
            "resources": {n["node_name"]: n["resources_total"] for n in nodes if n["state"] == "ALIVE"},
            "scraped": scraped_nodes(prometheus),
            "listening": printed_ports & listening_ports(),
            "printedPorts": printed_ports,
        }

    return interrupted(rehearse("--project-dir", str(project), "--keep-running", "--json"), "press Ctrl-C", look)


# Ctrl-C mid-step: while a node joins, and while the heavy node drains.
MID_STEP = {"joining": "tier heavy-compute) from its rendered entrypoint", "draining": "the GCS accepted the drain"}


@pytest.fixture(scope="module", params=list(MID_STEP))
def interrupted_mid_step(request) -> Rehearsed:
    return interrupted(rehearse("--schedule", "--json"), MID_STEP[request.param])


def scraped_nodes(prometheus: str) -> set[str]:
    """The nodes of Prometheus' ray-node targets, once its discovery has handed them over (it batches for 5 s)."""
    give_up = time.monotonic() + 60
    while True:
        targets = get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
        nodes = {t["labels"]["node"] for t in targets if t["labels"]["job"] == "ray-node"}
        if nodes or time.monotonic() > give_up:
            return nodes
        time.sleep(1)


def leftovers(run: Rehearsed) -> dict:
    """What is still around of a finished rehearsal, found without trusting its own report:
    processes naming its temp dir, carrying its token or in a process group it started,
    ports it used that something listens on, its temp dir."""
    token, work = run.token.encode(), run.summary["workDir"].encode()
    groups = {p["pid"] for p in run.summary["processes"]}
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if work in (proc / "cmdline").read_bytes() or token in (proc / "environ").read_bytes() or os.getpgid(int(proc.name)) in groups:
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            pass
    return {
        "processes": found,
        "listening": sorted(set(run.summary["ports"]) & listening_ports()),
        "workDirExists": Path(run.summary["workDir"]).exists(),
    }


# ---- The prod stack, one night ----


def test_prod_rehearsal_passes_the_smoke_test_on_every_tier(prod_night, prod_config):
    assert prod_night.returncode == 0, prod_night.stderr[-5000:]
    assert prod_night.summary["ok"]
    assert [(n["name"], n["tier"], n["head"]) for n in prod_night.summary["nodes"]] == [
        ("ray-ao-1", "always-on", True),
        ("ray-hc-1", "heavy-compute", False),
    ]
    smoke = {r["tier"]: r for r in prod_night.summary["smoke"]}
    assert smoke.keys() == prod_config.tiers.keys()
    for r in smoke.values():
        assert r["ok"] and r["tasks"] > 0 and r["tasksPerSecond"] > 0
    assert re.search(r"smoke test PASS heavy-compute: \d+ tasks, [\d.]+ tasks/s", prod_night.stderr)


def test_the_heavy_tier_lives_its_next_night_by_the_real_schedule(prod_night, prod_config):
    [night] = prod_night.summary["schedule"]
    assert (night["tier"], night["node"]) == ("heavy-compute", "ray-hc-1")
    start, drain_start, end = (dt.datetime.fromisoformat(night[key]) for key in ("windowStart", "drainStart", "windowEnd"))
    assert [t.astimezone(BERLIN).strftime("%H:%M") for t in (start, drain_start, end)] == ["18:00", "05:45", "06:00"]
    window, day = prod_config.tiers["heavy-compute"].window, start.astimezone(BERLIN).date()
    occurrence = window.occurrence(day)
    assert (occurrence.start, occurrence.drain_start, occurrence.end) == (start, drain_start, end)
    # The next window: it starts after the rehearsal began, the one before did not.
    assert window.occurrence(day - dt.timedelta(days=1)).start <= prod_night.started < start
    assert (night["evening"]["live"], night["morning"]["live"], night["nextEvening"]["live"]) == (True, False, True)
    # Brought up its lead before each start, and joined by the start.
    assert dt.datetime.fromisoformat(night["evening"]["at"]) == occurrence.bring_up == start - window.bring_up_lead
    assert window.bring_up_lead > dt.timedelta(0)
    assert dt.datetime.fromisoformat(night["nextEvening"]["at"]) == window.occurrence(day + dt.timedelta(days=1)).bring_up
    for evening in (night["evening"], night["nextEvening"]):
        assert evening["readyByStart"] and 0 < evening["joinSeconds"] <= window.bring_up_lead.total_seconds()


def test_the_rendered_drain_takes_the_real_time_left_and_loses_no_work(prod_night):
    [night] = prod_night.summary["schedule"]
    drained = night["morning"]["drain"]
    assert drained["exitCode"] == 0
    assert drained["deadlineSeconds"] == 15 * 60  # from 05:45 to the window end at 06:00
    assert 0 < drained["seconds"] < drained["deadlineSeconds"]
    assert drained["entrypointExit"] not in (0, None)  # the drained node's container would stop by itself
    tasks = night["tasks"]
    assert tasks["finished"] == tasks["submitted"] > 0
    assert (tasks["lost"], tasks["reExecuted"]) == (0, 0)
    assert tasks["waitedForNextWindow"] > 0  # work still queued at the drain ran the next evening
    # After the node is gone, a line a night task wrote is read from the monitoring host's archive.
    assert night["logs"]["archivedTaskLines"] > 0 and "night task heavy-compute-" in night["logs"]["example"]
    assert night["ok"]


def test_alerts_are_reported_and_the_missing_nodes_of_a_one_node_per_tier_rehearsal_are_expected(prod_night):
    alerts = prod_night.summary["alerts"]
    missing = {a["node"]: a for a in alerts if a["alert"] == "RayNodeMissing"}
    # ray-ao-2 and ray-ao-3 exist in the config, always-on, and do not run here.
    assert {"ray-ao-2", "ray-ao-3"} <= missing.keys()
    assert all(missing[n]["expected"] and "one node per tier" in missing[n]["why"] for n in ("ray-ao-2", "ray-ao-3"))
    assert not [a for a in alerts if a["alert"] == "RayHeadNodeDown"]
    assert not [a for a in alerts if a["alert"] == "RayNodeMissing" and not a["expected"]]


# ---- A changed stack, kept running, then Ctrl-C ----


def test_the_rehearsal_runs_the_changed_stack_not_a_copy_of_its_own(changed_and_interrupted):
    run = changed_and_interrupted
    assert run.live["alive"] == {("ray-ao-1", "always-on"), ("ray-hc-7", "heavy-compute"), ("ray-gpu-1", "gpu-night")}
    # Prometheus scrapes the changed stack's nodes: every one, through the rendered targets.
    assert run.live["scraped"] == {"ray-ao-1", "ray-ao-2", "ray-ao-3", "ray-hc-7", "ray-hc-2", "ray-hc-3", "ray-gpu-1"}
    smoke = {r["tier"]: r["ok"] for r in run.summary["smoke"]}
    assert smoke == {"always-on": True, "heavy-compute": True, "gpu-night": True}


def test_the_rehearsal_runs_ray_over_mutual_tls(changed_and_interrupted):
    # The GCS lets in a client with a node's certificate from the cluster CA, and no other;
    # every tier's smoke test passed over it.
    refusals = changed_and_interrupted.live["gcsRefusal"]
    assert refusals["nodeCertificate"] == "" and refusals["none"], refusals
    assert all(r["ok"] for r in changed_and_interrupted.summary["smoke"])


def test_each_node_gets_its_share_of_this_machine(changed_and_interrupted):
    run = changed_and_interrupted
    share = machine_share(3)  # three tiers, one node each
    planned = {n["name"]: n for n in run.summary["nodes"]}
    assert {name: r["CPU"] for name, r in run.live["resources"].items()} == {name: share.cpus for name in planned}
    for name, resources in run.live["resources"].items():
        assert planned[name]["cpus"] == share.cpus
        # Ray rounds the object store to its allocation granularity.
        assert resources["object_store_memory"] == pytest.approx(planned[name]["objectStoreBytes"], rel=0.01)
        assert planned[name]["objectStoreBytes"] >= MIN_OBJECT_STORE_BYTES


def test_ctrl_c_ends_a_kept_running_rehearsal_cleanly(changed_and_interrupted):
    run = changed_and_interrupted
    assert run.live["listening"] == run.live["printedPorts"]  # while up, the dashboard and Prometheus listened
    assert run.returncode == 0, run.stderr[-5000:]  # after the steps, Ctrl-C is the way out
    assert run.summary["ok"] and not run.summary["interrupted"]
    assert "cleaning up" in run.stderr


def test_ctrl_c_mid_step_interrupts_and_cleans_up(interrupted_mid_step):
    run = interrupted_mid_step
    assert run.returncode == 130, run.stderr[-5000:]
    assert run.summary["interrupted"] and not run.summary["ok"]
    assert "cleaning up" in run.stderr
    assert leftovers(run) == {"processes": [], "listening": [], "workDirExists": False}
    assert run.summary["cleanup"] == {"processGroupsLeft": [], "portsStillListening": []}


@pytest.mark.parametrize("rehearsal", ["prod_night", "changed_and_interrupted"])
def test_nothing_of_the_rehearsal_is_left(rehearsal, request):
    run: Rehearsed = request.getfixturevalue(rehearsal)
    assert {p["name"] for p in run.summary["processes"]} >= {"prometheus", "node-exporter", "ray-ao-1"}
    assert leftovers(run) == {"processes": [], "listening": [], "workDirExists": False}
    assert run.summary["cleanup"] == {"processGroupsLeft": [], "portsStillListening": []}


def test_long_waits_keep_telling_the_person_watching(monkeypatch, capsys):
    monkeypatch.setattr(local_cluster, "PROGRESS_EVERY_S", 0.1)
    done_at = time.monotonic() + 0.35
    assert rehearsal_setup.wait_until("the thing", lambda: time.monotonic() > done_at, timeout=5, every=0.02)
    words = [line for line in capsys.readouterr().err.splitlines() if "still waiting for the thing" in line]
    assert 2 <= len(words) <= 4
