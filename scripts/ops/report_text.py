"""The scheduler's `plan` and `status` reports as tables a person reads (`--json` gives the data)."""
from __future__ import annotations

from typing import Optional


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]


def _names(values: list[str]) -> str:
    return ", ".join(values) or "-"


def plan_text(report: dict) -> str:
    desired = report["desired"]
    deployed: Optional[dict] = report["deployed"]
    live_now = set(deployed["liveTiers"]) if deployed else None
    rows = [
        [
            name,
            "live" if tier["live"] else "off",
            "-" if live_now is None else ("live" if name in live_now else "off"),
            tier["override"] or "-",
            tier["nextTransition"] or "-",
        ]
        for name, tier in desired["tiers"].items()
    ]
    lines = [f"plan for {desired['at']}", ""]
    lines += _table(["tier", "wanted", "deployed", "override", "next change"], rows)
    lines.append("")
    if deployed is None:
        lines.append("deployed: unknown (no stack here: the schedule's answer only)")
    else:
        diff = report["difference"]
        lines.append(f"bring up: {_names(diff['bringUp'])}; remove: {_names(diff['remove'])}")
        lines.append(f"nodes to add: {_names(diff['addNodes'])}; to remove: {_names(diff['removeNodes'])}")
    if report.get("changes") is not None:
        changes = ", ".join(f"{op} {n}" for op, n in report["changes"].items())
        lines.append(f"resource changes an up would make: {changes or 'none'}")
    return "\n".join(lines)


def status_text(report: dict) -> str:
    deployed = report["deployed"]
    if deployed is None:
        return "nothing deployed (the stack has no outputs)"
    ips = {n["name"]: n["ip"] for n in deployed.get("nodes", [])}
    tier_of = {n["name"]: n["tier"] for n in deployed.get("nodes", [])}
    rows = [
        [name, tier_of.get(name, tier), ips.get(name, "-"), state]
        for tier, nodes in report["nodes"].items()
        for state in ("joined", "missing")
        for name in nodes[state]
    ]
    lines = [f"deployed at {deployed.get('at', '?')}; dashboard {deployed.get('dashboardUrl', '-')}", ""]
    lines += _table(["node", "tier", "ip", "in Ray"], rows)
    if report.get("unexpected"):
        lines += ["", f"in Ray but not in the stack: {_names(report['unexpected'])}"]
    return "\n".join(lines)
