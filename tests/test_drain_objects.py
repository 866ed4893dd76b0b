"""Results survive the removal, for real: a driver on the always-on tier holds results computed
on a heavy node (small ones, inline with their owner, and 20 MiB ones in the node's object
store, one of them already fetched); the rendered drain of a scheduled removal copies what the
node holds to the always-on tier and ends as soon as the node is idle, long before its
deadline; the node is then removed, and every `ray.get` returns without re-running its task.
A result owned by a worker process (not a driver) is not kept: the drain runs to its deadline
and names it, with its size and job, in its alarm and report.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from components.render import drain_program, ray_start
from scripts.ops import local_drain, night_report
from scripts.ops.local_cluster import LocalCluster, driver, kill_node_processes, localize
from test_drain import delivered, events

BERLIN = ZoneInfo("Europe/Berlin")
CPUS = {"ray-ao-1": 1, "ray-ao-2": 1, "ray-hc-1": 2}
MiB = 2**20


def seconds_before_window_end(seconds: int) -> dt.datetime:
    return dt.datetime(2026, 1, 15, 6, tzinfo=BERLIN) - dt.timedelta(seconds=seconds)


@pytest.fixture
def cluster(prod_config):
    rendered = [
        dataclasses.replace(ray_start.node_settings(prod_config, prod_config.placed(name)), num_cpus=cpus)
        for name, cpus in CPUS.items()
    ]
    with tempfile.TemporaryDirectory(prefix="ray-ob-") as root:
        local = localize(rendered, Path(root), first_offset=2600, offset_step=100, worker_ports=(40000, 42999))
        with LocalCluster(local) as running:
            yield running


def drain_heavy_node(prod_config, cluster, tmp_path, seconds_left: int):
    hc1 = cluster.nodes["ray-hc-1"]
    root = delivered(
        tmp_path, prod_config, "ray-hc-1", node_ip=cluster.node_info("ray-hc-1")["node_ip"], gcs_address=cluster.gcs_address
    )
    env = {**os.environ, **ray_start.ray_env(hc1.settings), **cluster.client_env()}
    process = local_drain.start(root, "--now", seconds_before_window_end(seconds_left).isoformat(), env=env)
    out, err = process.communicate(timeout=seconds_left + 60)
    [report] = [r for r in map(night_report.parse_drain_report, out.splitlines()) if r]
    return process.returncode, events(out.splitlines()), report, err


def remove_heavy_node(cluster):
    """What the VM's deletion does: everything of the node is gone."""
    kill_node_processes(cluster.nodes["ray-hc-1"])
    deadline = time.monotonic() + 60
    while cluster.node_info("ray-hc-1")["state"] != "DEAD":
        assert time.monotonic() < deadline, "Ray never saw the removed node dead"
        time.sleep(0.5)


def counter(ray):
    @ray.remote(num_cpus=0, label_selector={"tier": "always-on"})
    class Executions:
        def __init__(self):
            self.counts = {}

        def started(self, name):
            self.counts[name] = self.counts.get(name, 0) + 1

        def get(self):
            return self.counts

    return Executions.remote()


@pytest.mark.ray
@pytest.mark.slow
def test_a_drivers_results_outlive_the_heavy_node_without_re_running(prod_config, cluster, tmp_path):
    with driver(cluster) as ray:
        executions = counter(ray)

        @ray.remote(num_cpus=1, max_retries=3, label_selector={"tier": "heavy-compute"})
        def result(name, size):
            ray.get(executions.started.remote(name))
            return name.encode() + b"x" * size

        sizes = {"small-a": 512, "small-b": 4096, "big-a": 20 * MiB, "big-b": 24 * MiB, "big-fetched": 20 * MiB}
        refs = {name: result.remote(name, size) for name, size in sizes.items()}
        ray.wait(list(refs.values()), num_returns=len(refs), fetch_local=False, timeout=120)
        ray.get(refs["big-fetched"])  # a driver that already collected one

        code, steps, report, err = drain_heavy_node(prod_config, cluster, tmp_path, seconds_left=120)
        assert code == 0, err
        # Idle, and what it holds is kept: the drain does not wait out its 120 s.
        assert steps[-1]["event"] == "kept" and steps[-1]["seconds"] < 60
        big = [name for name in sizes if name.startswith("big")]
        assert report["drained"] and report["objectsKept"]["count"] == len(big)
        assert report["objectsKept"]["bytes"] >= sum(sizes[name] for name in big)
        assert report["objectsLost"]["count"] == 0 and report["tasksCut"] == 0

        remove_heavy_node(cluster)
        for name, ref in refs.items():
            assert ray.get(ref, timeout=60) == name.encode() + b"x" * sizes[name]
        assert ray.get(executions.get.remote()) == {name: 1 for name in sizes}  # none re-run


@pytest.mark.ray
@pytest.mark.slow
def test_a_result_a_worker_owns_is_named_as_lost(prod_config, cluster, tmp_path):
    with driver(cluster) as ray:
        @ray.remote(num_cpus=1, max_retries=0, label_selector={"tier": "heavy-compute"})
        def result(size):
            return b"y" * size

        @ray.remote(num_cpus=0, label_selector={"tier": "always-on"})
        class Collector:
            """A worker process on the always-on tier that owns a heavy-tier result (a nested task)."""

            def start(self):
                self.ref = result.remote(20 * MiB)
                ray.wait([self.ref], fetch_local=False)
                return ray.get_runtime_context().get_job_id()

        collector = Collector.remote()
        job = ray.get(collector.start.remote())
        code, steps, report, err = drain_heavy_node(prod_config, cluster, tmp_path, seconds_left=15)
    assert code == drain_program.EXIT_DEADLINE_PASSED
    [alarm] = [line for line in err.splitlines() if line.startswith(f"{drain_program.ALARM_PREFIX} ray-hc-1:")]
    assert "no task running" in alarm and "1 result(s) (20.0 MiB) still held in its object store" in alarm
    assert job in alarm
    assert not report["drained"] and report["objectsLost"]["count"] == 1
    assert report["objectsLost"]["bytes"] >= 20 * MiB and report["objectsLost"]["owners"] == {job: 1}
