"""A head restart against a real Redis and real Ray, reported as JSON (run by test_gcs_fault_tolerance.py).

Must run inside a network namespace that has only `lo` (the test starts it with
`unshare --net`): there Ray keeps 127.0.0.1 and no port clashes with anyone.

    python tests/gcs_ft_scenario.py [--no-ft]

Debian's redis-server runs the rendered Redis config and entrypoint; the prod
head (ray-ao-1) and an always-on worker (ray-ao-2) run their rendered
entrypoints (addresses, ports, CPUs, directories remapped). Before the restart:
a detached actor on the worker counts to 3, a task on the worker starts and
waits, a job is submitted the documented way (scripts/ops/jobs.py). Then every
process of the head is SIGKILLed, stays down DOWN_SECONDS, and the head is
started again from the same entrypoint. `--no-ft` renders the head without its
GCS store: what happens to a cluster without fault tolerance.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.model.stack import read_stack_file  # noqa: E402
from components.render import ray_start, redis_store  # noqa: E402
from scripts.ops import jobs  # noqa: E402
from components.model.ports import REDIS  # noqa: E402
from scripts.ops.local_cluster import LocalCluster, driver, kill_node_processes, localize, wait_for  # noqa: E402

HEAD, WORKER = "ray-ao-1", "ray-ao-2"
OFFSET = 1000
REDIS_PORT = REDIS + OFFSET
DOWN_SECONDS = 10
WORKER_DEATH_WATCH_SECONDS = 150
RAY_DEFAULT_GCS_RECONNECT_S = 60  # gcs_rpc_server_reconnect_timeout_s in Ray 2.60's ray_config_def.h

# The job: a driver on an always-on worker that starts a task there, works until
# told to stop, then collects the task's result. The task notes each run it makes.
JOB = """
import os, sys, time, ray
beats, stop, runs, result = sys.argv[1:5]
ray.init()

@ray.remote(num_cpus=1, max_retries=3, label_selector={"role": "worker"})
def wait_for_the_restart():
    with open(runs, "a") as f:
        f.write(ray.get_runtime_context().get_node_id() + "\\n")
    while not os.path.exists(stop):
        time.sleep(0.5)
    return "finished"

task = wait_for_the_restart.remote()
with open(beats, "a") as f:
    f.write(ray.get_runtime_context().get_node_id() + "\\n")
while not os.path.exists(stop):
    with open(beats, "a") as f:
        f.write(f"{time.time()}\\n")
    time.sleep(1)
with open(result, "w") as f:
    f.write(ray.get(task, timeout=60))
"""


def descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children] + [d for c in children for d in descendants(int(c))]


def raylet_pid(node) -> int:
    """The node's raylet, however deep under its entrypoint."""
    (pid,) = [p for p in descendants(node.process.pid) if Path(f"/proc/{p}/comm").read_text().strip() == "raylet"]
    return pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def job_info(cluster: LocalCluster, submission_id: str) -> dict:
    request = urllib.request.Request(
        f"{cluster.dashboard_url}/api/jobs/{submission_id}", headers={"Authorization": f"Bearer {cluster.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def start_redis(root: Path, password: str) -> subprocess.Popen:
    """Debian's redis-server from the rendered entrypoint, config and health check."""
    port = REDIS_PORT
    data = root / "redis"
    data.mkdir()
    script = redis_store.entrypoint_script(redis_store.redis_conf(["127.0.0.1"], port, str(data)))
    env = {**os.environ, redis_store.PASSWORD_ENV: password}
    log = open(root / "redis.log", "wb")
    redis = subprocess.Popen(["sh", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    health = redis_store.health_check_command(port)[1:]
    wait_for("Redis healthy", lambda: subprocess.run(health, env=env).returncode == 0, 30)
    return redis


def scenario(fault_tolerant: bool, root: Path, report: dict) -> None:
    cfg = read_stack_file("prod")
    rendered = [
        dataclasses.replace(ray_start.node_settings(cfg, cfg.placed(name)), num_cpus=cpus)
        for name, cpus in ((HEAD, 1), (WORKER, 3))
    ]
    if not fault_tolerant:  # as before GCS fault tolerance: no store, Ray's default wait for the GCS
        rendered = [dataclasses.replace(s, gcs_store=None, head_outage_seconds=RAY_DEFAULT_GCS_RECONNECT_S) for s in rendered]
    head_settings, worker_settings = localize(rendered, root, OFFSET, 100, (30000, 33999), redis_port=REDIS_PORT)
    password = secrets.token_hex(24)
    redis = start_redis(root, password)
    # A long-lived driver waits for a restarting head as long as the workers do.
    os.environ["RAY_gcs_rpc_server_reconnect_timeout_s"] = str(worker_settings.head_outage_seconds)
    report["fault_tolerant"] = fault_tolerant
    try:
        with LocalCluster(
            [head_settings, worker_settings],
            extra_env={HEAD: {ray_start.REDIS_PASSWORD_ENV: password}},
            own_pid_namespaces=True,  # as in containers on separate VMs
        ) as cluster:
            report["redis_password_in_head_container_command"] = password in ray_start.entrypoint_script(head_settings)
            worker = cluster.nodes[WORKER]
            before = {"raylet": raylet_pid(worker), "node_id": cluster.node_info(WORKER)["node_id"]}
            stop, task_runs, beats, task_result = (root / name for name in ("stop", "task-runs", "job-beats", "task-result"))
            job_file = root / "job.py"
            job_file.write_text(JOB)
            entrypoint = [sys.executable, str(job_file), *map(str, (beats, stop, task_runs, task_result))]
            submit = jobs.submit_command(cluster.dashboard_url, entrypoint, submission_id="long-job")
            submitted = subprocess.run(submit, env={**os.environ, **cluster.client_env()}, capture_output=True, text=True, timeout=120)
            report["job_submitted"] = submitted.returncode == 0 or submitted.stdout + submitted.stderr

            with driver(cluster) as ray:

                @ray.remote(num_cpus=0, lifetime="detached", name="counter", namespace="ft", label_selector={"role": "worker"})
                class Counter:
                    def __init__(self):
                        self.count = 0

                    def add(self) -> int:
                        self.count += 1
                        return self.count

                counter = Counter.remote()
                report["count_before"] = ray.get([counter.add.remote() for _ in range(3)])[-1]
                wait_for("the job's task running", task_runs.exists, 120)
                wait_for("the job's driver running", lambda: beats.exists() and len(beats.read_text().splitlines()) > 1, 120)
                report["job_driver_node"] = beats.read_text().splitlines()[0]
                report["worker_node_id"] = before["node_id"]
                report["head_node_id_before"] = cluster.node_info(HEAD)["node_id"]

                kill_node_processes(cluster.nodes[HEAD])
                killed_at, killed_wall = time.monotonic(), time.time()
                time.sleep(DOWN_SECONDS)
                report["redis_alive_during_outage"] = redis.poll() is None
                report["worker_raylet_alive_during_outage"] = alive(before["raylet"])
                cluster.start_node(head_settings)
                back_wall = time.time()
                report["head_back_after_s"] = round(time.monotonic() - killed_at, 1)
                report["head_node_id_after"] = cluster.node_info(HEAD)["node_id"]

                if not fault_tolerant:
                    exited = wait_for(
                        "the worker's raylet to exit",
                        lambda: (not alive(before["raylet"])) and time.monotonic(),
                        WORKER_DEATH_WATCH_SECONDS,
                    )
                    report["worker_raylet_exited_after_s"] = round(exited - killed_at, 1)
                    return

                report["worker_raylet_same_pid"] = alive(before["raylet"]) and raylet_pid(worker) == before["raylet"]
                worker_now = cluster.node_info(WORKER)
                report["worker_after"] = {"node_id": worker_now["node_id"], "state": worker_now["state"]}
                report["count_after"] = ray.get(ray.get_actor("counter", namespace="ft").add.remote(), timeout=60)
                beats_after = lambda: [t for t in map(float, beats.read_text().splitlines()[1:]) if t > back_wall]  # noqa: E731
                wait_for("the job's driver working after the restart", beats_after, 60)
                stop.touch()
                status = wait_for(
                    "the job to end",
                    lambda: (info := job_info(cluster, "long-job"))["status"] in ("SUCCEEDED", "FAILED", "STOPPED") and info,
                    120,
                )
                report["job_status"] = status["status"]
                report["task_result"] = task_result.read_text() if task_result.exists() else None
                report["task_runs"] = task_runs.read_text().splitlines()
                beat_times = [float(t) for t in beats.read_text().splitlines()[1:]]
                report["job_beats_during_outage"] = sum(1 for t in beat_times if killed_wall < t < back_wall)
                report["job_beats_after_restart"] = sum(1 for t in beat_times if t > back_wall)
                # The smoke test's check of the documented submission, on this cluster that has an always-on worker.
                smoke = subprocess.run(
                    [sys.executable, "-m", "scripts.smoke_test", "--address", cluster.gcs_address, "--dashboard", cluster.dashboard_url,
                     "--tier", "always-on", "--tasks", "5", "--json"],
                    cwd=ROOT, env={**os.environ, **cluster.client_env()}, capture_output=True, text=True, timeout=300,
                )
                report["smoke_test"] = {"exit": smoke.returncode, "results": json.loads(smoke.stdout or "[]"), "stderr": smoke.stderr[-2000:]}
    finally:
        redis.kill()
        redis.wait()


def main() -> int:
    """Prints the report; on failure, what was observed so far, the error and the nodes' logs."""
    root = Path(tempfile.mkdtemp(prefix="gcsft", dir="/tmp"))  # short: Ray's unix socket paths
    report: dict = {}
    try:
        scenario("--no-ft" not in sys.argv, root, report)
    except Exception:
        report["error"] = traceback.format_exc()
        report["logs"] = {
            str(path.relative_to(root)): path.read_text(errors="replace")[-3000:]
            for pattern in ("*/entrypoint.log", "*/tmp/session_latest/logs/raylet.out", "*/tmp/session_latest/logs/gcs_server.out", "redis.log")
            for path in root.glob(pattern)
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
