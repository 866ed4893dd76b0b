"""Render offline what each VM of a stack receives, into a directory (no Pulumi engine)."""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Optional, Sequence

from components.model.stack import read_stack_file
from components.render import offline
from scripts.ops import change_impact


def instant(text: str) -> dt.datetime:
    at = dt.datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return at


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.render", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", required=True, help="reads Pulumi.<stack>.yaml")
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced if an earlier render)")
    parser.add_argument(
        "--at", type=instant, help="ISO 8601 instant with offset, like 2026-11-22T22:00:00+01:00 (default: pinned at, else now)"
    )
    parser.add_argument(
        "--impact-against", metavar="REF",
        help="also write impact.md: what deploying this tree over git revision REF does (head restart, VM reboots, drains)",
    )
    args = parser.parse_args(argv)
    cfg = read_stack_file(args.stack)
    at = args.at or cfg.instant()
    files = offline.render(cfg, args.stack, at)
    if args.impact_against:
        files["impact.md"] = change_impact.against_revision(args.impact_against, args.stack, at.isoformat(), cfg.head.node.name)
        files["summary.md"] += "\n" + files["impact.md"]
    offline.write(files, args.out)
    print(f"rendered stack {args.stack} at {at.isoformat()} (live tiers: {', '.join(cfg.live_tiers(at)) or 'none'}) into {args.out}")


if __name__ == "__main__":
    sys.exit(main())
