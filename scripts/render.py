"""Render offline what each VM of a stack receives, into a directory (no Pulumi engine).

Exit codes: 0 rendered; 2 bad arguments or a bad stack config (every problem printed).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from scripts.cli import config_error_exit, instant


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.render", description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("--stack", required=True, help="reads Pulumi.<stack>.yaml")
    parser.add_argument("--project-dir", type=Path, help="where Pulumi.<stack>.yaml is (default: this checkout)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced if an earlier render)")
    parser.add_argument(
        "--at", type=instant, help="ISO 8601 instant with offset, like 2026-11-22T22:00:00+01:00 (default: pinned at, else now)"
    )
    parser.add_argument(
        "--impact-against", metavar="REF",
        help="also write impact.md: what deploying this tree over git revision REF does (head restart, VM reboots, drains)",
    )
    args = parser.parse_args(argv)
    # Imported after parsing: --help needs none of it.
    from components.model.errors import ConfigError
    from components.model.stack import PROJECT_DIR, read_stack_file
    from components.render import offline

    try:
        cfg = read_stack_file(args.stack, args.project_dir or PROJECT_DIR)
    except ConfigError as error:
        return config_error_exit(error)
    at = args.at or cfg.instant()
    files = offline.render(cfg, args.stack, at)
    if args.impact_against:
        from scripts.ops import change_impact

        try:
            files["impact.md"] = change_impact.against_revision(args.impact_against, args.stack, at.isoformat(), cfg.head.node.name)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as error:  # a base the tool cannot run
            files["impact.md"] = f"### What this change does to a running cluster\n\nNot known: {error}\n"
        files["summary.md"] += "\n" + files["impact.md"]
    offline.write(files, args.out)
    print(f"rendered stack {args.stack} at {at.isoformat()} (live tiers: {', '.join(cfg.live_tiers(at)) or 'none'}) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
