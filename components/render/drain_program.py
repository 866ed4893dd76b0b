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
deadline passes, printing one JSON line per step. Meanwhile it keeps the
results the node holds for drivers (`Keeper`), ends early once the node is
idle and all it holds is kept, and ends with one report line for the
scheduler (`REPORT_PREFIX`).
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
# How its final report (one JSON object on stdout) begins: the scheduler's morning report reads it.
REPORT_PREFIX = "ray-cluster drain report"
# Ray's max_direct_call_object_size (src/ray/common/ray_config_def.h): smaller results go inline to their owner.
INLINE_LIMIT_BYTES = 100 * 1024
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
    keep_tier: str  # where results are kept: the head's tier, which is never drained

    def to_json(self) -> str:
        window = self.window
        return json.dumps(
            {
                "nodeName": self.node_name,
                "nodeIp": self.node_ip,
                "gcsAddress": self.gcs_address,
                "keepTier": self.keep_tier,
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
            keep_tier=data["keepTier"],
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


class Keeper:
    """Copies the results this node holds for drivers to the always-on tier, so they outlive it.

    A driver's reference to a result whose only copy is here would make Ray re-run its task once
    the node is gone. The keeper registers that reference with its owner (the driver's address,
    from the raylets' worker stats), and a zero-CPU task on the keep tier fetches it into its
    node's object store without deserializing it. When this node goes, Ray's object recovery
    pins that copy instead of re-running the task (ObjectRecoveryManager::PinOrReconstructObject
    -> PinExistingObjectCopy, src/ray/core_worker/object_recovery_manager.cc).
    """

    def __init__(self, settings: DrainSettings, node_id: str):
        self.settings, self.node_id = settings, node_id
        self.kept: dict[bytes, int] = {}  # object id -> size
        self.refs: list[Any] = []  # held until the drain ends
        self.keep: Any = None
        self.own_worker_id = b""

    def _connect(self) -> None:
        import ray

        ray.init(address=self.settings.gcs_address, log_to_driver=False, logging_level="error")

        @ray.remote(num_cpus=0, max_retries=0, label_selector={"tier": self.settings.keep_tier})
        def keep(refs: list[Any]) -> str:
            ray.wait(refs, num_returns=len(refs), fetch_local=True)  # a copy here; nothing deserialized
            return ray.get_runtime_context().get_node_id()

        self.keep = keep
        self.own_worker_id = ray._private.worker.global_worker.worker_id

    def _driver_results(self) -> list[tuple[bytes, bytes, int]]:
        """(object id, owner address, size) of every object-store result a job's driver references."""
        import ray
        from ray._private.internal_api import node_stats
        from ray.core.generated import common_pb2

        found = []
        for node in ray.nodes():
            if not node["Alive"]:
                continue
            for worker in node_stats(node["NodeManagerAddress"], node["NodeManagerPort"]).core_workers_stats:
                if worker.worker_type != common_pb2.DRIVER or worker.worker_id == self.own_worker_id:
                    continue  # the owners are the jobs' drivers, not this drain
                owner = common_pb2.Address(
                    node_id=bytes.fromhex(node["NodeID"]), ip_address=worker.ip_address, port=worker.port, worker_id=worker.worker_id
                ).SerializeToString()
                found += [
                    (ref.object_id, owner, ref.object_size)
                    for ref in worker.object_refs
                    if ref.object_size > INLINE_LIMIT_BYTES and ref.object_id not in self.kept
                ]
        return found

    def run(self, give_up: float) -> dict[str, int]:
        """Copy what is new here; the count and bytes of the results kept so far."""
        import ray
        from ray.experimental import get_object_locations

        if self.keep is None:
            self._connect()
        core = ray._private.worker.global_worker.core_worker
        fresh = {}
        for object_id, owner, size in self._driver_results():
            ref = ray.ObjectRef(object_id, owner, "")
            core.deserialize_and_register_object_ref(ref.binary(), ray.ObjectRef.nil(), owner, b"")
            fresh[ref] = size
        if fresh:
            located = get_object_locations(list(fresh), timeout_ms=10000)
            here = [ref for ref in fresh if self.node_id in located.get(ref, {}).get("node_ids", [])]
            if here:
                ray.get(self.keep.remote(here), timeout=max(1, give_up - time.monotonic()))
                located = get_object_locations(here, timeout_ms=10000)
                for ref in here:
                    if set(located.get(ref, {}).get("node_ids", [])) - {self.node_id}:
                        self.kept[ref.binary()] = fresh[ref]
                        self.refs.append(ref)
        return {"count": len(self.kept), "bytes": sum(self.kept.values())}


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

    def final_report(self, drained: bool, at_start: dict, running: list[str], held: Optional[dict], kept: Optional[dict]) -> None:
        """The line the scheduler's morning report reads (scripts/ops/night_report.py).

        A node that drained (by itself, or idle with everything it holds kept elsewhere) loses no
        result. Otherwise `held` (None: unknown) is what its object store still held for owners, not
        kept, at the removal.
        """
        lost = {"count": 0, "bytes": 0, "owners": {}} if drained else held
        print(REPORT_PREFIX + " " + json.dumps({
            "node": self.settings.node_name,
            "drained": drained,
            "tasksFinished": len([t for t in at_start["running"] if t not in running]),
            "tasksCut": len(running),
            "objectsKept": kept,
            "objectsLost": lost,
        }), flush=True)

    def census(self, gcs: Any, info: Any, running_now: list[str]) -> dict:
        """What the node holds now; objects unknown (None) when the raylets do not answer."""
        try:
            held: Optional[dict] = held_objects(gcs, info)
        except Exception as error:
            self.report("objects-unknown", error=str(error))
            held = None
        return {"running": running_now, "objects": held}

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
            self.final_report(False, {"running": []}, [], None, None)
            return EXIT_HEAD_UNREACHABLE
        if not accepted:
            raise RuntimeError(f"the GCS rejected the drain of {node_id}: {rejection}")
        started = time.monotonic()
        at_start = self.census(gcs, info, running_tasks(info.raylet_socket_name))
        self.report("drain-requested", node_id=node_id, deadline_seconds=seconds, **at_start)

        keeper = Keeper(settings, node_id)
        kept = {"count": 0, "bytes": 0}
        last_report = started - 5
        while time.monotonic() < give_up:
            try:
                if is_dead(gcs, node_id):
                    self.report("drained", seconds=round(time.monotonic() - started, 1), kept=kept)
                    self.final_report(True, at_start, [], None, kept)
                    return 0
            except Exception as error:
                self.report("retrying", error=str(error))
            if time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                try:
                    kept = keeper.run(give_up)
                except Exception as error:
                    self.report("keep-failed", error=str(error))
                state = self.census(gcs, info, running_tasks(info.raylet_socket_name))
                self.report("waiting", seconds=round(last_report - started, 1), kept=kept, **state)
                held = state["objects"]
                # Idle, and what it still holds is kept on the always-on tier: the raylet would wait for
                # the owners to let go, the removal need not.
                if not state["running"] and held is not None and kept["count"] and held["count"] <= kept["count"]:
                    self.report("kept", seconds=round(time.monotonic() - started, 1), kept=kept)
                    self.final_report(True, at_start, [], None, kept)
                    return 0
            time.sleep(1)
        state = self.census(gcs, info, running_tasks(info.raylet_socket_name))
        running, held = state["running"], state["objects"]
        if held is not None:  # what is kept has a copy elsewhere: only the rest is lost
            held = {**held, "count": max(0, held["count"] - kept["count"]), "bytes": max(0, held["bytes"] - kept["bytes"])}
        # Say exactly what keeps the node: tasks, and results its object store holds for their owners
        # (a raylet does not exit while it holds a primary copy that is still referenced).
        what = [f"{len(running)} task(s) still running: {running}" if running else "no task running"]
        if held is None:
            what.append("its object store did not answer")
        elif held["count"]:
            what.append(
                f"{held['count']} result(s) ({held['bytes'] / 2**20:.1f} MiB) still held in its object store, not fetched by "
                f"their owners (jobs {sorted(held['owners'])}): lost with the node, Ray re-runs their tasks when asked"
            )
        self.alarm(f"the deadline ({seconds}s) passed: {'; '.join(what)}; removing it anyway")
        self.report("deadline-passed", kept=kept, **state)
        self.final_report(False, at_start, running, held, kept)
        return EXIT_DEADLINE_PASSED


def is_dead(gcs: Any, node_id: str) -> bool:
    from ray.core.generated import gcs_pb2

    info = next((i for n, i in gcs.get_all_node_info(timeout=10).items() if n.hex() == node_id), None)
    return info is None or info.state == gcs_pb2.GcsNodeInfo.DEAD


def held_objects(gcs: Any, info: Any) -> dict:
    """The primary copies this node's object store holds (results some owner still references):
    count, bytes, and the jobs whose processes reference object-store results (anywhere)."""
    from ray._private.internal_api import node_stats
    from ray.core.generated import gcs_pb2

    owners: dict[str, int] = {}
    for node in gcs.get_all_node_info(timeout=10).values():
        if node.state != gcs_pb2.GcsNodeInfo.ALIVE:
            continue
        for worker in node_stats(node.node_manager_address, node.node_manager_port).core_workers_stats:
            for ref in {r.object_id: r for r in worker.object_refs}.values():
                if ref.object_size > INLINE_LIMIT_BYTES:  # inline results live with their owner, not here
                    job = ref.object_id[20:24].hex()  # ObjectID = TaskID (..., JobID) + index
                    owners[job] = owners.get(job, 0) + 1
    store = node_stats(info.node_manager_address, info.node_manager_port, include_memory_info=False).store_stats
    return {"count": store.num_object_store_primary_copies, "bytes": store.object_store_bytes_primary_copy, "owners": owners}


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
