"""How long the policy pack takes to check the prod stack, as a preview runs it.

    venv/bin/python scripts/bench_policy.py

Evaluates the program for prod at night (every tier live) under Pulumi's mocks,
starts the pack as the Pulumi CLI does, and times what a policy-checked
preview waits for: every resource through Analyze, then the stack through
AnalyzeStack. Prints the seconds (best of a few rounds); exits 1 over the
budget.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NIGHT = "2026-11-22T22:00:00+01:00"  # inside every night window: all tiers live
BUDGET_SECONDS = 1.0
ROUNDS = 3


def main(argv: Optional[list[str]] = None) -> int:
    argparse.ArgumentParser(prog="venv/bin/python scripts/bench_policy.py", description=__doc__.split("\n\n")[0]).parse_args(argv)
    # Imported once the arguments are read: --help answers at once.
    from components.model.stack import stack_file_keys
    from scripts.ops.policy_pack import analyze, analyze_stack, running_pack
    from scripts.ops.program_mocks import run_program

    raw = stack_file_keys("prod")
    raw["at"] = NIGHT
    with tempfile.TemporaryDirectory() as home:
        registrations = run_program(raw, Path(home)).registrations
    timings = []
    with running_pack() as pack:
        for _ in range(ROUNDS):
            began = time.perf_counter()
            problems = [d for r in registrations for d in analyze(pack, r)] + analyze_stack(pack, registrations)
            timings.append(time.perf_counter() - began)
    best = min(timings)
    print(f"policy pack over prod ({len(registrations)} resources): {best:.3f} s (rounds: {', '.join(f'{t:.3f}' for t in timings)}); "
          f"{len(problems)} violation(s); budget {BUDGET_SECONDS} s")
    return 0 if best <= BUDGET_SECONDS and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
