"""The policy pack against the firewall guard: the copy of each node's ufw script that a timer
re-applies as root (`/etc/ray-cluster/ufw.sh`, staged by a CopyToRemote) is held to the same
firewall checks as the firewall step, and must be the very script that step applies.

Same harness as tests/test_policy.py: the checks with the inputs of a mocks run of the
program (the guard's `source` as the engine sends a text asset), the pack over its gRPC
Analyzer interface.
"""
import copy
import dataclasses

import pytest
from pulumi.runtime import rpc

from components.model.ports import RAY
from components.render.firewall_rules import GUARD_SCRIPT
from policy import checks
from scripts.ops.policy_pack import analyze, analyze_stack
from test_policy import (  # noqa: F401  (fixtures: analyzer, elsewhere, prod, sources)
    analyzer, commands_by_name, copies_by_path, elsewhere, prod, resources, sources, with_rule,
)
from test_policy_sources import WORLD_IN_HALVES

NODE = "ray-ao-1"
STEP = f"{NODE}-ufw"


def guard_copy(run, node=NODE):
    """The node's guard copy, found as the program names it (not by the policy's own lookup)."""
    return run.one(checks.COPY_TO_REMOTE, f"{node}-ufw-guard{GUARD_SCRIPT}")


def text_asset(text: str) -> dict:
    return {rpc._special_sig_key: rpc._special_asset_sig, "text": text}


def with_guard_text(run, text: str, node=NODE):
    """Every CopyToRemote by remotePath, the node's guard script replaced by `text`."""
    copies = copy.deepcopy(copies_by_path(run))
    copies[guard_copy(run, node).inputs["remotePath"]]["source"] = text_asset(text)
    return copies


def registrations_with_guard_text(run, text: str):
    guard = guard_copy(run)
    return [dataclasses.replace(r, inputs={**r.inputs, "source": text_asset(text)}) if r.urn == guard.urn else r for r in run.registrations]


def stack_violations(run, copies, commands=None):
    commands = commands_by_name(run) if commands is None else commands
    return {vm.name: checks.vm_firewall_violations(vm.name, commands, copies) for vm in resources(run, checks.VIRTUAL_MACHINE)}


def only_node_refused(violations: dict, node=NODE) -> list[str]:
    assert {name: found for name, found in violations.items() if name != node and found} == {}
    assert violations[node], f"{node}'s guard passed"
    return violations[node]


WORLD_OPEN = {
    "gcs-to-anyone": [f"ufw allow {RAY.gcs}/tcp"],
    "gcs-to-the-world-in-halves": [f"ufw allow from {net} to any port {RAY.gcs} proto tcp" for net in WORLD_IN_HALVES],
}


# --- the program's guards ------------------------------------------------------------


@pytest.mark.parametrize("placement", ["prod", "elsewhere"])
def test_every_guard_is_read_as_a_firewall_and_passes(request, placement, sources):
    run = request.getfixturevalue(placement)
    for vm in resources(run, checks.VIRTUAL_MACHINE):
        guard = guard_copy(run, vm.name).inputs
        assert checks.is_guard_copy(guard)
        intent = checks.ufw_intent(checks.firewall_script(guard))
        assert intent is not None and intent.enabled and intent.incoming_default == "deny" and intent.allows
        assert checks.firewall_violations(guard) == []
        assert checks.dashboard_exposure_violations(guard, sources) == []
        assert checks.source_violations(guard, sources) == []
    # Other staged files are no firewall: none is read as the guard.
    others = [r for r in resources(run, checks.COPY_TO_REMOTE) if not r.name.endswith(f"-ufw-guard{GUARD_SCRIPT}")]
    assert others and not any(checks.is_guard_copy(r.inputs) for r in others)


# --- a guard that opens more than its step -----------------------------------------------


@pytest.mark.parametrize("lines", WORLD_OPEN.values(), ids=WORLD_OPEN.keys())
def test_world_open_guard_is_refused(prod, lines):
    guard = copy.deepcopy(guard_copy(prod).inputs)
    text = guard["source"]["text"]
    for line in lines:
        text = with_rule(text, line)
    guard["source"] = text_asset(text)
    assert any("gcs" in message for message in checks.firewall_violations(guard))
    messages = only_node_refused(stack_violations(prod, with_guard_text(prod, text)))
    default_deny = [m for m in messages if "is not default-deny" in m]
    assert len(default_deny) == 1 and default_deny[0].startswith(f"VM {NODE}'s firewall guard (")
    assert all(f"`{line}`" in default_deny[0] for line in lines)
    # The step itself still passes: the guard copy alone is refused.
    assert checks.firewall_violations(commands_by_name(prod)[STEP]) == []
    assert stack_violations(prod, copies_by_path(prod))[NODE] == []


def test_guard_that_is_not_a_text_asset_is_refused(prod):
    guard = copy.deepcopy(guard_copy(prod).inputs)
    guard["source"] = {rpc._special_sig_key: rpc._special_asset_sig, "path": "/tmp/ufw.sh"}
    (message,) = checks.firewall_violations(guard)
    assert "is not a text asset" in message


# --- a guard that is not the step's script ---------------------------------------------------


@pytest.mark.parametrize(
    "change,only_in",
    [
        # Within the checks' rules (the cluster network, a Ray port): only the comparison sees it.
        (lambda s: with_rule(s, f"ufw allow from 10.20.0.0/24 to any port {RAY.gcs} proto tcp"), "only in the guard"),
        (lambda s: s.replace("ufw allow from 10.30.0.0/24 to any port 22 proto tcp comment 'ray-cluster ssh'\n", ""), f"only in `{STEP}`"),
    ],
    ids=["cluster-wide-gcs", "rule-dropped"],
)
def test_guard_differing_from_its_step_is_refused(prod, sources, change, only_in):
    step_script = commands_by_name(prod)[STEP]["stdin"]
    text = change(step_script)
    assert text != step_script
    guard = {**guard_copy(prod).inputs, "source": text_asset(text)}
    assert checks.firewall_violations(guard) == [] and checks.source_violations(guard, sources) == []
    (message,) = only_node_refused(stack_violations(prod, with_guard_text(prod, text)))
    assert message.startswith(f"VM {NODE}'s firewall guard (") and f"is not the script its firewall step `{STEP}` applies" in message
    (differing,) = {*text.splitlines()} ^ {*step_script.splitlines()}
    assert f"{only_in}: `{differing}`" in message


def test_guard_with_its_lines_reordered_is_refused(prod):
    step_script = commands_by_name(prod)[STEP]["stdin"]
    lines = step_script.splitlines()
    ssh = next(i for i, line in enumerate(lines) if "'ray-cluster ssh'" in line)
    lines[ssh], lines[ssh + 1] = lines[ssh + 1], lines[ssh]
    (message,) = only_node_refused(stack_violations(prod, with_guard_text(prod, "\n".join(lines) + "\n")))
    assert "the same lines in another order" in message


def test_guard_and_step_changed_alike_pass_the_comparison(prod):
    """A rule in both scripts is judged by the firewall checks alone; the same text passes the comparison."""
    commands = copy.deepcopy(commands_by_name(prod))
    text = with_rule(commands[STEP]["stdin"], f"ufw deny {RAY.gcs}/tcp")
    commands[STEP]["stdin"] = text
    assert stack_violations(prod, with_guard_text(prod, text), commands)[NODE] == []


# --- the pack, as the engine runs it ------------------------------------------------------


def test_pack_refuses_a_world_open_guard(analyzer, prod):
    guard = guard_copy(prod)
    text = guard.inputs["source"]["text"]
    for line in WORLD_OPEN["gcs-to-the-world-in-halves"]:
        text = with_rule(text, line)
    found = analyze(analyzer, guard, source=text_asset(text))
    assert {(name, level) for name, level, _ in found} == {("firewall-default-deny", "MANDATORY"), ("sources-within-networks", "MANDATORY")}
    assert any("together cover 4294967296 addresses (0.0.0.0/0)" in message for _, _, message in found)
    stack = registrations_with_guard_text(prod, text)
    found = analyze_stack(analyzer, stack)
    assert {diagnostic[:3] for diagnostic in found} == {("every-vm-firewalled", "MANDATORY", prod.one(checks.VIRTUAL_MACHINE, NODE).urn)}
    (not_deny,) = [message for *_, message in found if "is not default-deny" in message]
    assert f"VM {NODE}'s firewall guard (" in not_deny and f"`{WORLD_OPEN['gcs-to-the-world-in-halves'][0]}`" in not_deny
    (differs,) = [message for *_, message in found if f"is not the script its firewall step `{STEP}` applies" in message]
    assert f"VM {NODE}'s firewall guard (" in differs


def test_pack_refuses_a_guard_differing_from_its_step(analyzer, prod):
    guard = guard_copy(prod)
    line = f"ufw allow from 10.20.0.0/24 to any port {RAY.gcs} proto tcp"
    text = with_rule(guard.inputs["source"]["text"], line)
    assert analyze(analyzer, guard, source=text_asset(text)) == []  # no single resource shows it
    stack = registrations_with_guard_text(prod, text)
    ((policy, level, urn, message),) = analyze_stack(analyzer, stack)
    assert (policy, level, urn) == ("every-vm-firewalled", "MANDATORY", prod.one(checks.VIRTUAL_MACHINE, NODE).urn)
    assert f"VM {NODE}'s firewall guard (" in message and f"only in the guard: `{line}`" in message
