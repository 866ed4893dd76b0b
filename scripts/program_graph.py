"""Print, as JSON, the resources a stack's program registers under Pulumi's mocks, with
every option the engine orders by (scripts/ops/engine_rules.py reads it back).

    python -m scripts.program_graph --stack prod --at 2026-11-22T22:00:00+01:00

Used by scripts/ops/change_impact.py, which runs it in each of two trees.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from components.model.stack import stack_file_keys
from scripts.ops import engine_rules as er
from scripts.ops.program_mocks import TEST_SECRETS, fake_private_key, run_program


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.program_graph", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--at", required=True, help="the instant (ISO 8601 with offset) the program runs for")
    args = parser.parse_args(argv)
    raw = stack_file_keys(args.stack)
    raw["at"] = args.at
    # Stand-in secrets; the SSH private key is the pair of this tree's ssh.publicKey (the program checks it).
    secrets = {**TEST_SECRETS, "sshPrivateKey": fake_private_key(raw["ssh"]["publicKey"])}
    with tempfile.TemporaryDirectory() as home:  # the program's HOME: nothing lands in a real one
        run = run_program(raw, Path(home), secrets=secrets, stack=args.stack)
    json.dump([dataclasses.asdict(r) for r in er.from_registrations(run.registrations)], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
