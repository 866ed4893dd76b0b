"""Which VM holds which VMDK, step by step through an engine-model plan (engine_rules.py).

A data disk (components/render/data_disk.py) is attached to one VM at a time and must
never be deleted while a VM holds it. The provider enforces neither across VMs
(provider_rules.attached_vmdks); the order of the engine's steps must.
"""
from __future__ import annotations

from typing import Sequence

from scripts.ops.engine_rules import Plan, Resource
from scripts.ops.provider_rules import VIRTUAL_DISK_TYPE, VM_TYPE, attached_vmdks


def attachment_problems(plan: Plan, old: Sequence[Resource], new: Sequence[Resource]) -> list[str]:
    """A VMDK attached to two VMs at once, or deleted while attached, anywhere in `plan`.

    Holders are (VM URN, "old" | "new"): a replaced VM's old and new selves are two VMs.
    A VM's delete detaches its attached disks before the VM goes; an update re-attaches per
    its new inputs.
    """
    olds = {r.urn: r for r in old}
    news = {r.urn: r for r in new}
    holders: dict[str, set[tuple[str, str]]] = {}
    for r in old:
        for path in attached_vmdks(r.type, r.inputs):
            holders.setdefault(path, set()).add((r.urn, "old"))
    problems = []
    for s in plan.steps:
        res = news.get(s.urn) if s.op in ("create", "create-replacement", "update") else olds.get(s.urn)
        if res is None:
            continue
        if res.type == VM_TYPE:
            me = (s.urn, "new" if s.op in ("create", "create-replacement") else "old")
            if s.op.startswith("delete") or s.op == "update":
                for held in holders.values():
                    held.discard(me)
            if s.op in ("create", "create-replacement", "update"):
                for path in sorted(attached_vmdks(res.type, res.inputs)):
                    held = holders.setdefault(path, set())
                    if held:
                        problems.append(f"{s.op} {s.name}: {path} is still attached to {_names(held)}")
                    held.add(me)
        elif res.type == VIRTUAL_DISK_TYPE and s.op.startswith("delete"):
            path = res.inputs.get("vmdkPath", "")
            if holders.get(path):
                problems.append(f"{s.op} {s.name}: {path} is deleted while attached to {_names(holders[path])}")
    return problems


def _names(holders: set[tuple[str, str]]) -> list[str]:
    return sorted(f"{urn.rsplit('::', 1)[-1]} ({which})" for urn, which in holders)
