"""Running and pending Ray tasks per tier (the seeds' `make monitor`).

    RAY_AUTH_TOKEN=... RAY_TLS_CA_CERT=... python -m scripts.monitor_tasks --address https://HEAD:8443 [--json]

`--address` is the stack output `dashboardUrl` (the dashboard's TLS proxy,
verified against RAY_TLS_CA_CERT), or the GCS address `rayAddress` (Ray's
mutual TLS: RAY_USE_TLS and a client certificate too, README "Encrypted Ray
traffic").
A running task counts for the tier of the node it runs on. A pending task counts
for the tier it asks for (`label_selector={"tier": ...}` or the custom resource
`tier:<name>`), else for its node's tier once it has one, else "(any)". Pending
work for a tier with no live node is the sign that it waits for the night.

Exit codes: 0 shown, 1 the cluster could not be read.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Optional

from scripts.ops import ray_state

RUNNING_STATES = {"RUNNING", "RUNNING_IN_RAY_GET", "RUNNING_IN_RAY_WAIT"}
DONE_STATES = {"FINISHED", "FAILED"}
ANY_TIER = "(any)"
TIER_RESOURCE_PREFIX = "tier:"  # the custom resource each node also carries


def requested_tier(task) -> Optional[str]:
    selected = (task.label_selector or {}).get(ray_state.TIER_LABEL)
    if selected:
        return selected
    resources = task.required_resources or {}
    return next((r.removeprefix(TIER_RESOURCE_PREFIX) for r in resources if r.startswith(TIER_RESOURCE_PREFIX)), None)


def tasks_per_tier(nodes: list[ray_state.RayNodeView], tasks: list) -> dict[str, dict[str, int]]:
    """{tier: {"nodes", "running", "pending"}} with every live tier listed, busy or not."""
    tier_of_node = {n.node_id: n.tier or ANY_TIER for n in nodes}
    counts: dict[str, Counter] = {tier: Counter() for tier in sorted(set(tier_of_node.values()))}
    for node in nodes:
        counts[tier_of_node[node.node_id]]["nodes"] += 1
    for task in tasks:
        if task.state in DONE_STATES:
            continue
        node_tier = tier_of_node.get(task.node_id) if task.node_id else None
        if task.state in RUNNING_STATES:
            tier, column = node_tier or ANY_TIER, "running"
        else:
            tier, column = requested_tier(task) or node_tier or ANY_TIER, "pending"
        counts.setdefault(tier, Counter())[column] += 1
    return {tier: {column: c[column] for column in ("nodes", "running", "pending")} for tier, c in counts.items()}


def read_cluster(address: str) -> dict[str, dict[str, int]]:
    ray_state.use_credentials_from_env()
    from ray.util.state import list_tasks

    tasks = list_tasks(
        address=address,
        filters=[("state", "!=", "FINISHED"), ("state", "!=", "FAILED"), ("type", "!=", "DRIVER_TASK")],
        detail=True,  # label_selector and required_resources are detail columns
        limit=10_000,  # the API server's maximum
        raise_on_missing_output=False,
    )
    return tasks_per_tier(ray_state.alive_nodes(address), tasks)


def table(per_tier: dict[str, dict[str, int]]) -> str:
    rows = [("TIER", "NODES", "RUNNING", "PENDING")] + [
        (tier, str(c["nodes"]), str(c["running"]), str(c["pending"])) for tier, c in per_tier.items()
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{r[0]:<{width}}  {r[1]:>5}  {r[2]:>7}  {r[3]:>7}" for r in rows)


def root_cause(error: BaseException) -> BaseException:
    """The first error in the chain: Ray's state API wraps a TLS or connection failure in a
    generic "Failed to connect to API server"."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return error


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.monitor_tasks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), required="RAY_ADDRESS" not in os.environ,
                        help="dashboard URL (https://HEAD:8443) or GCS address (HEAD:6379)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args(argv)
    try:
        per_tier = read_cluster(args.address)
    except Exception as error:  # connection refused, authentication, TLS, a timeout: all say "cannot read"
        cause = root_cause(error)
        because = f" (because: {type(cause).__name__}: {cause})" if cause is not error else ""
        print(f"cannot read the cluster at {args.address}: {error}{because}", file=sys.stderr)
        return 1
    print(json.dumps(per_tier, indent=2) if args.json else table(per_tier))
    return 0


if __name__ == "__main__":
    sys.exit(main())
