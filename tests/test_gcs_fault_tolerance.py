"""GCS fault tolerance: the rendered head, workers and Redis, and a real head restart.

Pure: the head is started against the Redis on redis.host, with a stable
namespace, its password from the secret environment (never in the declared
command); every node waits for a restarting head; the Redis keeps an AOF, asks
for the password, and is open to the head only.

Real: tests/gcs_ft_scenario.py, in a fresh loopback-only network namespace,
runs Debian's redis-server and Ray 2.60 from the rendered text, kills every
process of the head and starts it again from the same entrypoint. With the
store the worker, its detached actor, its running task and a job submitted the
documented way all carry on; without it the worker dies.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.model import config
from components.model.ports import REDIS
from components.render import containers, data_disk, firewall_rules, ray_start, redis_store
from conftest import prod_raw, require_tool

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests" / "gcs_ft_scenario.py"


def flags(args: list[str]) -> dict[str, str]:
    return dict((a[2:].split("=", 1) + [""])[:2] for a in args[2:])


# ---- Rendering ----


def test_the_head_keeps_its_state_in_the_redis_on_redis_host(prod_config):
    head = ray_start.node_settings(prod_config, prod_config.head)
    env = ray_start.ray_env(head)
    assert env["RAY_REDIS_ADDRESS"] == f"{prod_config.redis_host.node.ip}:{REDIS}"
    assert env["RAY_external_storage_namespace"] == f"ray-cluster-{prod_config.head.node.name}"
    script = ray_start.entrypoint_script(head)
    # The password is read from the secret environment when the command runs.
    assert f' --redis-password="${ray_start.REDIS_PASSWORD_ENV}" --block &\n' in script
    spec = containers.ray_container(prod_config, prod_config.head)
    assert ray_start.REDIS_PASSWORD_ENV in spec.secret_env and ray_start.REDIS_PASSWORD_ENV not in spec.env


def test_workers_never_get_the_store_or_its_password(prod_config):
    for placed in prod_config.placed_nodes:
        if placed.node.head:
            continue
        settings = ray_start.node_settings(prod_config, placed)
        assert settings.gcs_store is None
        assert not {"RAY_REDIS_ADDRESS", "RAY_external_storage_namespace"} & ray_start.ray_env(settings).keys()
        assert "redis" not in ray_start.entrypoint_script(settings)
        assert ray_start.REDIS_PASSWORD_ENV not in containers.ray_container(prod_config, placed).secret_env


def test_every_node_waits_for_a_restarting_head_as_configured():
    raw = prod_raw()
    raw["redis"] = {"headOutageMinutes": 25}
    cfg = config.load(raw)
    for placed in cfg.placed_nodes:
        env = ray_start.ray_env(ray_start.node_settings(cfg, placed))
        assert env["RAY_gcs_rpc_server_reconnect_timeout_s"] == str(25 * 60)


def test_nodes_carry_their_role_so_a_driver_can_avoid_the_head(prod_config):
    for placed in prod_config.placed_nodes:
        args = flags(ray_start.ray_start_args(ray_start.node_settings(prod_config, placed)))
        assert args["labels"] == f"tier={placed.tier_name},role={'head' if placed.node.head else 'worker'}"


def test_redis_runs_on_redis_host_before_the_head_with_aof_and_password(prod_config):
    host = prod_config.redis_host
    assert host == prod_config.head  # the default: the GCS and its store share the head's VM
    names = [spec.name for spec in containers.node_containers(prod_config, host)]
    assert names.index(redis_store.CONTAINER_NAME) < names.index(ray_start.CONTAINER_NAME)
    spec = containers.redis_container(prod_config)
    assert spec.image == prod_config.redis.image and spec.user == data_disk.REDIS.user
    assert spec.secret_env == (redis_store.PASSWORD_ENV,) and not spec.env
    script = spec.command[2]
    assert "appendonly yes" in script and f"port {REDIS}" in script and f"bind {host.node.ip} 127.0.0.1" in script
    assert [(b.source, b.target, b.read_only, b.must_exist) for b in spec.binds] == [(data_disk.REDIS.host, redis_store.DATA_DIR, False, True)]
    assert [s.name for s in containers.node_containers(prod_config, prod_config.placed("ray-ao-2"))].count(redis_store.CONTAINER_NAME) == 0


def test_redis_is_open_to_the_head_only():
    raw = prod_raw()
    raw["redis"] = {"host": "ray-ao-3"}
    cfg = config.load(raw)
    for placed in cfg.placed_nodes:
        redis_rules = [r for r in firewall_rules.firewall_rules(cfg, placed) if REDIS in r.opened]
        expected = [str(cfg.head.node.ip)] if placed.node.name == "ray-ao-3" else []
        assert [r.source for r in redis_rules] == expected, placed.node.name
    assert ray_start.ray_env(ray_start.node_settings(cfg, cfg.head))["RAY_REDIS_ADDRESS"] == f"10.20.0.13:{REDIS}"


@pytest.mark.parametrize("host,rule", [
    ("ray-hc-1", "must be in an always-on tier"),
    ("ray-zz-9", "is not a node of any tier"),
])
def test_redis_host_must_be_an_always_on_node(host, rule):
    raw = prod_raw()
    raw["redis"] = {"host": host}
    with pytest.raises(config.ConfigError, match=rf"ray-cluster:redis.host: '{host}' {rule}"):
        config.load(raw)


# ---- A real head restart ----


def run_scenario(*args: str) -> dict:
    """The scenario in a fresh network namespace with only `lo`, HOME kept out of the real one."""
    for tool, package in (("unshare", "util-linux"), ("ip", "iproute2"), ("redis-server", "redis-server"), ("redis-cli", "redis-tools")):
        require_tool(tool, package)
    if os.geteuid() != 0:
        pytest.skip("needs root (network and PID namespaces)")
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"gcsft-home-{os.getpid()}"
    home.mkdir(exist_ok=True)
    try:
        result = subprocess.run(
            ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, str(SCENARIO), *args],
            env={**os.environ, "HOME": str(home)}, capture_output=True, text=True, timeout=900,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "error" not in report, f"{report['error']}\n" + "\n".join(f"== {k}\n{v}" for k, v in report.get("logs", {}).items())
    return report


def test_with_the_store_a_head_restart_loses_nothing():
    report = run_scenario()
    assert report["job_submitted"] is True
    assert report["redis_alive_during_outage"] and report["worker_raylet_alive_during_outage"]
    assert report["redis_password_in_head_container_command"] is False
    # The worker kept its raylet and node id; the head came back as a new node.
    assert report["worker_raylet_same_pid"] is True
    assert report["worker_after"] == {"node_id": report["worker_node_id"], "state": "ALIVE"}
    assert report["head_node_id_after"] != report["head_node_id_before"]
    # The detached actor kept its state; the task ran once, through the restart; the job went on.
    assert (report["count_before"], report["count_after"]) == (3, 4)
    assert report["task_result"] == "finished" and report["task_runs"] == [report["worker_node_id"]]
    assert report["job_driver_node"] == report["worker_node_id"]
    assert report["job_status"] == "SUCCEEDED"
    assert report["job_beats_during_outage"] > 0 and report["job_beats_after_restart"] > 0
    # The smoke test submits the documented way too, and sees the driver on the always-on worker.
    smoke = report["smoke_test"]
    assert smoke["exit"] == 0, smoke
    [job_check] = [r for r in smoke["results"] if r["tier"] == "long-job driver"]
    assert job_check["driverNode"] == report["worker_node_id"]


def test_without_the_store_the_workers_die_with_the_head():
    report = run_scenario("--no-ft")
    assert report["worker_raylet_alive_during_outage"] is True
    assert report["worker_raylet_exited_after_s"] > 0
