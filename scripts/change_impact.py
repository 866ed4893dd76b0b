"""Say what a change does to a running cluster: head restart, VM reboots and replacements, drains.

    python -m scripts.change_impact --base origin/main [--stack prod] [--at ISO]

Compares the program at a git revision with the working tree under Pulumi's mocks and
the engine's rules (scripts/ops/change_impact.py); prints Markdown (the PR preview
comment). Exit status 0, or 2 when a tree's program does not run.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from components.model.stack import read_stack_file
from scripts.ops.change_impact import against_revision


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.change_impact", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the git revision the cluster runs now (like origin/main)")
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--at", default="2026-11-22T22:00:00+01:00", help="the instant to compare at (default: a night, every tier live)")
    args = parser.parse_args(argv)
    head = read_stack_file(args.stack).head.node.name
    try:
        print(against_revision(args.base, args.stack, args.at, head), end="")
    except RuntimeError as error:
        print(f"change_impact: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
