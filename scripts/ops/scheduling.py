"""The scheduler's core: what the schedule wants, driving the stack, whether the nodes joined.

`scripts/scheduler.py` is its command line (and documents the exit codes below).
Everything that reaches outside the process goes through `Tools`, so tests pass stand-ins.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from zoneinfo import ZoneInfo

from pulumi import automation as auto

from components.model.config import NAMESPACE, ClusterConfig
from components.model.errors import CONFIG_ERROR_EXIT
from components.model.stack import AT_ENVIRONMENT
from components.render import drain
from components.render.drain_over_ssh import drain_over_ssh
from scripts.ops import credentials, night_report, ray_state
from scripts.ops.ssh_agent import AgentError, cluster_agent

# USAGE is every tool's exit code for a bad config (components/model/errors.py).
OK, FAILED, USAGE, OVERLAP, STACK_LOCKED, NOT_JOINED, DRAIN_INCOMPLETE, CHECKOUT, SMOKE_FAILED = 0, 1, CONFIG_ERROR_EXIT, 3, 4, 5, 6, 7, 8
SECRET_MASK = "[secret]"

SSH_KEY = f"{NAMESPACE}:sshPrivateKey"
LOCK_ATTEMPTS = 5  # a locked stack is retried after 15, 30, 60, 120 s
LOCK_FIRST_DELAY_S = 15.0
JOIN_TIMEOUT_S = 600.0
JOIN_POLL_S = 10.0


class Failure(Exception):
    """Ends a command: an exit code, and the event that explains it."""

    def __init__(self, code: int, event: str, **fields: Any):
        super().__init__(event)
        self.code, self.event, self.fields = code, event, fields


class JsonLog:
    """One JSON object per line: {"ts", "level", "event", ...fields}."""

    def __init__(self, stream=None):
        self.stream = stream  # None: whatever sys.stderr is when a line is written

    def __call__(self, level: str, event: str, **fields: Any) -> None:
        record = {"ts": dt.datetime.now(dt.timezone.utc).isoformat(), "level": level, "event": event, **fields}
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(json.dumps(record, default=str) + "\n")
        stream.flush()


def open_stack(stack_name: str, work_dir: Path):
    """The real stack: the Pulumi program in `work_dir`, driven by the local Pulumi CLI."""
    cli_env = auto.LocalWorkspaceOptions(env_vars=credentials.pulumi_cli_env())
    return auto.select_stack(stack_name, work_dir=str(work_dir), opts=cli_env)


@dataclass
class Tools:
    """Everything that reaches outside the process; tests pass stand-ins."""

    open_stack: Callable[[str, Path], Any] = open_stack
    probe: Callable[[str], list[ray_state.RayNodeView]] = ray_state.alive_nodes
    # stdout carries only the JSON report: the command's own output goes to stderr.
    run: Callable[[list[str]], int] = lambda argv: subprocess.run(argv, stdout=sys.stderr).returncode
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)
    log: JsonLog = field(default_factory=JsonLog)
    agent: Callable[[str], Any] = cluster_agent  # the cluster key in a private ssh-agent
    checkout: Callable[[Path, str], Optional[str]] = lambda work_dir, branch: checkout_problem(work_dir, branch)
    # A command whose exit code and stdout are wanted (the smoke test, the log count over SSH).
    capture: Callable[[list[str]], tuple[int, str]] = lambda argv: _captured(argv)


def _captured(argv: list[str]) -> tuple[int, str]:
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    return done.returncode, done.stdout


# ---------------------------------------------------------------- what the schedule wants


def desired_state(cfg: ClusterConfig, at: dt.datetime) -> dict:
    tiers = {}
    for name, tier in cfg.tiers.items():
        window = tier.scheduled_window
        tiers[name] = {
            "live": tier.live_at(at),
            "override": tier.override,
            "nextTransition": (
                window.next_transition(at).astimezone(ZoneInfo(window.timezone)).isoformat()
                if window is not None
                else None
            ),
        }
    transitions = [t["nextTransition"] for t in tiers.values() if t["nextTransition"]]
    return {
        "at": at.isoformat(),
        "liveTiers": cfg.live_tiers(at),
        "nodes": [{"name": p.node.name, "tier": p.tier_name, "ip": str(p.node.ip)} for p in cfg.live_nodes(at)],
        "tiers": tiers,
        "nextTransition": min(transitions, key=dt.datetime.fromisoformat) if transitions else None,
    }


def deployed_state(stack) -> Optional[dict]:
    """The stack outputs the last update left (None: never deployed), secrets masked.

    The Automation API reads outputs with --show-secrets; the reports end up in
    the journal and in log files, so the Ray token and Grafana password stay out.
    """
    outputs = {key: SECRET_MASK if output.secret else output.value for key, output in stack.outputs().items()}
    return outputs or None


def difference(wanted: dict, deployed: Optional[dict]) -> dict:
    have = deployed or {"liveTiers": [], "nodes": []}
    want_nodes = {n["name"] for n in wanted["nodes"]}
    have_nodes = {n["name"] for n in have["nodes"]}
    return {
        "bringUp": [t for t in wanted["liveTiers"] if t not in have["liveTiers"]],
        "remove": [t for t in have["liveTiers"] if t not in wanted["liveTiers"]],
        "addNodes": sorted(want_nodes - have_nodes),
        "removeNodes": sorted(have_nodes - want_nodes),
    }


def resource_changes(op_counts: Optional[dict]) -> dict[str, int]:
    """An engine change summary without the unchanged resources ({} means no changes)."""
    # Typed as OpType keys, but the engine's JSON gives plain strings ("create", "same").
    counts = {getattr(op, "value", op): n for op, n in (op_counts or {}).items()}
    return {op: n for op, n in sorted(counts.items()) if op != "same" and n}


# ---------------------------------------------------------------- driving the stack


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """One scheduler run per working copy at a time; a second one is refused, not queued."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Failure(OVERLAP, "overlap", lock=str(path), message="another scheduler run holds the lock; this one did nothing")
        yield  # closing the file releases the lock


def checkout_problem(work_dir: Path, branch: str) -> Optional[str]:
    """Why `work_dir` is not what `branch` on origin says (None: it is): the scheduler deploys
    the repository, never a host's local edits or a checkout that missed a merge."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(work_dir), *args], capture_output=True, text=True, timeout=60)

    dirty = git("status", "--porcelain", "--untracked-files=no")
    if dirty.returncode != 0:
        return f"not a git checkout: {dirty.stderr.strip()}"
    if dirty.stdout.strip():
        return f"local changes to tracked files: {' '.join(line[3:] for line in dirty.stdout.splitlines())}"
    fetched = git("fetch", "--quiet", "origin", branch)
    if fetched.returncode != 0:
        return f"cannot fetch origin/{branch}: {fetched.stderr.strip()}"
    head, wanted = git("rev-parse", "HEAD").stdout.strip(), git("rev-parse", "FETCH_HEAD").stdout.strip()
    if head != wanted:
        return f"stale: HEAD is {head[:12]}, origin/{branch} is {wanted[:12]}: run `git pull --ff-only`"
    return None


@contextmanager
def program_environment(stack, at: dt.datetime, tools: Tools) -> Iterator[None]:
    """What the Pulumi CLI that the Automation API starts sees during refresh/preview/up: the
    instant (RAY_CLUSTER_AT; nothing is written into Pulumi.<stack>.yaml, so a killed run
    leaves no pin behind), the cluster key in a private agent, no Docker overrides."""
    try:
        key = stack.get_config(SSH_KEY).value
    except (auto.CommandError, KeyError) as error:
        raise Failure(USAGE, "no_ssh_key", key=SSH_KEY, error=str(error).strip(), message="set it with `pulumi config set --secret`")
    saved = dict(os.environ)
    try:
        with tools.agent(key) as env:
            os.environ.clear()
            os.environ.update(env)
            os.environ[AT_ENVIRONMENT] = at.isoformat()
            tools.log("info", "instant", variable=AT_ENVIRONMENT, at=at.isoformat())
            yield
    except AgentError as error:
        raise Failure(FAILED, "ssh_agent_failed", error=str(error))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def with_retries(operation: str, call: Callable[[], Any], tools: Tools) -> Any:
    """`call()`, retried with exponential backoff while another update holds the stack."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            return call()
        except auto.ConcurrentUpdateError as error:
            if attempt == LOCK_ATTEMPTS:
                raise Failure(STACK_LOCKED, "stack_locked", operation=operation, attempts=attempt, error=str(error).strip())
            delay = LOCK_FIRST_DELAY_S * 2 ** (attempt - 1)
            tools.log("warning", "stack_busy", operation=operation, attempt=attempt, retry_in_s=delay)
            tools.sleep(delay)


def pulumi_step(operation: str, call: Callable[[], Any], tools: Tools) -> Any:
    tools.log("info", "step", operation=operation)
    try:
        return with_retries(operation, call, tools)
    except auto.CommandError as error:
        raise Failure(FAILED, "pulumi_failed", operation=operation, error=str(error).strip())


def pulumi_lines(
    tools: Tools, drain_alarms: Optional[list[str]] = None, drain_reports: Optional[dict[str, dict]] = None
) -> Callable[[str], None]:
    """Pulumi's output as log lines; a drain's alarm (components/render/drain.py) is an error, and collected;
    a drain's report (scripts/ops/night_report.py) is collected per node."""
    def log(line: str) -> None:
        line = line.rstrip()
        report = night_report.parse_drain_report(line)
        if report is not None:
            tools.log("info", "drain_report", **report)
            if drain_reports is not None:
                drain_reports[report["node"]] = report
        elif drain.ALARM_PREFIX in line:
            tools.log("error", "drain_incomplete", line=line)
            if drain_alarms is not None:
                drain_alarms.append(line[line.index(drain.ALARM_PREFIX):])
        else:
            tools.log("info", "pulumi", line=line)
    return log


def preview_changes(stack, tools: Tools) -> dict[str, int]:
    """What an up would change now, against refreshed state; writes nothing."""
    result = pulumi_step("preview", lambda: stack.preview(refresh=True, on_output=pulumi_lines(tools)), tools)
    return resource_changes(result.change_summary)


def plan(stack, cfg: ClusterConfig, at: dt.datetime, tools: Tools) -> dict:
    """The schedule's answer; with a stack (None: no Pulumi here), also what is and what would change."""
    wanted = desired_state(cfg, at)
    if stack is None:
        return {"desired": wanted, "deployed": None, "difference": None, "changes": None}
    deployed = deployed_state(stack)
    with program_environment(stack, at, tools):
        changes = preview_changes(stack, tools)
    return {"desired": wanted, "deployed": deployed, "difference": difference(wanted, deployed), "changes": changes}


def apply(
    stack, cfg: ClusterConfig, at: dt.datetime, dry_run: bool, tools: Tools,
    join_timeout: float = JOIN_TIMEOUT_S, if_due: bool = False,
) -> tuple[int, dict]:
    wanted = desired_state(cfg, at)
    before = deployed_state(stack)
    report: dict[str, Any] = {"at": at.isoformat(), "dryRun": dry_run, "difference": difference(wanted, before)}
    if if_due and before is not None and not any(report["difference"].values()):
        # The periodic run (every few minutes): no refresh, no up, no SSH when the schedule has nothing due.
        tools.log("info", "nothing_due", at=at.isoformat())
        report["changes"] = {}
        return OK, report
    drain_alarms: list[str] = []
    drain_reports: dict[str, dict] = {}
    with program_environment(stack, at, tools):
        if dry_run:
            report["changes"] = preview_changes(stack, tools)
        else:
            pulumi_step("refresh", lambda: stack.refresh(on_output=pulumi_lines(tools)), tools)
            result = pulumi_step("up", lambda: stack.up(on_output=pulumi_lines(tools, drain_alarms, drain_reports)), tools)
            report["changes"] = resource_changes(result.summary.resource_changes)
            if report["difference"]["removeNodes"]:
                # The morning's edge: per node, what its drain saw and whether its logs are kept.
                report["morning"] = night_report.morning(
                    cfg, report["difference"]["removeNodes"], drain_reports, at, (before or {}).get("hostKeys") or {}, tools.capture
                )
                tools.log("error" if night_report.lost_anything(report["morning"]) else "info", "morning", nodes=report["morning"])
    if drain_alarms:
        report["drainAlarms"] = drain_alarms
    if not report["changes"]:
        tools.log("info", "no_changes", at=at.isoformat())
        return OK, report
    tools.log("info", "changed", changes=report["changes"], dry_run=dry_run)
    if dry_run:
        return OK, report
    after = deployed_state(stack)
    report["deployed"] = after
    report["nodes"] = wait_for_nodes(after, tools, join_timeout)
    missing = {tier: r["missing"] for tier, r in report["nodes"].items() if r["missing"]}
    if missing:
        tools.log("error", "not_joined", missing=missing, waited_s=join_timeout)
    brought_up = [tier for tier in report["difference"]["bringUp"] if tier not in missing]
    if brought_up:
        # The evening's edge: the new tier runs tasks through its label, said in the report.
        report["smokeTest"] = night_report.smoke_test(after["rayClientAddress"], brought_up, tools.capture)
        tools.log("info" if all(r["ok"] for r in report["smokeTest"]) else "error", "smoke_test", results=report["smokeTest"])
    if drain_alarms:
        return DRAIN_INCOMPLETE, report  # the worse news: work may be lost
    if missing:
        return NOT_JOINED, report
    return (SMOKE_FAILED if not all(r["ok"] for r in report.get("smokeTest", [])) else OK), report


# ---------------------------------------------------------------- the cluster itself


def nodes_by_tier(deployed: dict, alive: list[ray_state.RayNodeView]) -> dict:
    """For each deployed tier, which of its nodes are ALIVE in Ray with that tier's label."""
    in_ray = {(n.name, n.tier) for n in alive}
    report = {tier: {"joined": [], "missing": []} for tier in deployed.get("liveTiers", [])}
    for node in deployed.get("nodes", []):
        state = "joined" if (node["name"], node["tier"]) in in_ray else "missing"
        report.setdefault(node["tier"], {"joined": [], "missing": []})[state].append(node["name"])
    return report


def unexpected_nodes(deployed: dict, alive: list[ray_state.RayNodeView]) -> list[str]:
    """Ray nodes the stack does not declare (say, a night node that outlived its window)."""
    declared = {n["name"] for n in deployed.get("nodes", [])}
    return sorted(n.name or n.ip for n in alive if n.name not in declared)


def wait_for_nodes(deployed: dict, tools: Tools, timeout: float) -> dict:
    """Poll Ray until every deployed node joined with its tier label, or `timeout` passes."""
    deadline = tools.clock() + timeout
    while True:
        try:
            with ray_state.trusting(deployed.get("rayTlsCaCert")):  # the dashboard answers over HTTPS
                alive = tools.probe(deployed["dashboardUrl"])
        except Exception as error:  # the head may still be starting
            tools.log("warning", "probe_failed", error=str(error))
            alive = []
        report = nodes_by_tier(deployed, alive)
        waiting = {tier: r["missing"] for tier, r in report.items() if r["missing"]}
        if not waiting or tools.clock() >= deadline:
            for tier, r in report.items():
                tools.log("info" if not r["missing"] else "error", "tier_nodes", tier=tier, **r)
            return report
        tools.log("info", "waiting_for_nodes", missing=waiting)
        tools.sleep(JOIN_POLL_S)


def status(stack, tools: Tools) -> tuple[int, dict]:
    deployed = deployed_state(stack)
    if deployed is None:
        return OK, {"deployed": None}
    try:
        with ray_state.trusting(deployed.get("rayTlsCaCert")):  # the dashboard answers over HTTPS
            alive = tools.probe(deployed["dashboardUrl"])
    except Exception as error:
        raise Failure(FAILED, "probe_failed", address=deployed["dashboardUrl"], error=str(error))
    report = {
        "deployed": deployed,
        "nodes": nodes_by_tier(deployed, alive),
        "unexpected": unexpected_nodes(deployed, alive),
    }
    healthy = not any(r["missing"] for r in report["nodes"].values())
    return (OK if healthy else NOT_JOINED), report


def drain_node(cfg: ClusterConfig, stack, node_name: str, tools: Tools) -> dict:
    """Drain one worker now, with the very script its drain-on-delete resource runs.

    For a drain that lasts, put the node in maintenance in the stack config
    (`maintenance: true` on the node, commit, apply): that drain survives every later
    `up`; this one lasts until the next `up` brings the container back.
    """
    placed = cfg.placed(node_name)
    if placed is None:
        raise Failure(USAGE, "unknown_node", node=node_name, nodes=[p.node.name for p in cfg.placed_nodes])
    if placed.node.head:
        raise Failure(USAGE, "refused_head", node=node_name, message="the head cannot be drained: the cluster would go with it")
    host_keys = (deployed_state(stack) or {}).get("hostKeys") or {}
    if node_name not in host_keys:
        raise Failure(FAILED, "not_deployed", node=node_name, message="the stack has no host key for this node: is it deployed?")
    script = drain_over_ssh(
        cfg.ssh.user, node_name, str(placed.node.ip), host_keys[node_name], drain.drain_command(placed),
        unreachable_is_fatal=True,
    )
    tools.log("info", "draining", node=node_name, tier=placed.tier_name, ip=str(placed.node.ip))
    with program_environment(stack, tools.now(), tools):
        code = tools.run(["sh", "-c", script])
    if code != 0:
        raise Failure(FAILED, "drain_failed", node=node_name, exit_code=code)
    tools.log("warning", "drained_until_next_up", node=node_name, message="set maintenance: true on the node to keep it out")
    return {"drained": node_name, "tier": placed.tier_name}
