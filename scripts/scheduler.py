"""Tier scheduler: converge the stack on time with Pulumi's Automation API, and report.

The program itself decides which tiers are live at the instant it runs for
(README, "How the schedule works"); this tool pins that instant, runs
refresh + up, and checks that a tier it brought up joined Ray. A timer runs
`apply --if-due` every 5 minutes (scripts/systemd, scripts/cron): it does nothing
unless the schedule wants a tier or node that is not deployed, or the other way
round, so every tier's edges are met within minutes and a failed edge is retried.

    python -m scripts.scheduler plan       [--stack prod] [--at ISO] [--work-dir .]
    python -m scripts.scheduler apply      [--stack prod] [--at ISO] [--dry-run] [--if-due] [--work-dir .]
    python -m scripts.scheduler status     [--stack prod] [--work-dir .]
    python -m scripts.scheduler drain NODE [--stack prod] [--work-dir .]

The report goes to stdout (secret outputs masked): a table for `plan` and
`status`, one JSON line with --json and always for `apply` and `drain` (their
timers append it to a .jsonl); progress goes to stderr as JSON lines
{"ts", "level", "event", ...}.

Exit codes:
    0  done (also when there was nothing to change)
    1  failed: a Pulumi operation or the drain failed, or the stack cannot be opened
    2  usage or config error (as in every tool here): bad arguments, invalid stack config
       (every problem printed), unknown stack or node, the head
    3  overlap: another scheduler run holds this working copy's lock; nothing was done
    4  the Pulumi stack stayed locked by another update through every retry
    5  not joined: a live tier's nodes are not (all) in Ray (after apply's wait; status)
    6  the update went through, but a drain did not finish (deadline passed, head or
       node unreachable): work on that node may be lost; the report's drainAlarms say which
    7  the working copy is not what origin/<branch> says (local changes, or behind):
       nothing was done; `git pull --ff-only` and run again
    8  a tier brought up joined, but the smoke test on it failed (the report's smokeTest)

The instant: `plan` and `apply` hand it to the Pulumi program in the environment
(RAY_CLUSTER_AT) of the Pulumi CLI they start; nothing is written into
Pulumi.<stack>.yaml, so a killed run leaves nothing pinned. Without it, a manual
`pulumi up` reads the clock, which gives the answer the scheduler would give at
that instant, by design. The `at` stack output records the instant each update used.

SSH: the cluster key is read from the stack's secret config and held by a private
ssh-agent for the run only (scripts/ops/ssh_agent.py): nothing is written to disk.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from scripts.cli import instant
from scripts.ops import report_text

if TYPE_CHECKING:
    from scripts.ops.scheduling import Tools

# The scheduling core (Pulumi's Automation API, the config model) loads in a second or two: it is
# imported once the arguments are parsed, so --help answers at once.
TEXT_REPORTS = {"plan": report_text.plan_text, "status": report_text.status_text}  # for a person; --json for programs


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", default="prod")
    common.add_argument("--work-dir", type=Path, default=Path("."), help="the Pulumi project (a checkout of this repository)")
    common.add_argument("--lock-file", type=Path, help="default: <work-dir>/.scheduler-<stack>.lock")
    common.add_argument("--json", action="store_true", help="the report as one JSON line (plan and status print a table without it)")
    timed = argparse.ArgumentParser(add_help=False)
    timed.add_argument("--at", type=instant, help="the instant to converge for (ISO 8601 with offset); default now")

    root = argparse.ArgumentParser(prog="python -m scripts.scheduler", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("plan", parents=[common, timed], help="desired vs deployed, and what an up would change")
    apply_cmd = commands.add_parser("apply", parents=[common, timed], help="refresh and up (preview only with --dry-run)")
    apply_cmd.add_argument("--dry-run", action="store_true")
    apply_cmd.add_argument("--if-due", action="store_true", help="do nothing unless the schedule wants a change (the periodic timer)")
    apply_cmd.add_argument("--branch", default="main", help="the branch the working copy must match on origin (default main)")
    apply_cmd.add_argument("--join-timeout", type=float, help="seconds to wait for new nodes to join Ray (default: scheduling.JOIN_TIMEOUT_S)")
    commands.add_parser("status", parents=[common], help="deployed nodes and whether they are in Ray")
    drain_cmd = commands.add_parser("drain", parents=[common], help="drain one worker now, until the next up (for longer: maintenance: true in config)")
    drain_cmd.add_argument("node")
    return root


def run(args: argparse.Namespace, tools: Tools) -> tuple[int, dict]:
    from pulumi import automation as auto

    from components.model.errors import ConfigError
    from components.model.stack import read_stack_file
    from scripts.ops.scheduling import (
        CHECKOUT, FAILED, JOIN_TIMEOUT_S, OK, USAGE, Failure, apply, drain_node, exclusive_lock, plan, status,
    )

    work_dir = args.work_dir.resolve()
    try:
        cfg = read_stack_file(args.stack, project_dir=work_dir)
    except ConfigError as error:
        print(error, file=sys.stderr)  # for a person; the JSON line for the journal
        raise Failure(USAGE, "config_error", stack=args.stack, problems=[p.line() for p in error.problems])

    def stack():
        try:
            return tools.open_stack(args.stack, work_dir)
        except (auto.CommandError, OSError) as error:
            raise Failure(FAILED, "stack_unavailable", stack=args.stack, error=str(error))

    if args.command == "status":
        return status(stack(), tools)
    with exclusive_lock(args.lock_file or work_dir / f".scheduler-{args.stack}.lock"):
        if args.command == "drain":  # under the lock: never in the middle of an apply
            return OK, drain_node(cfg, stack(), args.node, tools)
        at = args.at or tools.now().replace(microsecond=0)
        if args.command == "apply":
            problem = None if args.dry_run else tools.checkout(work_dir, args.branch)
            if problem:
                raise Failure(CHECKOUT, "checkout_refused", work_dir=str(work_dir), problem=problem)
            return apply(stack(), cfg, at, args.dry_run, tools, args.join_timeout or JOIN_TIMEOUT_S, args.if_due)
        try:
            opened = stack()
        except Failure as failure:  # no Pulumi CLI or backend here: the schedule still answers
            tools.log("warning", failure.event, **failure.fields, message="showing the schedule only")
            opened = None
        return OK, plan(opened, cfg, at, tools)


def main(argv: Optional[list[str]] = None, tools: Optional[Tools] = None, out=None) -> int:
    args = parser().parse_args(argv)  # exits 2 on bad usage
    from scripts.ops.scheduling import Failure, Tools

    tools = tools or Tools()
    try:
        code, report = run(args, tools)
    except Failure as failure:
        tools.log("error", failure.event, **failure.fields)
        return failure.code
    if args.json or args.command not in TEXT_REPORTS:
        text = json.dumps(report, default=str)  # one line: cron appends apply's report to a .jsonl
    else:
        text = TEXT_REPORTS[args.command](report)
    (out or sys.stdout).write(text + "\n")
    tools.log("info", "done", command=args.command, exit_code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
