"""The rehearsal's steps, and everything they start (`scripts/rehearse.py` is its command line).

`with Rehearsal(...) as r: r.run()`: the nodes from their rendered entrypoints,
the smoke test on every tier, each scheduled tier's night by the real schedule
(the evening's bring-up, work, the morning's drain with the rendered drain
program, the node deleted, the next evening), the alerts Prometheus raised.
Leaving the block stops it all and checks that nothing is left.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from components.model.config import ClusterConfig
from components.model.schedule import Occurrence
from components.model.stack import PROJECT_DIR
from components.render import drain, ray_start, tls
from components.render import monitoring_config as mc
from components.render.ray_start import RayNodeSettings
from scripts.ops import local_drain, ray_state
from scripts.ops.local_cluster import LOOPBACK, LocalCluster, driver, kill_node_processes, listening_ports, node_ports
from scripts.ops.rehearsal_logs import LocalLogShipping
from scripts.ops.rehearsal_monitoring import LocalMonitoring
from scripts.ops.rehearsal_report import classify
from scripts.ops.rehearsal_setup import (
    NIGHT_TASK_SECONDS, SMOKE_TASKS, STEP_TIMEOUT_S, PortsBusy, StepFailed, every_tier_on, local_settings, machine_share,
    next_window, rehearsal_nodes, rehearsed_windows, say, wait_until, wall_clock,
)


def process_group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Rehearsal:
    """The steps, and everything they start: `with Rehearsal(...) as r: r.run()` stops it all on the way out."""

    def __init__(self, cfg: ClusterConfig, stack_file: Path, port_offset: int, schedule: bool):
        self.cfg = cfg
        self.windows = rehearsed_windows(cfg) if schedule else {}
        self.placed = {p.node.name: p for p in rehearsal_nodes(cfg)}
        self.stack = contextlib.ExitStack()
        # Short: Ray's unix socket paths under each node's temp dir are limited.
        self.work = Path(tempfile.mkdtemp(prefix="rehearse-", dir="/tmp"))
        self.stack.callback(shutil.rmtree, self.work, ignore_errors=True)
        self.share = machine_share(len(self.placed))
        self.settings = {s.node_name: s for s in local_settings(cfg, list(self.placed.values()), self.work, port_offset, self.share)}
        self.monitoring = LocalMonitoring(cfg, self.work)
        self.logs = LocalLogShipping(cfg, self.work, port_offset)
        head = next(iter(self.settings.values()))
        # The head's dashboard queries Prometheus (the rendered variables, pointed here); no Grafana runs here.
        head_env = {"RAY_PROMETHEUS_HOST": self.monitoring.url, "RAY_PROMETHEUS_NAME": mc.ray_dashboard_env(cfg)["RAY_PROMETHEUS_NAME"]}
        self.cluster = LocalCluster([head], extra_env={head.node_name: head_env}, progress=say)
        self.processes: list[dict] = []  # every process group started: {"name", "pid"}
        self.foreign_ports: set[int] = set()  # in use before the rehearsal began: not its own
        self.summary: dict[str, Any] = {
            "ok": False,
            "interrupted": False,
            "stack": str(stack_file),
            "workDir": str(self.work),
            "rayDashboard": self.cluster.dashboard_url,
            "rayAddress": self.cluster.gcs_address,
            "rayClientAddress": f"ray://{LOOPBACK}:{head.ports.client}",
            "prometheus": None,
            "nodes": [
                {
                    "name": name, "tier": p.tier_name, "head": p.node.head, "ports": dataclasses.asdict(self.settings[name].ports),
                    "cpus": self.settings[name].num_cpus, "objectStoreBytes": self.settings[name].object_store_bytes,
                }
                for name, p in self.placed.items()
            ],
            "ports": sorted(set().union(*map(node_ports, self.settings.values()))),
            "smoke": [],
            "schedule": [],
            "scheduleSkipped": [
                {"tier": name, "reason": f"override {tier.override} holds it"}
                for name, tier in cfg.tiers.items()
                if schedule and tier.window and not tier.scheduled_window
            ],
            "alerts": [],
        }

    def __enter__(self) -> "Rehearsal":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # Cleanup must not be cut short: a second Ctrl-C would leave processes behind.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        say("cleaning up: stopping every process the rehearsal started")
        with contextlib.suppress(Exception):  # Prometheus may be what failed
            self.summary["alerts"] = classify(self.monitoring.alerts_seen(patient=exc_type is None), self.cfg, self.placed, self.windows)
        self.stack.close()
        self.summary["processes"] = self.processes
        self.summary["cleanup"] = self.leftovers()
        if any(self.summary["cleanup"].values()):
            self.summary["ok"] = False

    def leftovers(self) -> dict[str, list]:
        """What is left of the processes and ports the rehearsal used: nothing, when all went well."""
        def groups_left() -> list[dict]:
            return [p for p in self.processes if process_group_exists(p["pid"])]

        with contextlib.suppress(StepFailed):  # killed processes take a moment to be reaped
            wait_until("the stopped processes to be gone", lambda: not groups_left(), 10, every=0.2)
        still_listening = (set(self.summary["ports"]) & listening_ports()) - self.foreign_ports
        return {"processGroupsLeft": groups_left(), "portsStillListening": sorted(still_listening)}

    # -- the steps --

    def run(self) -> None:
        self.foreign_ports = set(self.summary["ports"]) & listening_ports()
        if self.foreign_ports:
            raise PortsBusy(sorted(self.foreign_ports))
        if not self.windows:
            # Every tier runs: as the program renders it with every tier on.
            self.monitoring.show(every_tier_on(self.cfg), self.cfg.instant())
        for s in self.settings.values():  # the head first
            if s.tier_name not in self.windows:
                self.start(s)
        # Prometheus starts once the nodes that run all day are up, so its first scrapes find them.
        self.monitoring.start(self.stack)
        self.processes += [{"name": name, "pid": process.pid} for name, process in self.monitoring.processes.items()]
        self.summary["ports"] = sorted(set(self.summary["ports"]) | self.monitoring.ports)
        self.summary["prometheus"] = self.monitoring.url if self.monitoring.processes else None
        self.announce_up()

        nights = {tier: next_window(window, self.cfg.instant()) for tier, window in self.windows.items()}
        evenings = {tier: self.evening(tier, night) for tier, night in nights.items()}
        self.smoke()
        if nights:
            with driver(self.cluster) as ray:
                for tier, night in nights.items():
                    self.summary["schedule"].append(self.night(ray, tier, night, evenings[tier]))
        self.summary["ok"] = all(r["ok"] for r in self.summary["smoke"] + self.summary["schedule"])

    def start(self, s: RayNodeSettings) -> float:
        """Start one node from its rendered entrypoint; the seconds it took to join."""
        say(f"starting {s.node_name} ({'head, ' if s.is_head else ''}tier {s.tier_name}) from its rendered entrypoint; "
            "waiting for it to join Ray ...")
        began = time.monotonic()
        try:
            if s.is_head:
                self.stack.enter_context(self.cluster)
            else:
                self.cluster.start_node(s)
        finally:
            if s.node_name in self.cluster.nodes:
                self.processes.append({"name": s.node_name, "pid": self.cluster.nodes[s.node_name].process.pid})
        self.monitoring.running(s.node_name, s.ports)
        joined = round(time.monotonic() - began, 1)
        up = sum(n.process.poll() is None for n in self.cluster.nodes.values())
        say(f"{s.node_name} joined after {joined}s ({up} node(s) up)")
        return joined

    def announce_up(self) -> None:
        s = self.summary
        print("\n".join([
            f"rehearsal cluster up ({', '.join(self.cluster.nodes)}), each node "
            f"{self.share.cpus} CPUs and a {self.share.object_store_bytes // 2**20} MiB object store (this machine's share):",
            f"  Ray dashboard:  {s['rayDashboard']}",
            f"  Prometheus:     {s['prometheus'] or 'not running'}",
            f"  Ray address:    {s['rayAddress']}   Ray Client: {s['rayClientAddress']}",
            f"  token env:      export RAY_AUTH_MODE=token RAY_AUTH_TOKEN={self.cluster.token}",
            "  TLS env:        export " + " ".join(f"{k}={v}" for k, v in tls.tls_env(self.cluster.head.tls_dir).items()),
            f"  then e.g.:      python -m scripts.monitor_tasks --address {s['rayDashboard']}",
        ]), file=sys.stderr, flush=True)

    def smoke(self) -> None:
        """The post-deploy smoke test as an operator runs it on a node, on every tier of the config.

        At the GCS address: the Ray Client's per-session servers take ports from
        a fixed range (23000-23999) that another Ray on this machine may hold.
        """
        tiers = list(self.cfg.tiers)
        say(f"smoke test: {SMOKE_TASKS} tasks per tier ({', '.join(tiers)}) ...")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"RAY_AUTH_TOKEN": self.cluster.token}
        env |= tls.tls_env(self.cluster.head.tls_dir)  # on a node: its certificate (Ray's gRPC is mutual TLS)
        argv = [sys.executable, "-m", "scripts.smoke_test", "--address", self.cluster.gcs_address, "--tasks", str(SMOKE_TASKS), "--json"]
        argv += [arg for tier in tiers for arg in ("--tier", tier)]
        result = subprocess.run(argv, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600)
        try:
            self.summary["smoke"] = json.loads(result.stdout)
        except json.JSONDecodeError:
            raise StepFailed(f"the smoke test exited {result.returncode} without a result:\n{result.stderr[-3000:]}")
        for r in self.summary["smoke"]:
            detail = f"{r['tasks']} tasks, {r['tasksPerSecond']} tasks/s" if "tasks" in r else r.get("error", "")
            say(f"smoke test {'PASS' if r['ok'] else 'FAIL'} {r['tier']}: {detail}")

    def evening(self, tier: str, night: Occurrence) -> dict:
        """A bring-up (the window start minus its lead): the schedule wants the tier, so its node comes up
        (the evening's `pulumi up`); it must have joined by the window's start."""
        at = night.bring_up
        live = self.cfg.tiers[tier].live_at(at)
        say(f"{wall_clock(at, self.windows[tier].timezone)}: the schedule says tier {tier} is {'live' if live else 'NOT live'}")
        if not live:
            raise StepFailed(f"at its window start {at.isoformat()} the schedule does not want tier {tier}")
        s = self.first_node(tier)
        joined = self.start(s)
        self.monitoring.show(self.cfg, at)
        lead = (night.start - night.bring_up).total_seconds()
        say(f"{s.node_name} joined {joined:.0f}s after the bring-up; the window starts {lead:.0f}s after it "
            f"(on the VMs: clone, boot and image pull too, README 'Time to capacity')")
        return {"at": at.isoformat(), "live": live, "joinSeconds": joined, "leadSeconds": lead, "readyByStart": joined <= lead}

    def night(self, ray, tier: str, night: Occurrence, evening: dict) -> dict:
        """Work at night, the morning drain, the VM deleted, the next evening: no work lost."""
        s = self.first_node(tier)
        report: dict[str, Any] = {
            "tier": tier, "node": s.node_name, "timezone": self.windows[tier].timezone, "ok": False,
            "windowStart": night.start.isoformat(), "drainStart": night.drain_start.isoformat(), "windowEnd": night.end.isoformat(),
            "evening": evening,
        }

        @ray.remote(num_cpus=0)
        class Executions:
            def __init__(self):
                self.log = []

            def started(self, task: str) -> None:
                self.log.append(task)

            def get(self) -> list[str]:
                return self.log

        # On the head's tier, which is never drained.
        executions = Executions.options(label_selector={ray_state.TIER_LABEL: self.cfg.head.tier_name}).remote()

        @ray.remote(num_cpus=1, max_retries=3)
        def work(task: str, seconds: float, log) -> str:
            ray.get(log.started.remote(task))
            print(f"night task {task} started", flush=True)  # to the worker's log file, shipped that night
            time.sleep(seconds)
            return task

        def outcome(ref) -> Optional[str]:
            """The task's name if it succeeded."""
            try:
                return ray.get(ref)
            except ray.exceptions.RayError:
                return None

        no_shipping = self.logs.start(self.stack, s)
        # Twice what the node runs at once: half of the night's work is still
        # waiting when the drain starts, and must wait for the next window.
        runs_at_once = s.num_cpus
        tasks = [f"{tier}-{i}" for i in range(2 * runs_at_once)]
        refs = [
            work.options(label_selector={ray_state.TIER_LABEL: tier}).remote(task, NIGHT_TASK_SECONDS[i % len(NIGHT_TASK_SECONDS)], executions)
            for i, task in enumerate(tasks)
        ]
        say(f"night: {len(tasks)} retriable tasks of {min(NIGHT_TASK_SECONDS)}-{max(NIGHT_TASK_SECONDS)}s "
            f"with label_selector tier={tier}; {s.node_name} runs {runs_at_once} at once")
        wait_until(f"the first tasks to start on {s.node_name}",
                   lambda: len(ray.get(executions.get.remote())) >= runs_at_once, STEP_TIMEOUT_S, every=0.5)

        report["morning"] = self.morning(tier, night.drain_start)
        # The node is gone: what it logged that night is read from the monitoring host's archive.
        shipped = [] if no_shipping else wait_until(
            "a night task's log line in the archive", lambda: [line for line in self.logs.lines() if "night task " in line],
            STEP_TIMEOUT_S, every=0.5,
        )
        report["logs"] = {"archivedTaskLines": len(shipped), "example": shipped[0] if shipped else None, "notShipped": no_shipping}
        say(f"from the archive, after {s.node_name} is gone: {shipped[0] if shipped else no_shipping}")
        done, waiting = ray.wait(refs, num_returns=len(refs), timeout=0)
        say(f"{len(done)} task(s) finished before the drain ended; {len(waiting)} wait for tier {tier}'s next window")
        report["nextEvening"] = self.evening(tier, next_window(self.windows[tier], night.start))
        say(f"waiting for the {len(waiting)} task(s) that waited ...")
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=STEP_TIMEOUT_S)
        finished = [task for task in map(outcome, ready) if task]
        log = ray.get(executions.get.remote())
        report["tasks"] = {
            "submitted": len(tasks),
            "finished": len(finished),
            "lost": len(tasks) - len(finished),  # failed, or never done
            "reExecuted": len(log) - len(set(log)),
            "waitedForNextWindow": len(waiting),
        }
        drained = report["morning"]["drain"]
        report["ok"] = (
            drained["exitCode"] == 0
            and drained["entrypointExit"] not in (0, None)
            and evening["readyByStart"]
            and bool(report["logs"]["archivedTaskLines"])
            and report["tasks"]["lost"] == report["tasks"]["reExecuted"] == 0
        )
        say(f"tier {tier}: {len(finished)}/{len(tasks)} tasks finished, {report['tasks']['lost']} lost, "
            f"{report['tasks']['reExecuted']} re-executed, {len(waiting)} waited for the next window")
        return report

    def morning(self, tier: str, at: dt.datetime) -> dict:
        """A drain start: the schedule no longer wants the tier: its node is drained, then deleted."""
        live = self.cfg.tiers[tier].live_at(at)
        s = self.first_node(tier)
        say(f"{wall_clock(at, self.windows[tier].timezone)}: the schedule says tier {tier} is "
            f"{'STILL live' if live else 'not live'}: drain {s.node_name}, then delete it")
        if live:
            raise StepFailed(f"at its drain start {at.isoformat()} the schedule still wants tier {tier}")
        self.monitoring.show(self.cfg, at)
        drained = self.drain(s, at)
        node = self.cluster.nodes[s.node_name]
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.process.wait(timeout=30)
        drained["entrypointExit"] = node.process.poll()
        kill_node_processes(node)  # whatever is left of the "VM"
        self.monitoring.running(s.node_name, None)
        wait_until(f"Ray to see {s.node_name} dead", lambda: self.cluster.node_info(s.node_name)["state"] == "DEAD", STEP_TIMEOUT_S)
        if drained["entrypointExit"] in (0, None):
            say(f"{s.node_name} deleted; its entrypoint had NOT exited non-zero by itself ({drained['entrypointExit']}): "
                "Docker would keep a drained node's container running")
        else:
            say(f"{s.node_name} deleted; its entrypoint had exited {drained['entrypointExit']} by itself, "
                "so Docker would not keep a drained node's container running")
        return {"at": at.isoformat(), "live": live, "drain": drained}

    def drain(self, s: RayNodeSettings, now: dt.datetime) -> dict:
        """The rendered drain program, delivered and run as drain-on-delete runs it in the node's container."""
        # Ray advertises the machine's address for a loopback --node-ip-address: the drain looks for that one.
        node_ip = self.cluster.node_info(s.node_name)["node_ip"]
        settings = drain.drain_settings(self.cfg, self.placed[s.node_name], node_ip=node_ip, gcs_address=self.cluster.gcs_address)
        root = local_drain.deliver(drain.drain_files(settings), self.work / f"drain-{s.node_name}")
        log = self.work / f"drain-{s.node_name}.log"
        steps = []
        with open(log, "w") as errors:
            process = local_drain.start(
                # the node's own certificate last, as in its container
                root, "--now", now.isoformat(), env={**os.environ, **self.cluster.client_env(), **ray_start.ray_env(s)}, stderr=errors
            )
        try:
            for line in process.stdout:
                if line.startswith("{"):
                    steps.append(json.loads(line))
                    self.say_drain_step(s.node_name, steps[-1])
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if process.returncode != 0:
            say(f"the drain of {s.node_name} exited {process.returncode}: {log.read_text().strip()[-2000:]}")
        return {
            "exitCode": process.returncode,
            "deadlineSeconds": next((step["seconds"] for step in steps if step["event"] == "deadline"), None),
            "seconds": next((step["seconds"] for step in steps if step["event"] == "drained"), None),
        }

    @staticmethod
    def say_drain_step(node: str, step: dict) -> None:
        if step["event"] == "deadline":
            say(f"draining {node}: deadline {step['seconds']}s, the time left until the window end")
        elif step["event"] == "drain-requested":
            say(f"draining {node}: the GCS accepted the drain; no new work lands on {node}")
        elif step["event"] == "waiting":
            say(f"draining {node}: {len(step['running'])} task(s) still running after {step['seconds']}s")
        elif step["event"] == "drained":
            say(f"{node} drained after {step['seconds']}s")
        else:
            say(f"draining {node}: {step['event']} {step.get('detail') or step.get('error') or ''}")

    def first_node(self, tier: str) -> RayNodeSettings:
        return next(s for s in self.settings.values() if s.tier_name == tier)
