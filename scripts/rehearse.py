"""Local rehearsal: the cluster's runtime on this machine, from what ships to the VMs.

    python -m scripts.rehearse --stack prod [--project-dir DIR] [--schedule] [--keep-running] [--json]

No vSphere, no Docker. The stack's config is read as the program reads it
(`read_stack_file`), and each node runs the very entrypoint script, labels,
resources and environment rendered for its container, with a fresh token.
Only what one machine forces is changed (`local_cluster.localize`): one node
per tier (the head counts for its tier), addresses 127.0.0.1 (Ray advertises
the machine's own address instead, and its gRPC servers listen on every
interface, as on the VMs), ports moved by --port-offset, and CPUs and object
store scaled to this machine (its cores and 5% of its available memory, shared
out; at least 2 CPUs, never more than the VM's). Debian's Prometheus runs the rendered prometheus.yml,
alert rules and targets (pointed at the local nodes, listening on 127.0.0.1),
and node-exporter serves the rendered expected-nodes file, as on the
monitoring host.

Steps: start the nodes; run the post-deploy smoke test (`scripts.smoke_test`)
on every tier of the config. With --schedule, each scheduled tier then lives
through a night by the real schedule: at its next window start the schedule
says live and its node starts (the evening's `pulumi up`); work is submitted
to the tier; at the drain start the schedule says not live and the rendered
drain program drains the node with `--now <drain start>` (its deadline: the
real time left until the window end); the node is deleted; at the next window
start it comes back and the work that waited for it runs. Last, the alerts
Prometheus raised, each marked expected when the rehearsal explains it.

Progress goes to stderr, the summary to stdout (--json: one JSON document).
Every process started here is stopped on success, failure, Ctrl-C or SIGTERM.
--keep-running keeps everything up after the steps until Ctrl-C, which then
ends the rehearsal normally.

Exit codes: 0 every step passed, 1 a step failed or something was left
running, 2 bad config or busy ports, 130 interrupted before the steps were done.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from zoneinfo import ZoneInfo

from components.render import drain, ray_start
from components.render import monitoring_config as mc
from components.model.config import ClusterConfig, ConfigError, PlacedNode
from components.render.monitoring_config import Endpoint
from components.model.ports import MonitoringPorts, RayPorts
from components.render.ray_start import RayNodeSettings
from components.model.schedule import DailyWindow, Occurrence
from components.model.errors import CONFIG_ERROR_EXIT
from components.model.stack import PROJECT_DIR, read_stack_file
from scripts.cli import config_error_exit
from scripts.ops import local_drain, ray_state
from scripts.ops.local_cluster import LOOPBACK, Heartbeat, LocalCluster, driver, kill_node_processes, localize

OK, FAILED, UNUSABLE, INTERRUPTED = 0, 1, CONFIG_ERROR_EXIT, 130

PORT_OFFSET = 6000  # the shipped Ray ports moved by this; node i's by i * NODE_PORT_STEP more
NODE_PORT_STEP = 10
WORKER_PORTS = (42000, 43999)  # shared out between the nodes
MIN_CPUS_PER_NODE = 2
OBJECT_STORE_SHARE = 0.05  # of this machine's available memory, shared out between the nodes
MIN_OBJECT_STORE_BYTES = 100 * 2**20
SMOKE_TASKS = 20  # per tier
NIGHT_TASK_SECONDS = (6, 7, 8)
PROMETHEUS_WAIT_S = 60
STEP_TIMEOUT_S = 120


class StepFailed(Exception):
    """A step did not do what production needs; the message says what."""


class PortsBusy(Exception):
    def __init__(self, ports: list[int]):
        shown = ", ".join(map(str, ports[:10])) + (" ..." if len(ports) > 10 else "")
        super().__init__(f"ports the rehearsal needs are in use ({shown}): another rehearsal or Ray on this machine? Try another --port-offset")


def say(message: str) -> None:
    """One progress line for the person watching (stderr)."""
    print(f"[rehearse {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(what: str, probe: Callable[[], Any], timeout: float, every: float = 1) -> Any:
    """probe() until it answers, saying so on long waits."""
    heartbeat = Heartbeat(what, timeout, say)
    while not (result := probe()):
        if time.monotonic() > heartbeat.started + timeout:
            raise StepFailed(f"waited {timeout:g}s for {what}")
        heartbeat.tick()
        time.sleep(every)
    return result


# ---- What runs here ----


def rehearsal_nodes(cfg: ClusterConfig) -> list[PlacedNode]:
    """The head, then the first node of every other tier."""
    return [cfg.head] + [
        next(p for p in cfg.placed_nodes if p.tier_name == tier) for tier in cfg.tiers if tier != cfg.head.tier_name
    ]


@dataclasses.dataclass(frozen=True)
class MachineShare:
    """What each rehearsal node gets of this machine."""

    cpus: int
    object_store_bytes: int


def machine_share(node_count: int) -> MachineShare:
    """This machine's cores and a slice of its available memory, shared out between the nodes."""
    cpus = max(MIN_CPUS_PER_NODE, (os.cpu_count() or 1) // node_count)
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return MachineShare(cpus, max(MIN_OBJECT_STORE_BYTES, int(available * OBJECT_STORE_SHARE / node_count)))


def local_settings(cfg: ClusterConfig, nodes: list[PlacedNode], root: Path, port_offset: int, share: MachineShare) -> list[RayNodeSettings]:
    """The rendered settings, localized, with this machine's share (never more than the VM's)."""
    rendered = [ray_start.node_settings(cfg, p) for p in nodes]
    localized = localize(rendered, root, port_offset, NODE_PORT_STEP, WORKER_PORTS)
    shared = []
    for s, vm in zip(localized, rendered):
        store = min(share.object_store_bytes, vm.object_store_bytes)
        shared.append(dataclasses.replace(s, num_cpus=min(share.cpus, vm.num_cpus), object_store_bytes=store, shm_bytes=store))
    return shared


def node_ports(s: RayNodeSettings) -> set[int]:
    """Every port a node may listen on, its worker range included."""
    fields = {f.name: getattr(s.ports, f.name) for f in dataclasses.fields(RayPorts)}
    return {port for name, port in fields.items() if name not in ("min_worker", "max_worker")} | set(
        range(fields["min_worker"], fields["max_worker"] + 1)
    )


def listening_ports() -> set[int]:
    """Every TCP port something on this machine listens on, on any address."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local_address, state = line.split()[1], line.split()[3]
                if state == "0A":  # TCP_LISTEN
                    ports.add(int(local_address.rsplit(":", 1)[1], 16))
    return ports


def process_group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def rehearsed_windows(cfg: ClusterConfig) -> dict[str, DailyWindow]:
    """The tiers whose schedule comes and goes; a tier held by an override has no evening or morning."""
    return {name: window for name, tier in cfg.tiers.items() if (window := tier.scheduled_window)}


def next_window(window: DailyWindow, after: dt.datetime) -> Occurrence:
    """The first occurrence of `window` that starts after `after`."""
    local_date = after.astimezone(ZoneInfo(window.timezone)).date()
    return next(w for w in (window.occurrence(local_date + dt.timedelta(days=d)) for d in range(3)) if w.start > after)


def every_tier_on(cfg: ClusterConfig) -> ClusterConfig:
    """The config with every tier's override `on`: what the program renders while every tier runs."""
    return cfg.model_copy(update={"tiers": {name: tier.model_copy(update={"override": "on"}) for name, tier in cfg.tiers.items()}})


def unix_seconds(rfc3339_utc: str) -> float:
    """Prometheus' timestamps (UTC, up to nanoseconds) as Unix seconds."""
    whole, _, fraction = rfc3339_utc.removesuffix("Z").partition(".")
    return dt.datetime.fromisoformat(whole).replace(tzinfo=dt.timezone.utc).timestamp() + float(f"0.{fraction or 0}")


def wall_clock(instant: dt.datetime, timezone: str) -> str:
    return instant.astimezone(ZoneInfo(timezone)).strftime(f"%a %H:%M {timezone}")


# ---- Prometheus and node-exporter ----


@contextlib.contextmanager
def background(command: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """A process in its own process group for the block; the group is stopped afterwards."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
                break


class LocalMonitoring:
    """Prometheus with the rendered config, rules and targets; node-exporter with the expected-nodes file.

    The targets are what the program writes for a config at an instant, each
    node's Ray ports remapped to its local node. Nodes that do not run here get
    a port that refuses every connection: their targets are down, as a missing
    VM's would be, and no scrape ever leaves this machine.
    """

    def __init__(self, cfg: ClusterConfig, work: Path):
        self.cfg, self.work = cfg, work
        self.config_dir = work / "prometheus"
        self.prometheus_port, self.node_exporter_port = free_port(), free_port()
        self.url = f"http://{LOOPBACK}:{self.prometheus_port}"
        self.installed = bool(shutil.which("prometheus"))
        self.processes: dict[str, subprocess.Popen] = {}
        self.local_ray: dict[str, RayPorts] = {}  # node name -> ports, for nodes whose Ray runs here
        self.view = (cfg, cfg.instant())  # the config and instant the targets are written for
        self.refused_port: Optional[int] = None
        self.target_count = 0  # in the files last written
        self.watching_since = time.time()  # alerts before this are not the rehearsal's

    def start(self, stack: contextlib.ExitStack) -> None:
        """Lay out the rendered files, start node-exporter and Prometheus; closing `stack` stops them."""
        if not self.installed:
            say("prometheus is not installed (scripts/install.sh installs it): the rehearsal runs without monitoring")
            return
        refuser = stack.enter_context(socket.socket())  # bound, never listening
        refuser.bind((LOOPBACK, 0))
        self.refused_port = refuser.getsockname()[1]
        textfile_dir = self.work / "textfile"
        files = {
            self.config_dir / mc.PROMETHEUS_YML: mc.prometheus_yml(),
            **{self.config_dir / relative: text for relative, text in mc.rule_files().items()},
            textfile_dir / mc.EXPECTED_NODES_FILE: mc.expected_nodes_metrics(self.cfg, self.cfg.instant()),
        }
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self._write_targets()
        if shutil.which("prometheus-node-exporter"):
            self.processes["node-exporter"] = stack.enter_context(background(
                ["prometheus-node-exporter", f"--web.listen-address={LOOPBACK}:{self.node_exporter_port}",
                 f"--collector.textfile.directory={textfile_dir}"],
                self.work / "node-exporter.log",
            ))
        else:
            say("prometheus-node-exporter is not installed: nothing serves the expected-nodes file, the node alerts are blind")
        self.processes["prometheus"] = stack.enter_context(background(
            ["prometheus", f"--config.file={self.config_dir / mc.PROMETHEUS_YML}",
             f"--storage.tsdb.path={self.work / 'prometheus-data'}", f"--web.listen-address={LOOPBACK}:{self.prometheus_port}"],
            self.work / "prometheus.log",
        ))
        wait_until("Prometheus to be ready", self._ready, PROMETHEUS_WAIT_S)
        # Until then the rules run on no data: absent() is true and every node looks missing.
        wait_until("Prometheus's first scrape of every target", self._every_target_scraped, PROMETHEUS_WAIT_S, every=0.5)
        self.watching_since = time.time()

    @property
    def ports(self) -> set[int]:
        return {self.prometheus_port, self.node_exporter_port} if self.processes else set()

    def running(self, node_name: str, ports: Optional[RayPorts]) -> None:
        """A node's Ray now listens at `ports` (None: it is gone)."""
        if ports:
            self.local_ray[node_name] = ports
        else:
            self.local_ray.pop(node_name, None)
        self._write_targets()

    def show(self, cfg: ClusterConfig, at: dt.datetime) -> None:
        """The targets the program writes for `cfg` at instant `at` (as a tier change rewrites them)."""
        self.view = (cfg, at)
        self._write_targets()

    def _write_targets(self) -> None:
        if self.refused_port is None:
            return  # not started
        cfg, at = self.view
        refused = self.refused_port
        nowhere = Endpoint(
            LOOPBACK,
            RayPorts(**{f.name: refused for f in dataclasses.fields(RayPorts)}),
            MonitoringPorts(**{f.name: refused for f in dataclasses.fields(MonitoringPorts)}),
        )
        served = dataclasses.replace(nowhere.monitoring, prometheus=self.prometheus_port, node_exporter=self.node_exporter_port)
        endpoints = {
            p.node.name: Endpoint(
                LOOPBACK,
                self.local_ray.get(p.node.name, nowhere.ray),
                served if p.node.name == cfg.monitoring_host.node.name else nowhere.monitoring,
            )
            for p in cfg.placed_nodes
        }
        files = mc.scrape_targets(cfg, at, endpoints)
        self.target_count = sum(len(json.loads(text)) for text in files.values())
        for relative, text in files.items():
            path = self.config_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".tmp").write_text(text)
            path.with_suffix(".tmp").replace(path)  # Prometheus re-reads a file replaced whole

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def _every_target_scraped(self) -> bool:
        targets = self.api("targets", state="active")["activeTargets"]
        return len(targets) == self.target_count and all(t["health"] != "unknown" for t in targets)

    def api(self, path: str, **params: str) -> Any:
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=10) as response:
            return json.load(response)["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def node_rules_evaluated(self) -> bool:
        """Whether a whole evaluation of the rules has run on the expected-nodes data."""
        recorded = self.query("timestamp(raycluster:node_expected)")
        if not recorded:
            return False
        # A group's lastEvaluation is the wall-clock start of its last finished evaluation,
        # never before the timestamp that evaluation gives its samples.
        return all(
            unix_seconds(group["lastEvaluation"]) >= max(float(r["value"][1]) for r in recorded)
            for group in self.api("rules")["groups"]
        )

    def alerts_seen(self, patient: bool) -> list[dict]:
        """Every alert pending or firing during the rehearsal.

        ALERTS since Prometheus first scraped every target, and /api/v1/alerts
        for now: a fresh Prometheus writes ALERTS only from its third evaluation
        (it restores `for` state after two), while the alerts API shows active
        alerts from the first.
        `patient`: first wait until the rules have run on node-exporter's data.
        """
        if not self.processes:
            return []
        if patient and "node-exporter" in self.processes:
            say("waiting for Prometheus to evaluate the alert rules on the rehearsal's metrics ...")
            with contextlib.suppress(StepFailed):
                wait_until("the node rules", self.node_rules_evaluated, PROMETHEUS_WAIT_S, every=2)
        seen: dict[tuple, str] = {}

        def note(labels: dict, state: str) -> None:
            key = (labels["alertname"], labels.get("node", ""), labels.get("tier", ""), labels.get("job", ""))
            seen[key] = "firing" if "firing" in (state, seen.get(key)) else "pending"

        span = max(1, int(time.time() - self.watching_since))  # rounded down: no evaluation from before
        for series in self.query(f"max_over_time(ALERTS[{span}s])"):
            note(series["metric"], series["metric"]["alertstate"])
        for alert in self.api("alerts")["alerts"]:
            note(alert["labels"], alert["state"])
        return [{"alert": name, "state": state, "node": node, "tier": tier, "job": job} for (name, node, tier, job), state in sorted(seen.items())]


# ---- The rehearsal ----


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
            self.summary["alerts"] = self.classify(self.monitoring.alerts_seen(patient=exc_type is None))
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
        evenings = {tier: self.evening(tier, night.start) for tier, night in nights.items()}
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

    def evening(self, tier: str, at: dt.datetime) -> dict:
        """A window start: the schedule wants the tier, so its node comes up (the evening's `pulumi up`)."""
        live = self.cfg.tiers[tier].live_at(at)
        say(f"{wall_clock(at, self.windows[tier].timezone)}: the schedule says tier {tier} is {'live' if live else 'NOT live'}")
        if not live:
            raise StepFailed(f"at its window start {at.isoformat()} the schedule does not want tier {tier}")
        s = self.first_node(tier)
        joined = self.start(s)
        self.monitoring.show(self.cfg, at)
        return {"at": at.isoformat(), "live": live, "joinSeconds": joined}

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
            time.sleep(seconds)
            return task

        def outcome(ref) -> Optional[str]:
            """The task's name if it succeeded."""
            try:
                return ray.get(ref)
            except ray.exceptions.RayError:
                return None

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
        done, waiting = ray.wait(refs, num_returns=len(refs), timeout=0)
        say(f"{len(done)} task(s) finished before the drain ended; {len(waiting)} wait for tier {tier}'s next window")
        report["nextEvening"] = self.evening(tier, next_window(self.windows[tier], night.start).start)
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
                root, "--now", now.isoformat(), env={**os.environ, **ray_start.ray_env(s), **self.cluster.client_env()}, stderr=errors
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

    def classify(self, alerts: list[dict]) -> list[dict]:
        """Mark each alert expected when the rehearsal itself explains it."""
        monitor = self.cfg.monitoring_host.node.name
        for alert in alerts:
            node, job = alert["node"], alert["job"]
            why = None
            if alert["alert"] in ("RayNodeMissing", "ScrapeTargetDown"):
                if node and node not in self.placed:
                    why = "the rehearsal runs one node per tier"
                elif alert["tier"] in self.windows:
                    why = "the rehearsal brings its tier up and down at the schedule's instants; the rules read the real clock"
                elif job == "cadvisor":
                    why = "cAdvisor does not run in the rehearsal"
                elif job == "node-exporter" and node != monitor:
                    why = "one node-exporter runs here, the monitoring host's"
            alert["expected"] = why is not None
            alert["why"] = why or "not explained by the rehearsal: look at it"
        return alerts


# ---- Summary ----


def text_summary(summary: dict) -> str:
    verdict = "PASSED" if summary["ok"] else "INTERRUPTED" if summary.get("interrupted") else "FAILED"
    lines = [f"Rehearsal of {summary['stack']}: {verdict}" + (f" ({summary['error']})" if summary.get("error") else "")]
    lines.append("  nodes: " + ", ".join(f"{n['name']} ({n['tier']}{', head' if n['head'] else ''})" for n in summary["nodes"]))
    for r in summary["smoke"]:
        detail = f"{r['tasks']} tasks, {r['tasksPerSecond']} tasks/s" if "tasks" in r else r.get("error", "")
        lines.append(f"  smoke test {'PASS' if r['ok'] else 'FAIL'}  {r['tier']:<16} {detail}")
    for r in summary["schedule"]:
        zone = ZoneInfo(r["timezone"])
        start, drain_start, end = (dt.datetime.fromisoformat(r[key]).astimezone(zone) for key in ("windowStart", "drainStart", "windowEnd"))
        drained, tasks = r["morning"]["drain"], r["tasks"]
        lines += [
            f"  schedule   {'PASS' if r['ok'] else 'FAIL'}  {r['tier']:<16} window {start:%a %H:%M} to {end:%a %H:%M} {r['timezone']}, "
            f"drained from {drain_start:%H:%M}",
            f"    drain of {r['node']}: exit {drained['exitCode']}, {drained['seconds']}s of a {drained['deadlineSeconds']}s deadline",
            f"    tasks: {tasks['finished']}/{tasks['submitted']} finished, {tasks['lost']} lost, {tasks['reExecuted']} re-executed, "
            f"{tasks['waitedForNextWindow']} waited for the next window",
        ]
    for skipped in summary["scheduleSkipped"]:
        lines.append(f"  schedule   SKIP  {skipped['tier']:<16} {skipped['reason']}")
    for a in summary["alerts"]:
        where = " ".join(filter(None, (a["node"], a["job"])))
        lines.append(f"  alert {a['state']:<7} {a['alert']} {where}: {'expected' if a['expected'] else 'UNEXPECTED'}, {a['why']}")
    cleanup = summary["cleanup"]
    left = cleanup["processGroupsLeft"] or cleanup["portsStillListening"]
    lines.append(f"  cleanup: {'LEFT BEHIND ' + json.dumps(cleanup) if left else 'every process stopped, no port left listening'}")
    return "\n".join(lines)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.rehearse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="reads Pulumi.<stack>.yaml")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help="where Pulumi.<stack>.yaml is (default: this checkout)")
    parser.add_argument("--schedule", action="store_true", help="also rehearse each scheduled tier's evening bring-up and morning drain")
    parser.add_argument("--keep-running", action="store_true", help="after the steps, keep everything running until Ctrl-C")
    parser.add_argument("--port-offset", type=int, default=PORT_OFFSET, help="move the shipped Ray ports by this (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    args = parser.parse_args(argv)

    try:
        cfg = read_stack_file(args.stack, args.project_dir)
    except ConfigError as error:
        return config_error_exit(error)
    except OSError as error:
        print(f"cannot read stack {args.stack!r} from {args.project_dir}: {error}", file=sys.stderr)
        return UNUSABLE
    # Set explicitly: a shell starts background processes with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    rehearsal = Rehearsal(cfg, args.project_dir / f"Pulumi.{args.stack}.yaml", args.port_offset, args.schedule)
    if args.schedule and not rehearsal.windows:
        say("--schedule: no tier comes and goes on a schedule (none has a window without an override)")
    summary, code = rehearsal.summary, None
    try:
        with rehearsal:
            rehearsal.run()
            code = OK if summary["ok"] else FAILED
            say(f"every step done: {'PASSED' if summary['ok'] else 'FAILED'}")
            if args.keep_running:
                say("still running (--keep-running): press Ctrl-C to stop it and clean up")
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        if code is None:  # the steps were not done; after them (--keep-running) Ctrl-C is the way out
            summary["interrupted"], code = True, INTERRUPTED
    except PortsBusy as error:
        summary["error"], code = str(error), UNUSABLE
    except Exception as error:  # any failed step: reported in the summary, after the cleanup
        summary["error"], code = f"{type(error).__name__}: {error}", FAILED
    if code == OK and not summary["ok"]:  # something was left behind
        code = FAILED
    summary["exitCode"] = code
    print(json.dumps(summary, indent=2) if args.json else text_summary(summary), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
