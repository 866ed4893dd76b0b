"""Post-deploy smoke test: every live tier runs work, on its own nodes only.

    RAY_AUTH_TOKEN=... RAY_USE_TLS=1 RAY_TLS_CA_CERT=... RAY_TLS_SERVER_CERT=... RAY_TLS_SERVER_KEY=... \
        python -m scripts.smoke_test --address ray://HEAD:10001 [--tier NAME ...] [--tasks 50] [--json]
        [--dashboard https://HEAD:8443]

`--address` is anything `ray.init` takes: from an admin machine the stack output
`rayClientAddress` (with the operators' client certificate, README "Encrypted
Ray traffic"), on a cluster node the GCS address `rayAddress` (with the node's
certificate: a driver there serves gRPC too). For each
tier (default: every tier with a live node) it submits N small tasks with
`label_selector={"tier": tier}`, checks that each ran on a node of that tier,
and reports the throughput in tasks/s. With `--dashboard` it also submits a job
the documented way for long jobs (scripts/ops/jobs.py) and checks that its
driver ran on an always-on worker, where a head restart cannot kill it.

Exit codes: 0 every tier passed, 1 a tier failed (no live node, a task ran
elsewhere, or the tasks did not finish in time), 2 the cluster could not be reached
(also: no token, or no certificate from the cluster's CA).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Optional

from scripts.ops import jobs, ray_state

JOB_CHECK = "long-job driver"
PRINT_DRIVER_NODE = "import ray; ray.init(); print('driver-node', ray.get_runtime_context().get_node_id())"


def run_tier(ray, tier: str, node_ids: set[str], tasks: int, timeout: float) -> dict:
    """Submit `tasks` label-selected tasks to `tier` and check where they ran."""
    if not node_ids:
        return {"tier": tier, "ok": False, "error": "no live node has this tier"}

    @ray.remote(num_cpus=1, label_selector={ray_state.TIER_LABEL: tier})
    def where() -> str:
        sum(range(10_000))  # a little real work
        return ray.get_runtime_context().get_node_id()

    started = time.monotonic()
    refs = [where.remote() for _ in range(tasks)]
    try:
        ran_on = ray.get(refs, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        for ref in refs:
            ray.cancel(ref, force=True)
        return {"tier": tier, "ok": False, "error": f"{tasks} tasks did not finish within {timeout:g}s"}
    elapsed = time.monotonic() - started
    elsewhere = sorted(set(ran_on) - node_ids)
    result = {
        "tier": tier,
        "ok": not elsewhere,
        "tasks": tasks,
        "nodesUsed": len(set(ran_on)),
        "seconds": round(elapsed, 3),
        "tasksPerSecond": round(tasks / elapsed, 1),
    }
    if elsewhere:
        result["error"] = f"tasks ran on nodes outside the tier: {elsewhere}"
    return result


def run_long_job_check(dashboard: str, labels_by_node: dict[str, dict], timeout: float) -> dict:
    """Submit a tiny job as long jobs should be submitted; check its driver ran on an always-on worker."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(dashboard)
    job = jobs.submit(client, f"python -c {shlex.quote(PRINT_DRIVER_NODE)}")
    give_up = time.monotonic() + timeout
    while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if time.monotonic() > give_up:
            client.stop_job(job)
            return {"tier": JOB_CHECK, "ok": False, "error": f"job {job} still {status} after {timeout:g}s: is there a live always-on worker?"}
        time.sleep(1)
    words = client.get_job_logs(job).split()
    node = words[words.index("driver-node") + 1] if "driver-node" in words else None
    labels = labels_by_node.get(node, {})
    ok = status == JobStatus.SUCCEEDED and all(labels.get(k) == v for k, v in jobs.ALWAYS_ON_WORKER.items())
    result = {"tier": JOB_CHECK, "ok": ok, "job": job, "driverNode": node, "driverLabels": {k: labels.get(k) for k in jobs.ALWAYS_ON_WORKER}}
    if not ok:
        result["error"] = f"job {job} {status}, driver on {node} labelled {labels}"
    return result


def nodes_per_tier(ray) -> dict[str, set[str]]:
    per_tier: dict[str, set[str]] = {}
    for node in ray.nodes():
        tier = node["Labels"].get(ray_state.TIER_LABEL)
        if node["Alive"] and tier:
            per_tier.setdefault(tier, set()).add(node["NodeID"])
    return per_tier


def connect(ray, address: str, attempts: int = 3) -> None:
    """ray.init, retried when the Ray Client's per-session server fails to start.

    The head's client proxy starts one server process per session; when that
    start fails (Ray 2.60 can even trip over the dying process itself) the
    session gets "Initialization failure from server", and a new session gets
    a fresh server. Anything else (no token, wrong address) fails at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, log_to_driver=False, logging_level="warning")
            return
        except ConnectionError as error:
            if "Initialization failure from server" not in str(error) or attempt == attempts:
                raise
            print(f"the Ray Client server failed to start a session (attempt {attempt}/{attempts}), retrying: "
                  f"{str(error).splitlines()[-1]}", file=sys.stderr)
            time.sleep(2 * attempt)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.smoke_test", description=__doc__.split("\n\n")[0])
    # Through scripts/with_cluster_access.py the Ray Client address is there; RAY_ADDRESS otherwise.
    address = os.environ.get(ray_state.CLIENT_ADDRESS_ENV) or os.environ.get("RAY_ADDRESS")
    parser.add_argument("--address", default=address, required=address is None,
                        help=f"ray://HEAD:10001 (Ray Client) or HEAD:6379 (GCS); default ${ray_state.CLIENT_ADDRESS_ENV}, else $RAY_ADDRESS")
    parser.add_argument("--tier", action="append", help="a tier to test (repeatable); default: every live tier")
    parser.add_argument("--tasks", type=int, default=50, help="tasks per tier")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per tier")
    parser.add_argument("--dashboard", help="https://HEAD:8443 (dashboardUrl): also check that a long job's driver avoids the head")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    ray_state.use_credentials_from_env()
    import ray

    try:
        connect(ray, args.address)
    except Exception as error:
        print(f"cannot reach the cluster at {args.address}: {error}", file=sys.stderr)
        return 2
    try:
        live = nodes_per_tier(ray)
        results = [run_tier(ray, tier, live.get(tier, set()), args.tasks, args.timeout) for tier in args.tier or sorted(live)]
        labels_by_node = {node["NodeID"]: node["Labels"] for node in ray.nodes() if node["Alive"]}
    finally:
        ray.shutdown()
    if args.dashboard:
        results.append(run_long_job_check(args.dashboard, labels_by_node, args.timeout))

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            detail = f"{r['tasks']} tasks in {r['seconds']}s, {r['tasksPerSecond']} tasks/s on {r['nodesUsed']} node(s)" if "tasks" in r else ""
            print(f"{'PASS' if r['ok'] else 'FAIL'}  {r['tier']:<16} {detail} {r.get('error', '')}".rstrip())
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
