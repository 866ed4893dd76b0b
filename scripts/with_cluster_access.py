"""Run a command with the stack's Ray credentials (mutual TLS and the token), for that command only.

    python -m scripts.with_cluster_access --stack prod -- ray job submit --working-dir . -- python train.py
    python -m scripts.with_cluster_access --stack prod -- venv/bin/python -m scripts.monitor_tasks

The stack outputs are read once (`pulumi stack output --json --show-secrets --stack STACK`).
The cluster CA, the operators' client certificate and its key go into a fresh owner-only
directory outside $HOME, removed when the command ends, fails or is killed. The command
runs with RAY_USE_TLS=1, RAY_TLS_CA_CERT / RAY_TLS_SERVER_CERT / RAY_TLS_SERVER_KEY naming
them, RAY_AUTH_MODE=token, RAY_AUTH_TOKEN, REQUESTS_CA_BUNDLE (the CA: `ray job submit`
verifies the dashboard's HTTPS proxy), RAY_ADDRESS (unless set: the dashboardUrl output) and
RAY_CLUSTER_CLIENT_ADDRESS (unless set: rayClientAddress, the smoke test's default address).
SIGINT, SIGTERM and SIGHUP sent to this process are passed on to the command.
Exit status: the command's (killed by a signal: killed by the same signal); 2 when the
outputs cannot be read or lack one this needs; 127 when the command cannot be started.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from typing import Optional, Sequence

from components.model.errors import CONFIG_ERROR_EXIT
from scripts.cli import parse_with_command
from scripts.ops.cluster_access import AccessError, exit_as, required_outputs, run_with_access

PROG = "with_cluster_access"
CANNOT_START = 127  # as a shell says "command not found"


def outputs_command(stack: str) -> list[str]:
    return ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m scripts.{PROG}", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument(
        "--outputs-command",
        type=shlex.split,
        help="a command printing the stack outputs as JSON, e.g. 'cat outputs.json' "
        "(default: pulumi stack output --json --show-secrets --stack STACK)",
    )
    args, command = parse_with_command(parser, argv)
    try:
        printed = subprocess.run(args.outputs_command or outputs_command(args.stack), capture_output=True, text=True, check=True).stdout
        outputs = required_outputs(printed)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"{PROG}: cannot read the stack outputs: {getattr(error, 'stderr', '') or error}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except AccessError as error:
        print(f"{PROG}: stack {args.stack}: {error}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    try:
        return exit_as(run_with_access(outputs, command))
    except AccessError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except OSError as error:
        print(f"{PROG}: cannot run {command[0]}: {error.strerror}", file=sys.stderr)
        return CANNOT_START


if __name__ == "__main__":
    sys.exit(main())
