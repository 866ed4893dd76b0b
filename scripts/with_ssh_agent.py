"""Run a Pulumi command with the stack's SSH key in a private ssh-agent, never on disk.

    python -m scripts.with_ssh_agent --stack prod -- pulumi up -s prod
    python -m scripts.with_ssh_agent --stack prod -- pulumi destroy -s prod

The key is read with `pulumi config get ray-cluster:sshPrivateKey` (decrypted in
memory), added to an agent on an owner-only temporary socket, and the agent is
killed when the command ends. DOCKER_CONTEXT and DOCKER_HOST are removed from the
command's environment (they would override every node's Docker host). Exit status:
the command's; 2 when the key cannot be read or the agent not started.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from typing import Optional, Sequence

from components.model.errors import NAMESPACE
from scripts.cli import parse_with_command
from scripts.ops.ssh_agent import AgentError, run_with_key

USAGE_ERROR = 2


def key_command(stack: str) -> list[str]:
    return ["pulumi", "config", "get", f"{NAMESPACE}:sshPrivateKey", "--stack", stack]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.with_ssh_agent", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument(
        "--key-command",
        type=shlex.split,
        help="a command printing the private key (default: pulumi config get ray-cluster:sshPrivateKey --stack STACK)",
    )
    args, command = parse_with_command(parser, argv)
    try:
        key = subprocess.run(args.key_command or key_command(args.stack), capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"with_ssh_agent: cannot read the stack's SSH key: {getattr(error, 'stderr', '') or error}", file=sys.stderr)
        return USAGE_ERROR
    try:
        return run_with_key(key, command)
    except AgentError as error:
        print(f"with_ssh_agent: {error}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
