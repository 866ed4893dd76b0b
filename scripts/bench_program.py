"""How the program scales: evaluate it under Pulumi's mocks at growing cluster sizes.

    venv/bin/python scripts/bench_program.py [--sizes 30 120 300]

For the prod stack and for generated stacks of 30, 120 and 300 nodes (all live:
the instant is at night), prints the wall time, the number of resources
registered, and the longest dependency chain: how many resources must be
created one after another however parallel the engine runs. That chain, not
the node count, bounds how long a real `pulumi up` takes, so it must not grow
with the cluster.
"""
from __future__ import annotations

import argparse
import functools
import gc
import ipaddress
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.model.stack import stack_file_keys  # noqa: E402

if TYPE_CHECKING:
    from scripts.ops.program_mocks import ProgramRun

NIGHT = "2026-11-22T22:00:00+01:00"  # inside every night window: all tiers live
SIZES = (30, 120, 300)
GENERATED_CIDR = ipaddress.IPv4Network("10.40.0.0/16")
ALWAYS_ON_NODES = 3
HEAVY_TIER_SIZE = 50
PROD_BUDGET_SECONDS = 1.5  # one fresh evaluation of prod, imports included
PER_NODE_BUDGET_MS = 90  # each node past the smallest generated stack
# Component types are the project's own package (`ray-cluster:index:RayNode`).
COMPONENT_PREFIX = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"] + ":"


def prod_stack() -> dict:
    raw = stack_file_keys("prod")
    raw["at"] = NIGHT
    return raw


def generated_stack(nodes: int) -> dict:
    """prod's settings on a /16: an always-on tier (head first), the rest in night tiers of 50."""
    raw = prod_stack()
    raw["network"].update(cidr=str(GENERATED_CIDR), gateway=str(GENERATED_CIDR[1]), dnsServers=[str(GENERATED_CIDR[2])])
    # Hosts from .10 up, clear of the gateway and the DNS server.
    all_nodes = [{"name": f"ray-{i}", "ip": str(GENERATED_CIDR[10 + i])} for i in range(nodes)]
    all_nodes[0]["head"] = True
    always_on, heavy = raw["tiers"]["always-on"], raw["tiers"]["heavy-compute"]
    raw["tiers"] = {"always-on": {**always_on, "nodes": all_nodes[:ALWAYS_ON_NODES]}}
    rest = all_nodes[ALWAYS_ON_NODES:]
    for start in range(0, len(rest), HEAVY_TIER_SIZE):
        raw["tiers"][f"heavy-{start // HEAVY_TIER_SIZE + 1}"] = {**heavy, "nodes": rest[start : start + HEAVY_TIER_SIZE]}
    return raw


def evaluate(raw: dict) -> ProgramRun:
    from scripts.ops.program_mocks import run_program  # Pulumi's SDK: only when measuring, not for --help

    with tempfile.TemporaryDirectory() as home:
        return run_program(raw, Path(home))


def longest_chain(run: ProgramRun) -> list[str]:
    """The custom resources on the longest path of "must exist before" edges, first to last.

    Edges: a resource's dependencies (its depends_on, and every resource whose
    outputs its inputs use), its provider (it is created through that provider
    instance) and its parent. The parent edge matters: the SDK registers a child
    only once its parent's URN is known, and a parent component is registered
    only once its own dependencies exist (the Firewall waits for the VM that
    way). Components are on paths but create nothing, so they are not counted.
    """
    by_urn = {r.urn: r for r in run.registrations}

    @functools.cache
    def path_to(urn: str) -> tuple[str, ...]:
        resource = by_urn[urn]
        before = {*resource.dependencies, resource.parent}
        if resource.provider:
            before.add(resource.provider.rsplit("::", 1)[0])  # a provider reference is `<urn>::<id>`
        longest = max((path_to(u) for u in before if u in by_urn), key=len, default=())
        return longest if resource.type.startswith(COMPONENT_PREFIX) else (*longest, resource.name)

    return list(max((path_to(urn) for urn in sorted(by_urn)), key=len))


FRESH_PROD_RUN = f"""
import sys
sys.path.insert(0, {str(ROOT / 'scripts')!r})
import bench_program
bench_program.evaluate(bench_program.prod_stack())
"""


def fresh_prod_seconds() -> tuple[float, float]:
    """Wall and CPU seconds of one evaluation of prod in a new interpreter, startup and imports
    included (the harness's too: an upper bound on the program's own). CPU time says what the
    program costs when other work shares the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", FRESH_PROD_RUN], check=True, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - start, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


@dataclass
class Row:
    label: str
    nodes: int
    resources: int
    chain: list[str]
    seconds: float
    cpu_seconds: float
    target: str = ""


def measure(label: str, raw: dict) -> Row:
    # The program turns the cyclic GC off for its run (__main__.py); the runs before this one left
    # their garbage to this process: freed here, off the clock, as their processes' exit would.
    gc.collect()
    start, cpu_start = time.perf_counter(), time.process_time()
    run = evaluate(raw)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    nodes = sum(len(tier["nodes"]) for tier in raw["tiers"].values())
    return Row(label, nodes, len(run.registrations), longest_chain(run), seconds, cpu_seconds)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="venv/bin/python scripts/bench_program.py", description=__doc__.split("\n")[0],
        epilog="Takes minutes at 300 nodes: it evaluates the whole program each time.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="generated stack sizes (default: %(default)s)")
    args = parser.parse_args(argv)
    import scripts.ops.program_mocks  # noqa: F401  (imported before the clock runs: "in process" is evaluation only)

    prod = measure("prod, in process", prod_stack())
    fresh, fresh_cpu = fresh_prod_seconds()
    verdict = "ok" if fresh < PROD_BUDGET_SECONDS else "MISSED"
    rows = [
        Row("prod, fresh process", prod.nodes, prod.resources, prod.chain, fresh, fresh_cpu,
            f"< {PROD_BUDGET_SECONDS} s incl. imports: {verdict}"),
        prod,
    ]
    generated = [measure("generated", generated_stack(size)) for size in sorted(args.sizes)]
    for row in generated:
        row.target = f"chain = prod's {len(prod.chain)}: {'ok' if len(row.chain) == len(prod.chain) else 'MISSED'}"
    for row in generated[1:]:
        first = generated[0]
        per_node_ms = 1000 * (row.seconds - first.seconds) / (row.nodes - first.nodes)
        per_node_cpu_ms = 1000 * (row.cpu_seconds - first.cpu_seconds) / (row.nodes - first.nodes)
        row.target += (
            f"; {per_node_ms:.0f} ms/node ({per_node_cpu_ms:.0f} CPU) from {first.nodes}: "
            f"{'ok' if per_node_ms <= PER_NODE_BUDGET_MS else 'MISSED'}"
        )

    print(f"{'stack':<20} {'nodes':>5} {'resources':>9} {'chain':>5} {'wall':>8} {'CPU':>8}  target")
    for row in rows + generated:
        print(f"{row.label:<20} {row.nodes:>5} {row.resources:>9} {len(row.chain):>5} {row.seconds:>7.2f}s {row.cpu_seconds:>7.2f}s  {row.target}")
    print(f"\nprod's longest chain: {' -> '.join(prod.chain)}")


if __name__ == "__main__":
    main()
