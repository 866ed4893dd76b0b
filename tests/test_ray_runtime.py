"""What each Ray container runs: the rendering, then the real thing.

The pure tests pin the `ray start` command line to components/ports.py and the
config. The integration tests start real Ray 2.60 nodes on 127.0.0.1 from the
exact rendered entrypoint scripts (head, one always-on worker, one
heavy-compute worker; only addresses, ports, CPUs, memory and directories
remapped) and check tier routing, token auth, the health check and the
entrypoint's supervision.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from components.render import dashboard_proxy, ray_start
from components.model.ports import RAY, RayPorts
from conftest import prod_raw
from scripts.ops.local_cluster import LocalCluster, driver, localize

pytestmark = pytest.mark.ray

# Flags whose value is a port, and the RayPorts field each one pins.
WORKER_PORT_FLAGS = {
    "node-manager-port": "node_manager",
    "object-manager-port": "object_manager",
    "runtime-env-agent-port": "runtime_env_agent",
    "dashboard-agent-grpc-port": "dashboard_agent_grpc",
    "dashboard-agent-listen-port": "dashboard_agent_http",
    "metrics-export-port": "metrics_export",
    "min-worker-port": "min_worker",
    "max-worker-port": "max_worker",
}
HEAD_PORT_FLAGS = {**WORKER_PORT_FLAGS, "port": "gcs", "ray-client-server-port": "client", "dashboard-port": "dashboard"}
HEAD_PORT_ENV = {"AUTOSCALER_METRIC_PORT": "autoscaler_metrics", "DASHBOARD_METRIC_PORT": "dashboard_metrics"}


def flags(args: list[str]) -> dict[str, str]:
    """`--name=value` arguments as {name: value}; bare flags map to ''."""
    assert args[:2] == ["ray", "start"]
    return dict((a[2:].split("=", 1) + [""])[:2] for a in args[2:])


@pytest.fixture(scope="module")
def head(prod_config):
    return ray_start.node_settings(prod_config, prod_config.head)


@pytest.fixture(scope="module")
def heavy(prod_config):
    return ray_start.node_settings(prod_config, prod_config.placed("ray-hc-1"))


# ---- Rendering ----


def test_every_ray_port_is_pinned_on_the_head_from_ports_py(head, prod_config):
    pinned = {field: flags(ray_start.ray_start_args(head))[flag] for flag, field in HEAD_PORT_FLAGS.items()}
    pinned |= {field: ray_start.ray_env(head)[var] for var, field in HEAD_PORT_ENV.items()}
    # The dashboard's HTTPS port is the TLS proxy's: pinned in the nginx config the head gets.
    conf = dashboard_proxy.nginx_conf(dashboard_proxy.proxy_settings(prod_config))
    (pinned["dashboard_https"],) = set(re.findall(r"listen [\d.]+:(\d+) ssl;", conf))
    assert pinned == {f.name: str(getattr(RAY, f.name)) for f in dataclasses.fields(RayPorts)}


def test_workers_pin_their_ports_and_join_the_head(heavy, prod_config):
    worker = flags(ray_start.ray_start_args(heavy))
    assert {flag: worker[flag] for flag in WORKER_PORT_FLAGS} == {
        flag: str(getattr(RAY, field)) for flag, field in WORKER_PORT_FLAGS.items()
    }
    assert worker["address"] == f"{prod_config.head.node.ip}:{RAY.gcs}"
    assert worker["node-ip-address"] == "10.20.0.21"
    assert not {"head", "port", "dashboard-host", "dashboard-port", "ray-client-server-port"} & worker.keys()
    assert not HEAD_PORT_ENV.keys() & ray_start.ray_env(heavy).keys()


def test_head_serves_the_plain_dashboard_on_loopback_only(head):
    args = flags(ray_start.ray_start_args(head))
    assert "head" in args and "address" not in args
    assert args["dashboard-host"] == "127.0.0.1"  # the network gets it through the TLS proxy
    assert args["node-ip-address"] == "10.20.0.11"


def test_tier_is_both_a_label_and_a_custom_resource(heavy):
    args = flags(ray_start.ray_start_args(heavy))
    assert args["labels"] == "tier=heavy-compute,role=worker"
    assert json.loads(args["resources"]) == {"tier:heavy-compute": 80}
    assert args["num-cpus"] == "80" and "disable-usage-stats" in args


def test_memory_plan(heavy):
    # 30 % (the default objectStoreFraction; Pulumi.prod.yaml sets none) of the heavy tier's 350 GB.
    assert int(flags(ray_start.ray_start_args(heavy))["object-store-memory"]) == heavy.object_store_bytes == 105 * 2**30
    # /dev/shm holds the whole object store, with a little room to spare.
    assert heavy.object_store_bytes < heavy.shm_bytes <= heavy.object_store_bytes * 1.05


def test_ray_data_lives_under_the_mounted_dir_with_short_socket_paths(heavy):
    args = flags(ray_start.ray_start_args(heavy))
    for key in ("temp-dir", "object-spilling-directory"):
        assert args[key].startswith(ray_start.CONTAINER_DATA_DIR + "/")
    with pytest.raises(ValueError, match="unix sockets"):
        ray_start.ray_start_args(dataclasses.replace(heavy, temp_dir="/tmp/" + "x" * 60))


def test_token_is_required_but_never_rendered(head):
    env = ray_start.ray_env(head)
    assert env["RAY_AUTH_MODE"] == "token"
    assert not any("TOKEN" in key for key in env)


def test_container_stop_outlasts_every_drain(prod_config):
    raw = prod_raw()
    for p in prod_config.placed_nodes:
        # The longest drain: the grace, or a scheduled removal's lead (from the drain start to the window end).
        schedule = raw["tiers"][p.tier_name]["schedule"]
        lead = schedule["drainLeadMinutes"] if isinstance(schedule, dict) else 0
        longest = 60 * max(raw["ray"]["drainGraceMinutes"], lead)
        settings = ray_start.node_settings(prod_config, p)
        # A SIGTERM'd node drains for as long as the longest drain, and Docker waits longer.
        assert int(ray_start.ray_env(settings)["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"]) == longest
        assert ray_start.stop_grace_seconds(prod_config, p) > longest


def test_entrypoint_runs_the_rendered_command_under_sh(heavy):
    script = ray_start.entrypoint_script(heavy)
    assert script.startswith(shlex.join(ray_start.ray_start_args(heavy)) + " --block &\n")
    subprocess.run(["sh", "-n", "-c", script], check=True)


def test_health_check_probes_gcs_only_on_the_head(head, heavy):
    assert ray_start.health_check_command(head)[:2] == ["CMD", "python"]
    assert ray_start.health_urls(heavy) == [f"http://127.0.0.1:{RAY.dashboard_agent_http}/api/local_raylet_healthz"]
    assert ray_start.health_urls(head)[1] == f"http://127.0.0.1:{RAY.dashboard}/api/gcs_healthz"


# ---- The rendered commands, run for real ----

NODES = ("ray-ao-1", "ray-ao-2", "ray-hc-1")  # the head, then one worker per tier


@pytest.fixture(scope="module")
def cluster(prod_config):
    rendered = [dataclasses.replace(ray_start.node_settings(prod_config, prod_config.placed(n)), num_cpus=1) for n in NODES]
    with tempfile.TemporaryDirectory(prefix="ray-rt-") as root:
        local = localize(rendered, Path(root), first_offset=1000, offset_step=100, worker_ports=(30000, 33999))
        with LocalCluster(local) as running:
            yield running


def test_rendered_nodes_form_one_cluster_with_their_tiers(cluster):
    nodes = {n["node_name"]: n for n in cluster.list_nodes() if n["state"] == "ALIVE"}
    assert sorted(nodes) == sorted(NODES)
    assert [n for n in nodes if nodes[n]["is_head_node"]] == ["ray-ao-1"]
    for name, node in nodes.items():
        tier = cluster.nodes[name].settings.tier_name
        assert node["labels"]["tier"] == tier
        assert node["resources_total"][f"tier:{tier}"] == node["resources_total"]["CPU"] == 1


def test_tier_label_and_custom_resource_route_tasks_to_the_tier(cluster):
    heavy_id = cluster.node_info("ray-hc-1")["node_id"]
    always_on_ids = {cluster.node_info(n)["node_id"] for n in ("ray-ao-1", "ray-ao-2")}
    with driver(cluster) as ray:

        @ray.remote(num_cpus=1)
        def where() -> str:
            return ray.get_runtime_context().get_node_id()

        by_label = where.options(label_selector={"tier": "heavy-compute"}).remote()
        by_resource = where.options(resources={"tier:heavy-compute": 1}).remote()
        always_on = [where.options(label_selector={"tier": "always-on"}).remote() for _ in range(4)]
        assert ray.get([by_label, by_resource], timeout=60) == [heavy_id, heavy_id]
        assert set(ray.get(always_on, timeout=60)) <= always_on_ids


def test_clients_without_the_token_are_refused(cluster, tmp_path):
    # With the cluster's TLS credentials, so that it is the token that is missing.
    tls_only = {k: v for k, v in cluster.client_env().items() if k.startswith(("RAY_USE_TLS", "RAY_TLS_"))}
    stranger = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | tls_only
    # No token anywhere (not even ~/.ray/auth_token); stop retrying after 2 s instead of 20.
    stranger |= {"HOME": str(tmp_path), "RAY_gcs_server_port_wait_time_s": "2"}
    connect = f"import ray; ray.init(address={cluster.gcs_address!r}, log_to_driver=False)"
    refused = subprocess.run([sys.executable, "-c", connect], env=stranger, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stderr  # the GCS said no: not a network failure
    # The Jobs API (the ShadowRay door) answers only with the token.
    for headers in ({}, {"Authorization": "Bearer " + "0" * 64}):
        with pytest.raises(urllib.error.HTTPError) as refusal:
            urllib.request.urlopen(urllib.request.Request(f"{cluster.dashboard_url}/api/jobs/", headers=headers), timeout=10)
        assert refusal.value.code in (401, 403)
    jobs = urllib.request.Request(f"{cluster.dashboard_url}/api/jobs/", headers={"Authorization": f"Bearer {cluster.token}"})
    assert urllib.request.urlopen(jobs, timeout=10).status == 200


def run_health_check(cluster, name) -> subprocess.CompletedProcess:
    """The container's healthcheck test, run as Docker runs the CMD form."""
    command = ray_start.health_check_command(cluster.nodes[name].settings)
    assert command[0] == "CMD"
    return subprocess.run(command[1:], env={**os.environ, **cluster.client_env()}, capture_output=True, text=True, timeout=30)


def test_health_check_passes_on_healthy_nodes(cluster):
    for name in NODES:
        check = run_health_check(cluster, name)
        assert check.returncode == 0, check.stderr


def raylet_pid(node) -> int:
    """The raylet: the child of `ray start`, itself the child of the entrypoint's sh."""
    result = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(node.process.pid)], capture_output=True, text=True)
    ray_start_pid = next(int(pid) for pid, comm in map(str.split, result.stdout.splitlines()) if comm == "ray")
    result = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(ray_start_pid)], capture_output=True, text=True)
    return next(int(pid) for pid, comm in map(str.split, result.stdout.splitlines()) if comm == "raylet")


def test_entrypoint_exits_nonzero_when_the_raylet_exits_and_health_fails(cluster):
    node = cluster.nodes["ray-hc-1"]
    # SIGTERM is a "graceful" raylet exit: `ray start --block` alone would keep running.
    os.kill(raylet_pid(node), signal.SIGTERM)
    assert node.process.wait(timeout=30) != 0
    assert run_health_check(cluster, "ray-hc-1").returncode != 0
    assert run_health_check(cluster, "ray-ao-1").returncode == 0


def test_sigterm_stops_the_node_gracefully(cluster):
    node = cluster.nodes["ray-ao-2"]
    node.process.send_signal(signal.SIGTERM)  # what `docker stop` sends
    assert node.process.wait(timeout=30) == 0
    assert cluster.node_info("ray-ao-2")["state"] == "DEAD"
    with pytest.raises(ProcessLookupError):  # every process of the node is gone
        os.killpg(node.process.pid, 0)
