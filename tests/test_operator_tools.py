"""The operator tools against a real Ray cluster on 127.0.0.1, started from the
rendered prod commands of the head (always-on) and one heavy-compute node.

The tools run as their users run them on the head (`python -m scripts.<tool>`
with only RAY_AUTH_TOKEN and the node's TLS credentials in the environment;
the operators' client-only certificate is tests/test_tls_runtime.py's); the
test process itself loads work through `local_cluster.driver`, which restores
Ray's auth state afterwards.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.render import tls
from scripts import smoke_test
from scripts.ops import scheduling
from scripts.ops.local_cluster import driver, rendered_cluster
from scripts.ops.ray_state import RayNodeView

ROOT = Path(__file__).resolve().parent.parent
HEAD_OFFSET = 5000  # the shipped ports moved by this (the next node's by 10 more)
WORKER_PORTS = (40000, 40999)
NODES = ("ray-ao-1", "ray-hc-1")
CPUS_PER_NODE = 2  # instead of 32 / 80: this machine has two cores

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster(prod_config):
    with rendered_cluster(prod_config, NODES, HEAD_OFFSET, WORKER_PORTS, CPUS_PER_NODE) as running:
        yield running


def python(cluster, *argv: str, token: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= tls.tls_env(cluster.head.tls_dir)  # Ray's gRPC is mutual TLS: a client presents a certificate
    if token:
        env["RAY_AUTH_TOKEN"] = cluster.token  # the tools turn token mode on themselves
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def tool(cluster, name: str, *argv: str, token: bool = True) -> subprocess.CompletedProcess:
    return python(cluster, "-m", name, *argv, token=token)


def client_address(cluster) -> str:
    return f"ray://127.0.0.1:{cluster.head.ports.client}"


def test_the_schedulers_probe_sees_every_node_with_its_tier(cluster):
    probe = (
        "import dataclasses, json, sys; from scripts.ops.ray_state import alive_nodes; "
        "print(json.dumps([dataclasses.asdict(n) for n in alive_nodes(sys.argv[1])]))"
    )
    result = python(cluster, "-c", probe, cluster.dashboard_url)
    assert result.returncode == 0, result.stderr
    alive = [RayNodeView(**n) for n in json.loads(result.stdout)]
    assert sorted((n.name, n.tier, n.is_head) for n in alive) == [
        ("ray-ao-1", "always-on", True),
        ("ray-hc-1", "heavy-compute", False),
    ]
    deployed = {
        "liveTiers": ["always-on", "heavy-compute"],
        "nodes": [{"name": "ray-ao-1", "tier": "always-on"}, {"name": "ray-hc-1", "tier": "heavy-compute"}, {"name": "ray-hc-2", "tier": "heavy-compute"}],
    }
    assert scheduling.nodes_by_tier(deployed, alive) == {
        "always-on": {"joined": ["ray-ao-1"], "missing": []},
        "heavy-compute": {"joined": ["ray-hc-1"], "missing": ["ray-hc-2"]},
    }


def test_smoke_test_passes_on_every_live_tier_through_the_ray_client(cluster):
    result = tool(cluster, "scripts.smoke_test", "--address", client_address(cluster), "--tasks", "20", "--json")
    assert result.returncode == 0, result.stderr
    results = {r["tier"]: r for r in json.loads(result.stdout)}
    assert results.keys() == {"always-on", "heavy-compute"}
    for r in results.values():
        assert r["ok"] and r["tasks"] == 20 and r["nodesUsed"] == 1
        assert r["tasksPerSecond"] > 0


def test_smoke_test_says_when_no_always_on_worker_can_host_a_long_jobs_driver(cluster):
    # This cluster's always-on tier is the head alone: a long job's driver has nowhere to go.
    result = tool(cluster, "scripts.smoke_test", "--address", cluster.gcs_address, "--dashboard", cluster.dashboard_url,
                  "--tier", "heavy-compute", "--tasks", "5", "--timeout", "20", "--json")
    assert result.returncode == 1, result.stderr
    [job] = [r for r in json.loads(result.stdout) if r["tier"] == smoke_test.JOB_CHECK]
    assert not job["ok"] and "is there a live always-on worker?" in job["error"]


def test_smoke_test_fails_for_a_tier_without_live_nodes(cluster):
    result = tool(cluster, "scripts.smoke_test", "--address", cluster.gcs_address, "--tier", "heavy-compute", "--tier", "gpu", "--tasks", "5")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("PASS  heavy-compute") and "tasks/s" in lines[0]
    assert lines[1].startswith("FAIL  gpu") and "no live node" in lines[1]


class FlakyRay:
    """ray.init that fails with each error in turn, then connects."""

    def __init__(self, *errors: Exception):
        self.errors, self.calls = list(errors), 0

    def init(self, **kwargs) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


SESSION_FAILED = ConnectionAbortedError("Initialization failure from server:\npsutil.ZombieProcess: ...")


def test_the_smoke_test_retries_a_session_the_client_server_failed_to_start(monkeypatch):
    monkeypatch.setattr(smoke_test.time, "sleep", lambda seconds: None)
    ray = FlakyRay(SESSION_FAILED, SESSION_FAILED)
    smoke_test.connect(ray, "ray://127.0.0.1:1")
    assert ray.calls == 3
    with pytest.raises(ConnectionAbortedError):
        smoke_test.connect(FlakyRay(SESSION_FAILED, SESSION_FAILED, SESSION_FAILED), "ray://127.0.0.1:1")


def test_the_smoke_test_does_not_retry_other_connection_errors():
    ray = FlakyRay(ConnectionError("ray client connection timeout"))
    with pytest.raises(ConnectionError):
        smoke_test.connect(ray, "ray://127.0.0.1:1")
    assert ray.calls == 1


def test_tools_without_the_token_are_refused(cluster):
    result = tool(cluster, "scripts.monitor_tasks", "--address", cluster.dashboard_url, token=False)
    assert result.returncode == 1
    assert "authentication" in result.stderr.lower()


def monitor(cluster) -> dict:
    result = tool(cluster, "scripts.monitor_tasks", "--address", cluster.dashboard_url, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_monitor_counts_running_and_pending_tasks_per_tier(cluster):
    with driver(cluster) as ray:

        @ray.remote(num_cpus=1)
        def nap():
            time.sleep(120)

        # Three for two heavy CPUs (one waits), one by the seeds' custom resource,
        # and two for a tier with no node at all.
        refs = [nap.options(label_selector={"tier": "heavy-compute"}).remote() for _ in range(3)]
        refs += [nap.options(resources={"tier:heavy-compute": 1}).remote()]
        refs += [nap.options(label_selector={"tier": "gpu"}).remote() for _ in range(2)]
        expected = {
            "always-on": {"nodes": 1, "running": 0, "pending": 0},
            "heavy-compute": {"nodes": 1, "running": 2, "pending": 2},
            "gpu": {"nodes": 0, "running": 0, "pending": 2},
        }
        try:
            give_up = time.monotonic() + 60
            while (seen := monitor(cluster)) != expected and time.monotonic() < give_up:
                time.sleep(1)
            assert seen == expected
            table = tool(cluster, "scripts.monitor_tasks", "--address", cluster.gcs_address).stdout.splitlines()
            assert table[0].split() == ["TIER", "NODES", "RUNNING", "PENDING"]
            assert table[2].split() == ["heavy-compute", "1", "2", "2"]
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
