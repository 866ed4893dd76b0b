"""Drain this Ray node before its removal: the program drain-on-delete runs in the node's container.

Standard library and ray only, plus the schedule math it imports from
components/model/schedule.py: `components/render/drain.py` ships both modules,
at these package paths, with a JSON settings file to every worker VM, and its
drain command runs, inside the node's container (which has RAY_AUTH_MODE /
RAY_AUTH_TOKEN),

    python -m components.render.drain_program settings.json [--now ISO]

It works out how long the drain may take (until the window end for a scheduled
removal, the configured grace otherwise), asks the GCS for a PREEMPTION drain
(which cannot be rejected: no new work lands on the node, running work
finishes, then the raylet exits) and waits until the node is DEAD or the
deadline passes, printing one JSON line per step.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from components.model.schedule import DailyWindow, drain_deadline_seconds

# Exit codes besides 0 (drained, or nothing to drain) and 1 (an error).
EXIT_DEADLINE_PASSED = 2
EXIT_HEAD_UNREACHABLE = 3
# How the alarms (on stderr) begin: the scheduler spots them in Pulumi's output.
ALARM_PREFIX = "ray-cluster drain of"
# Worker process titles that are not tasks.
NOT_TASKS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")

T = TypeVar("T")


@dataclass(frozen=True)
class DrainSettings:
    """What one node's drain needs to know; rendered per node as JSON."""

    node_name: str
    node_ip: str
    gcs_address: str
    grace: dt.timedelta
    window: Optional[DailyWindow]

    def to_json(self) -> str:
        window = self.window
        return json.dumps(
            {
                "nodeName": self.node_name,
                "nodeIp": self.node_ip,
                "gcsAddress": self.gcs_address,
                "graceSeconds": self.grace.total_seconds(),
                "window": None
                if window is None
                else {
                    "start": window.start.isoformat(),
                    "end": window.end.isoformat(),
                    "timezone": window.timezone,
                    "drainLeadSeconds": window.drain_lead.total_seconds(),
                },
            },
            indent=2,
            sort_keys=True,
        ) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DrainSettings:
        data = json.loads(text)
        window = data["window"]
        return cls(
            node_name=data["nodeName"],
            node_ip=data["nodeIp"],
            gcs_address=data["gcsAddress"],
            grace=dt.timedelta(seconds=data["graceSeconds"]),
            window=None
            if window is None
            else DailyWindow(
                start=dt.time.fromisoformat(window["start"]),
                end=dt.time.fromisoformat(window["end"]),
                timezone=window["timezone"],
                drain_lead=dt.timedelta(seconds=window["drainLeadSeconds"]),
            ),
        )


class HeadUnreachable(Exception):
    pass


class Drain:
    def __init__(self, settings: DrainSettings):
        self.settings = settings

    def report(self, event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, "node": self.settings.node_name, **fields}), flush=True)

    def alarm(self, message: str) -> None:
        print(f"{ALARM_PREFIX} {self.settings.node_name}: {message}", file=sys.stderr, flush=True)

    def from_head(self, call: Callable[[], T], give_up: float) -> T:
        """call(), retried while the head does not answer; HeadUnreachable once the deadline passes."""
        while True:
            try:
                return call()
            except Exception as error:
                if time.monotonic() >= give_up:
                    raise HeadUnreachable(str(error)) from error
                self.report("retrying", error=str(error))
                time.sleep(min(5, max(0, give_up - time.monotonic())))

    def own_node(self, gcs: Any) -> tuple[Optional[str], Any]:
        """This node's id and info, if it is alive."""
        from ray.core.generated import gcs_pb2

        for node_id, info in gcs.get_all_node_info(timeout=10).items():
            alive = info.state == gcs_pb2.GcsNodeInfo.ALIVE
            if alive and info.node_name == self.settings.node_name and info.node_manager_address == self.settings.node_ip:
                return node_id.hex(), info
        return None, None

    def run(self, now: dt.datetime) -> int:
        # One connection attempt must not outlast a short deadline; attempts are retried.
        os.environ.setdefault("RAY_py_gcs_connect_timeout_s", "5")
        from ray._raylet import GcsClient  # type: ignore[attr-defined]  # missing from Ray's _raylet.pyi
        from ray.core.generated import autoscaler_pb2

        settings = self.settings
        seconds = drain_deadline_seconds(settings.window, settings.grace, now)
        give_up = time.monotonic() + seconds
        self.report("deadline", now=now.isoformat(), seconds=seconds)

        try:
            gcs = self.from_head(lambda: GcsClient(address=settings.gcs_address), give_up)
            node_id, info = self.from_head(lambda: self.own_node(gcs), give_up)
            if node_id is None:
                self.report("not-alive", detail="no alive Ray node with this name and IP: nothing to drain")
                return 0
            deadline_ms = int((time.time() + max(0, give_up - time.monotonic())) * 1000)
            message = f"{settings.node_name} is being removed (ray-cluster drain-on-delete, {seconds}s)"
            preemption = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION")
            accepted, rejection = self.from_head(
                lambda: gcs.drain_node(node_id, preemption, message, deadline_ms, timeout=30), give_up
            )
        except HeadUnreachable as error:
            self.alarm(
                f"the head at {settings.gcs_address} stayed unreachable for {seconds}s ({error}); removing it WITHOUT a drain"
            )
            self.report("head-unreachable", error=str(error))
            return EXIT_HEAD_UNREACHABLE
        if not accepted:
            raise RuntimeError(f"the GCS rejected the drain of {node_id}: {rejection}")
        started = time.monotonic()
        self.report("drain-requested", node_id=node_id, deadline_seconds=seconds)

        last_report = started
        while time.monotonic() < give_up:
            try:
                if is_dead(gcs, node_id):
                    self.report("drained", seconds=round(time.monotonic() - started, 1))
                    return 0
            except Exception as error:
                self.report("retrying", error=str(error))
            if time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                self.report("waiting", seconds=round(last_report - started, 1), running=running_tasks(info.raylet_socket_name))
            time.sleep(1)
        running = running_tasks(info.raylet_socket_name)
        self.alarm(f"the deadline ({seconds}s) passed with work still running: {running}; removing it anyway")
        self.report("deadline-passed", running=running)
        return EXIT_DEADLINE_PASSED


def is_dead(gcs: Any, node_id: str) -> bool:
    from ray.core.generated import gcs_pb2

    info = next((i for n, i in gcs.get_all_node_info(timeout=10).items() if n.hex() == node_id), None)
    return info is None or info.state == gcs_pb2.GcsNodeInfo.DEAD


def running_tasks(raylet_socket: str) -> list[str]:
    """Titles (ray::<task or actor>) of the busy workers of this node's raylet."""
    processes: dict[str, tuple[int, list[bytes]]] = {}
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        processes[proc.name] = (ppid, argv)
    flag = f"--raylet_socket_name={raylet_socket}".encode()
    raylets = {int(pid) for pid, (_, argv) in processes.items() if flag in argv}
    titles = (argv[0].decode(errors="replace").strip() for ppid, argv in processes.values() if ppid in raylets)
    return sorted(t for t in titles if t.startswith("ray::") and not t.startswith(NOT_TASKS))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Drain this Ray node before its removal.")
    parser.add_argument("settings", type=Path, help="the node's JSON settings")
    parser.add_argument("--now", type=dt.datetime.fromisoformat, help="the drain's start instant (default: the clock)")
    args = parser.parse_args(argv)
    settings = DrainSettings.from_json(args.settings.read_text())
    return Drain(settings).run(args.now or dt.datetime.now(dt.timezone.utc))


if __name__ == "__main__":
    sys.exit(main())
