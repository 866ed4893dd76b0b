"""The drain that runs before a worker node is removed, for real.

A cluster started from the rendered entrypoints (a head and a worker of the
always-on tier, two heavy-compute nodes) runs retriable tasks; the rendered
drain program, delivered as its file resource delivers it, then drains one
heavy node as a scheduled removal with 60 s left. No task is lost or re-run, nothing new lands on the draining node, the
drain ends before its deadline, the drained node's container entrypoint exits
(so Docker can't keep a dead node running), and the rest stays up.
"""
from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from components.render import drain, drain_program, ray_start
from conftest import prod_raw
from scripts.ops import local_drain
from scripts.ops.local_cluster import LocalCluster, driver, localize

BERLIN = ZoneInfo("Europe/Berlin")
# The heavy tier's window ends at 06:00 Berlin: a drain starting at 05:59 has 60 s.
ONE_MINUTE_BEFORE_WINDOW_END = dt.datetime(2026, 1, 15, 5, 59, tzinfo=BERLIN)
ROOT = Path(__file__).resolve().parent.parent
CPUS = {"ray-ao-1": 1, "ray-ao-2": 1, "ray-hc-1": 3, "ray-hc-2": 2}
TASK_SECONDS = 8


def delivered(tmp_path: Path, cfg, node: str, **overrides) -> Path:
    """The node's drain files, staged and put under tmp_path/drain by the install script its VM command runs."""
    files = drain.drain_files(drain.drain_settings(cfg, cfg.placed(node), **overrides))
    return local_drain.deliver(files, tmp_path / "drain")


def events(lines) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- Rendering ----


def test_the_head_is_never_drained(prod_config):
    with pytest.raises(ValueError, match="never drained"):
        drain.drain_settings(prod_config, prod_config.head)


def test_the_shipped_files_are_the_program_its_schedule_math_and_settings(prod_config, tmp_path):
    root = delivered(tmp_path, prod_config, "ray-hc-1")
    shipped = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert shipped == {
        "settings.json", "components/__init__.py", "components/model/__init__.py", "components/render/__init__.py",
        "components/model/schedule.py", "components/render/drain_program.py",
    }
    for module in ("components/model/schedule.py", "components/render/drain_program.py"):
        assert (root / module).read_text() == (ROOT / module).read_text()
    imported = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module)
    outside = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names}
    assert {m.split(".")[0] for m in outside} == {"ray", "components"}
    assert {m for m in outside if m.startswith("components")} == {"components.model.schedule"}


def test_settings_say_what_the_stack_file_says(prod_config, tmp_path):
    settings = json.loads((delivered(tmp_path, prod_config, "ray-hc-2") / "settings.json").read_text())
    raw = prod_raw()
    heavy = raw["tiers"]["heavy-compute"]
    window = heavy["schedule"]
    assert settings == {
        "nodeName": "ray-hc-2",
        "nodeIp": next(n["ip"] for n in heavy["nodes"] if n["name"] == "ray-hc-2"),
        "gcsAddress": next(f"{n['ip']}:6379" for t in raw["tiers"].values() for n in t["nodes"] if n.get("head")),
        # Where the drain keeps the node's results: the head's tier.
        "keepTier": next(name for name, t in raw["tiers"].items() if any(n.get("head") for n in t["nodes"])),
        "graceSeconds": 60.0 * raw["ray"]["drainGraceMinutes"],
        "window": {
            "start": f"{window['start']}:00",
            "end": f"{window['end']}:00",
            "timezone": window["timezone"],
            "drainLeadSeconds": 60.0 * window["drainLeadMinutes"],
        },
    }


@pytest.mark.parametrize(
    ("node", "now", "seconds"),
    [
        ("ray-hc-1", ONE_MINUTE_BEFORE_WINDOW_END, 60),  # scheduled: until the window end
        ("ray-hc-1", dt.datetime(2026, 1, 15, 5, 40, tzinfo=BERLIN), 600),  # before the drain start: grace
        ("ray-hc-1", dt.datetime(2026, 1, 15, 12, 0, tzinfo=BERLIN), 600),  # outside the window: grace
        ("ray-ao-2", ONE_MINUTE_BEFORE_WINDOW_END, 600),  # no window: grace
    ],
)
def test_deadline_is_the_window_end_for_scheduled_removals_else_the_grace(prod_config, tmp_path, node, now, seconds):
    # Nothing listens at the GCS address: the program states its deadline, then retries.
    root = delivered(tmp_path, prod_config, node, gcs_address=f"127.0.0.1:{unused_port()}")
    process = local_drain.start(root, "--now", now.isoformat(), env=os.environ)
    try:
        first = json.loads(process.stdout.readline())
    finally:
        process.kill()
        process.communicate()
    assert first == {"event": "deadline", "node": node, "now": now.isoformat(), "seconds": seconds}


def test_unreachable_head_ends_the_drain_loudly_at_the_deadline(prod_config, tmp_path):
    root = delivered(tmp_path, prod_config, "ray-hc-1", gcs_address=f"127.0.0.1:{unused_port()}")
    three_seconds_left = ONE_MINUTE_BEFORE_WINDOW_END + dt.timedelta(seconds=57)
    # Ray's connection timeouts, shortened so that one attempt outlasts the deadline quickly.
    impatient = {**os.environ, "RAY_gcs_rpc_server_connect_timeout_s": "1", "RAY_py_gcs_connect_timeout_s": "1"}
    process = local_drain.start(root, "--now", three_seconds_left.isoformat(), env=impatient)
    out, err = process.communicate(timeout=60)
    assert process.returncode == drain_program.EXIT_HEAD_UNREACHABLE
    # The scheduler finds this line in Pulumi's output by its prefix.
    assert any(line.startswith(f"{drain_program.ALARM_PREFIX} ray-hc-1: ") and "WITHOUT a drain" in line for line in err.splitlines()), err
    assert events(out.splitlines())[-1]["event"] == "head-unreachable"


FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$FAKE_DOCKER_DIR/calls"
case "$1" in
  update) exit 0 ;;
  inspect) cat "$FAKE_DOCKER_DIR/running" ;;
  cp) exit "$FAKE_CP_STATUS" ;;
  exec) echo "$FAKE_AFTER_EXEC" > "$FAKE_DOCKER_DIR/running"; exit "$FAKE_EXEC_STATUS" ;;
esac
"""
COPY = f"cp /opt/ray-cluster/drain/. {ray_start.CONTAINER_NAME}:/tmp/ray-cluster-drain"
EXEC = f"exec -w /tmp/ray-cluster-drain {ray_start.CONTAINER_NAME} python -m components.render.drain_program settings.json"


@pytest.mark.parametrize(
    ("running", "cp_status", "exec_status", "after_exec", "status", "executed"),
    [
        ("true", 0, 0, "true", 0, True),  # drained
        ("true", 0, drain_program.EXIT_DEADLINE_PASSED, "true", 0, True),  # said loudly; removal goes ahead
        ("true", 0, drain_program.EXIT_HEAD_UNREACHABLE, "true", 0, True),
        ("true", 0, 137, "false", 0, True),  # the drained node stopped its container mid-exec
        ("true", 0, 1, "true", 1, True),  # the drain itself failed: removal must wait
        ("true", 1, 0, "true", 1, False),  # the program could not be copied in: removal must wait
        ("false", 0, 0, "false", 0, False),  # already stopped: nothing to drain
    ],
)
def test_drain_command_on_the_vm(prod_config, tmp_path, running, cp_status, exec_status, after_exec, status, executed):
    fake = tmp_path / "docker"
    fake.write_text(FAKE_DOCKER)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "running").write_text(running + "\n")
    env = {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "FAKE_DOCKER_DIR": str(tmp_path),
        "FAKE_CP_STATUS": str(cp_status),
        "FAKE_EXEC_STATUS": str(exec_status),
        "FAKE_AFTER_EXEC": after_exec,
    }
    result = subprocess.run(["sh", "-c", drain.drain_command(prod_config.placed("ray-hc-1"))], env=env, timeout=30)
    assert result.returncode == status
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == f"update --restart=no {ray_start.CONTAINER_NAME}"  # before anything else
    assert (COPY in calls) == (running == "true")
    assert (EXEC in calls) == executed


# ---- A real drain ----


@pytest.fixture(scope="module")
def cluster(prod_config):
    rendered = [
        dataclasses.replace(ray_start.node_settings(prod_config, prod_config.placed(name)), num_cpus=cpus)
        for name, cpus in CPUS.items()
    ]
    with tempfile.TemporaryDirectory(prefix="ray-dr-") as root:
        local = localize(rendered, Path(root), first_offset=2000, offset_step=100, worker_ports=(34000, 37999))
        with LocalCluster(local) as running:
            yield running


@pytest.mark.ray
@pytest.mark.slow
def test_scheduled_drain_loses_no_work_and_ends_before_its_deadline(prod_config, cluster, tmp_path):
    ids = {name: cluster.node_info(name)["node_id"] for name in CPUS}
    with driver(cluster) as ray:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @ray.remote(num_cpus=0, label_selector={"tier": "always-on"})
        class Executions:
            def __init__(self):
                self.log = []

            def started(self, task, node_id):
                self.log.append((task, node_id))

            def get(self):
                return self.log

        executions = Executions.remote()

        @ray.remote(num_cpus=1, max_retries=3)
        def work(task, seconds):
            node_id = ray.get_runtime_context().get_node_id()
            ray.get(executions.started.remote(task, node_id))
            time.sleep(seconds)
            return node_id

        def on(name):
            return NodeAffinitySchedulingStrategy(ids[name], soft=True)

        # Two long tasks per heavy node: ray-hc-2 is then full, ray-hc-1 has a CPU free.
        early = [work.options(scheduling_strategy=on(n)).remote(f"early-{n}-{i}", TASK_SECONDS) for n in ("ray-hc-1", "ray-hc-2") for i in range(2)]
        deadline = time.monotonic() + 30
        while len(ray.get(executions.get.remote())) < len(early):
            assert time.monotonic() < deadline, "the early tasks did not start"
            time.sleep(0.2)

        hc1 = cluster.nodes["ray-hc-1"]
        root = delivered(
            tmp_path, prod_config, "ray-hc-1", node_ip=cluster.node_info("ray-hc-1")["node_ip"], gcs_address=cluster.gcs_address
        )
        env = {**os.environ, **ray_start.ray_env(hc1.settings), **cluster.client_env()}
        process = local_drain.start(root, "--now", ONE_MINUTE_BEFORE_WINDOW_END.isoformat(), env=env)
        progress = []
        for line in process.stdout:
            progress.append(line)
            if '"drain-requested"' in line:
                break
        # Without the drain, these would start at once on ray-hc-1's free CPU.
        late = [work.options(label_selector={"tier": "heavy-compute"}).remote(f"late-{i}", 1) for i in range(2)]
        out, err = process.communicate(timeout=90)
        progress += out.splitlines()
        assert process.returncode == 0, err

        assert sorted(ray.get(early + late, timeout=60)) == sorted([ids["ray-hc-1"]] * 2 + [ids["ray-hc-2"]] * 4)
        log = ray.get(executions.get.remote())
    tasks = [task for task, _ in log]
    assert sorted(tasks) == sorted(set(tasks)) and len(tasks) == len(early) + len(late)  # none lost, none re-run
    assert {task for task, node in log if node == ids["ray-hc-1"]} == {"early-ray-hc-1-0", "early-ray-hc-1-1"}

    steps = events(progress)
    assert steps[0]["seconds"] == 60  # a scheduled drain: until the window end
    assert steps[-1]["event"] == "drained" and steps[-1]["seconds"] < 60
    # The drained raylet exited 0; the entrypoint still exits, non-zero, so the container ends.
    assert hc1.process.wait(timeout=20) != 0
    states = {name: cluster.node_info(name)["state"] for name in CPUS}
    assert states == {"ray-ao-1": "ALIVE", "ray-ao-2": "ALIVE", "ray-hc-1": "DEAD", "ray-hc-2": "ALIVE"}
