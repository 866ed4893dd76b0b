"""Local rehearsal: the cluster's runtime on this machine, from what ships to the VMs.

    python -m scripts.rehearse --stack prod [--project-dir DIR] [--schedule] [--keep-running] [--json]

No vSphere, no Docker. The stack's config is read as the program reads it
(`read_stack_file`), and each node runs the very entrypoint script, labels,
resources and environment rendered for its container, with a fresh token.
Ray's TLS is on as rendered (each node's certificate issued by a throwaway CA
from the profile the program issues it from), and the smoke test, drivers and
drain present a node's certificate, as on the VMs.
Only what one machine forces is changed (`local_cluster.localize`): one node
per tier (the head counts for its tier), addresses 127.0.0.1 (on a network
with more than loopback Ray advertises the machine's own address instead, and
its gRPC servers listen on every interface, as on the VMs), ports moved by --port-offset, and CPUs and object
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
It runs in a network namespace of its own whose only interface is loopback
(when root; not with --keep-running), so nothing listens beyond 127.0.0.1 and
rehearsals never fight over ports (scripts/ops/loopback_netns.py).
Every process started here is stopped on success, failure, Ctrl-C or SIGTERM.
--keep-running keeps everything up after the steps until Ctrl-C, which then
ends the rehearsal normally.

Exit codes: 0 every step passed, 1 a step failed or something was left
running, 2 bad config or busy ports, 130 interrupted before the steps were done.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Optional

from components.model.config import ConfigError
from components.model.errors import CONFIG_ERROR_EXIT
from components.model.stack import PROJECT_DIR, read_stack_file
from scripts.cli import config_error_exit
from scripts.ops import loopback_netns
from scripts.ops.rehearsal import Rehearsal
from scripts.ops.rehearsal_report import text_summary
from scripts.ops.rehearsal_setup import PORT_OFFSET, PortsBusy, say

OK, FAILED, UNUSABLE, INTERRUPTED = 0, 1, CONFIG_ERROR_EXIT, 130


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
    if not args.keep_running:  # kept running, it stays reachable from this machine's browsers
        why_not = loopback_netns.enter()
        say("in a network namespace of its own, with only 127.0.0.1" if why_not is None
            else f"on this machine's network ({why_not}): Ray also listens on its other addresses")
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
