"""What a change to the repository does to a running cluster, before anyone runs it.

Both trees (a base revision and the working tree) run their own program under
Pulumi's mocks (`python -m scripts.program_graph`), and the engine model
(scripts/ops/engine_rules.py) turns the two graphs into the steps of a `pulumi up`
from one to the other: which containers are replaced (the head's means a cluster
restart), which VMs reboot or are replaced, which workers drain. The PR preview
comment and `scripts/render.py --impact-against REF` print it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scripts.ops import engine_rules as er

ROOT = Path(__file__).resolve().parents[2]


def graph(tree: Path, stack: str, at: str) -> list[er.Resource]:
    """The program's registrations in `tree`, through that tree's own code."""
    done = subprocess.run(
        [sys.executable, "-m", "scripts.program_graph", "--stack", stack, "--at", at],
        cwd=tree, capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the program in {tree} did not run under mocks:\n{done.stderr.strip()}")
    return [er.Resource(**fields) for fields in json.loads(done.stdout)]


def graph_at_revision(revision: str, stack: str, at: str) -> list[er.Resource]:
    with tempfile.TemporaryDirectory(prefix="ray-cluster-base-") as directory:
        tree = Path(directory) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), revision], check=True, capture_output=True)
        try:
            return graph(tree, stack, at)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)


@dataclass(frozen=True)
class Impact:
    head_restarts: list[str]  # the head's replaced containers: every worker drains, the cluster restarts
    drains: list[str]  # workers whose drain runs (their container or VM goes)
    vm_reboots: list[str]
    vm_replacements: list[str]
    other: list[str]  # every other step, as "op kind name"

    @property
    def quiet(self) -> bool:
        return not (self.head_restarts or self.drains or self.vm_reboots or self.vm_replacements or self.other)


def impact(plan: er.Plan, head: str) -> Impact:
    changed = plan.changed()
    replaced = {(s.kind, s.name) for s in changed if s.op in ("delete-replaced", "create-replacement")}
    reported = set()

    def pick(condition) -> list[str]:
        found = sorted({s.name for s in changed if condition(s)})
        reported.update((s.op, s.kind, s.name) for s in changed if condition(s))
        return found

    head_restarts = pick(lambda s: s.kind == "Container" and s.name == f"{head}-ray" and ("Container", s.name) in replaced)
    drains = pick(lambda s: s.name.endswith("-drain-on-delete") and s.op.startswith("delete"))
    vm_reboots = pick(lambda s: s.kind == "VirtualMachine" and s.op == "update" and s.reboots)
    vm_replacements = pick(lambda s: s.kind == "VirtualMachine" and ("VirtualMachine", s.name) in replaced)
    other = sorted(f"{s.op} {s.kind} {s.name}" for s in changed if (s.op, s.kind, s.name) not in reported)
    return Impact(head_restarts, [d.removesuffix("-drain-on-delete") for d in drains], vm_reboots, vm_replacements, other)


def markdown(found: Impact, base: str, at: str) -> str:
    lines = [f"### What this change does to a running cluster (against `{base}`, at {at})", ""]
    if found.quiet:
        return "\n".join(lines + ["Nothing: `pulumi up` would change no resource.", ""])
    lines.append(f"- **Head restart**: {'YES: ' + ', '.join(found.head_restarts) + ' replaced; every worker drains first and all jobs restart' if found.head_restarts else 'no'}")
    lines.append(f"- **VMs rebooted**: {', '.join(found.vm_reboots) or 'none'}")
    lines.append(f"- **VMs replaced**: {', '.join(found.vm_replacements) or 'none'}")
    lines.append(f"- **Workers drained**: {', '.join(found.drains) or 'none'}")
    if found.other:
        lines += ["", "<details><summary>Every other step</summary>", "", *(f"- {s}" for s in found.other), "", "</details>"]
    return "\n".join(lines) + "\n"


def against_revision(base: str, stack: str, at: str, head: str) -> str:
    """The Markdown for deploying the working tree over git revision `base`."""
    before = graph_at_revision(base, stack, at)
    plan = er.up(er.refreshed(before), graph(ROOT, stack, at))
    return markdown(impact(plan, head), base, at)
