"""The drain of one Ray worker node before it is removed, as text (no Pulumi).

`drain_program` is a self-contained Python program (stdlib + ray) that runs
inside the node's own container (`docker exec -i ray-node python -`, so it has
the container's RAY_AUTH_MODE / RAY_AUTH_TOKEN). It embeds schedule.py to work
out, at drain time, how long the drain may take: until the window end for a
scheduled removal, the configured grace otherwise. It asks the GCS for a
PREEMPTION drain (which cannot be rejected: no new work lands on the node,
running work finishes, then the raylet exits) and waits until the node is
DEAD or the deadline passes, printing one JSON line per step.

`drain_command` is the shell line the drain-on-delete resource runs on the VM.
"""
from __future__ import annotations

import inspect
import shlex
from typing import Optional

from components.model import schedule
from components.model.config import ClusterConfig, PlacedNode
from components.model.ports import RAY, RayPorts
from components.render.ray_start import CONTAINER_NAME

# The program's exit codes besides 0 (drained, or nothing to drain) and 1 (an error).
EXIT_DEADLINE_PASSED = 2
EXIT_HEAD_UNREACHABLE = 3
# How the program's alarms (on stderr) begin: the scheduler spots them in Pulumi's output.
ALARM_PREFIX = "ray-cluster drain of"

_DRAIN = '''
# ---- The drain itself (components/drain.py); the schedule math above is components/schedule.py. ----
import argparse
import json
import os
import sys
import time
from pathlib import Path

# One connection attempt must not outlast a short deadline; attempts are retried below.
os.environ.setdefault("RAY_py_gcs_connect_timeout_s", "5")
from ray._raylet import GcsClient  # noqa: E402
from ray.core.generated import autoscaler_pb2, gcs_pb2  # noqa: E402

PREEMPTION = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION")
NOT_TASKS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def report(event, **fields):
    print(json.dumps({"event": event, "node": NODE_NAME, **fields}), flush=True)


def alarm(message):
    print(f"{ALARM_PREFIX} {NODE_NAME}: {message}", file=sys.stderr, flush=True)


class HeadUnreachable(Exception):
    pass


def from_head(call, give_up):
    """call(), retried while the head does not answer; HeadUnreachable once the deadline passes."""
    while True:
        try:
            return call()
        except Exception as error:
            if time.monotonic() >= give_up:
                raise HeadUnreachable(str(error)) from error
            report("retrying", error=str(error))
            time.sleep(min(5, max(0, give_up - time.monotonic())))


def own_node(gcs):
    """This node's id and info, if it is alive."""
    for node_id, info in gcs.get_all_node_info(timeout=10).items():
        alive = info.state == gcs_pb2.GcsNodeInfo.ALIVE
        if alive and info.node_name == NODE_NAME and info.node_manager_address == NODE_IP:
            return node_id.hex(), info
    return None, None


def is_dead(gcs, node_id):
    info = next((i for n, i in gcs.get_all_node_info(timeout=10).items() if n.hex() == node_id), None)
    return info is None or info.state == gcs_pb2.GcsNodeInfo.DEAD


def running_tasks(raylet_socket):
    """Titles (ray::<task or actor>) of the busy workers of this node's raylet."""
    processes = {}
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\\0")
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        processes[proc.name] = (ppid, argv)
    flag = f"--raylet_socket_name={raylet_socket}".encode()
    raylets = {int(pid) for pid, (_, argv) in processes.items() if flag in argv}
    titles = (argv[0].decode(errors="replace").strip() for ppid, argv in processes.values() if ppid in raylets)
    return sorted(t for t in titles if t.startswith("ray::") and not t.startswith(NOT_TASKS))


def main():
    parser = argparse.ArgumentParser(description="Drain this Ray node before its removal.")
    parser.add_argument("--now", type=datetime.datetime.fromisoformat, help="the drain's start instant (default: the clock)")
    now = parser.parse_args().now or datetime.datetime.now(datetime.timezone.utc)
    seconds = drain_deadline_seconds(WINDOW, GRACE, now)
    give_up = time.monotonic() + seconds
    report("deadline", now=now.isoformat(), seconds=seconds)

    try:
        gcs = from_head(lambda: GcsClient(address=GCS_ADDRESS), give_up)
        node_id, info = from_head(lambda: own_node(gcs), give_up)
        if node_id is None:
            report("not-alive", detail="no alive Ray node with this name and IP: nothing to drain")
            return 0
        deadline_ms = int((time.time() + max(0, give_up - time.monotonic())) * 1000)
        message = f"{NODE_NAME} is being removed (ray-cluster drain-on-delete, {seconds}s)"
        accepted, rejection = from_head(lambda: gcs.drain_node(node_id, PREEMPTION, message, deadline_ms, timeout=30), give_up)
    except HeadUnreachable as error:
        alarm(f"the head at {GCS_ADDRESS} stayed unreachable for {seconds}s ({error}); removing it WITHOUT a drain")
        report("head-unreachable", error=str(error))
        return EXIT_HEAD_UNREACHABLE
    if not accepted:
        raise RuntimeError(f"the GCS rejected the drain of {node_id}: {rejection}")
    started = time.monotonic()
    report("drain-requested", node_id=node_id, deadline_seconds=seconds)

    last_report = started
    while time.monotonic() < give_up:
        try:
            if is_dead(gcs, node_id):
                report("drained", seconds=round(time.monotonic() - started, 1))
                return 0
        except Exception as error:
            report("retrying", error=str(error))
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            report("waiting", seconds=round(last_report - started, 1), running=running_tasks(info.raylet_socket_name))
        time.sleep(1)
    running = running_tasks(info.raylet_socket_name)
    alarm(f"the deadline ({seconds}s) passed with work still running: {running}; removing it anyway")
    report("deadline-passed", running=running)
    return EXIT_DEADLINE_PASSED


sys.exit(main())
'''


def drain_program(
    cfg: ClusterConfig,
    placed: PlacedNode,
    ports: RayPorts = RAY,
    *,
    node_ip: Optional[str] = None,
    gcs_address: Optional[str] = None,
) -> str:
    """The program that drains `placed`; node_ip / gcs_address default to the config's."""
    if placed.node.head:
        raise ValueError(f"{placed.node.name} is the head: it is never drained (the cluster would go with it)")
    # schedule.py comes first: its `from __future__` import must open the file.
    settings = "\n".join(
        [
            "import datetime",
            f"WINDOW = {placed.tier.window!r}",
            f"GRACE = {cfg.ray.drain_grace!r}",
            f"NODE_NAME = {placed.node.name!r}",
            f"NODE_IP = {node_ip or str(placed.node.ip)!r}",
            f"GCS_ADDRESS = {gcs_address or f'{cfg.head.node.ip}:{ports.gcs}'!r}",
            f"EXIT_DEADLINE_PASSED, EXIT_HEAD_UNREACHABLE = {EXIT_DEADLINE_PASSED}, {EXIT_HEAD_UNREACHABLE}",
            f"ALARM_PREFIX = {ALARM_PREFIX!r}",
        ]
    )
    return f"{inspect.getsource(schedule)}\n\n# ---- Rendered for this node. ----\n{settings}\n{_DRAIN}"


def drain_command(cfg: ClusterConfig, placed: PlacedNode, **overrides) -> str:
    """The shell the drain-on-delete resource runs on the VM (over SSH) before removal."""
    program = drain_program(cfg, placed, **overrides)
    name = shlex.quote(CONTAINER_NAME)
    running = f"[ \"$(docker inspect --format '{{{{.State.Running}}}}' {name})\" = true ]"
    return f"""\
# Once drained, the raylet exits and so does the container: it must not be restarted.
docker update --restart=no {name} >/dev/null || exit 0  # no container: nothing to drain
{running} || exit 0  # stopped: nothing to drain
docker exec -i {name} python - <<'RAY_DRAIN_PROGRAM'
{program}
RAY_DRAIN_PROGRAM
status=$?
# Deadline passed or head unreachable: the program said so loudly; the removal goes ahead.
if [ "$status" -eq {EXIT_DEADLINE_PASSED} ] || [ "$status" -eq {EXIT_HEAD_UNREACHABLE} ]; then exit 0; fi
# The drained node stops its own container, which may end this exec before the program.
if [ "$status" -ne 0 ] && {running}; then exit "$status"; fi
exit 0
"""
