"""Day-2 operations on the program's real graph, under the engine's rules.

The graph is what the program registers under Pulumi's mocks (inputs, property
dependencies, deleted_with, ignore_changes, delete-before-replace); the rules are
scripts/ops/engine_rules.py, each citing the engine or provider source it comes from.
The first tests hold the model itself to those rules on small graphs; the scenarios
then run the month's operations through it and assert the order of drains, deletes
and replacements, and what stays untouched.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json

import pytest

from conftest import prod_raw
from scripts.ops import disk_attachments
from scripts.ops import engine_rules as er
from scripts.ops import provider_rules
from scripts.ops import program_mocks
from scripts.ops.program_mocks import run_program

NIGHT = "2026-11-22T22:00:00+01:00"
IN_DRAIN_LEAD = "2026-11-23T05:50:00+01:00"
HEAD = "ray-ao-1"
WORKERS = ["ray-ao-2", "ray-ao-3", "ray-hc-1", "ray-hc-2", "ray-hc-3"]
HEAVY = ["ray-hc-1", "ray-hc-2", "ray-hc-3"]

DRAIN = ("Command", "{}-drain-on-delete")
CONTAINER = ("Container", "{}-ray")
VM = ("VirtualMachine", "{}")


def step(op: str, kind_name: tuple[str, str], node: str) -> tuple[str, str, str]:
    kind, name = kind_name
    return op, kind, name.format(node)


# ---------------------------------------------------------------- the model on small graphs


def res(name: str, type_: str = "docker:index/container:Container", **kwargs) -> er.Resource:
    return er.Resource(urn=f"urn:pulumi:s::p::{type_}::{name}", type=type_, custom=True, **kwargs)


def urn(name: str, type_: str = "docker:index/container:Container") -> str:
    return f"urn:pulumi:s::p::{type_}::{name}"


def test_a_depends_on_edge_never_makes_a_dependent_replaced():
    """calculateDependentReplacements: only provider, deleted_with and property dependencies count."""
    root = res("root", inputs={"image": "a"})
    follower = res("follower", dependencies=(root.urn,), inputs={"image": "x"})
    plan = er.up([root, follower], [res("root", inputs={"image": "b"}), copy.deepcopy(follower)])
    assert [(s.op, s.name) for s in plan.changed()] == [("delete-replaced", "root"), ("create-replacement", "root")]


def test_a_property_dependent_is_deleted_first_when_its_provider_would_replace_it():
    """calculateDependentReplacements: the input becomes unknown; `labels` is ForceNew on a container."""
    root = res("root", inputs={"image": "a"})
    labelled = res("labelled", property_dependencies={"labels": (root.urn,)}, inputs={"labels": "root-id"})
    plan = er.up([root, labelled], [res("root", inputs={"image": "b"}), copy.deepcopy(labelled)])
    assert [(s.op, s.name) for s in plan.changed()] == [
        ("delete-replaced", "labelled"), ("delete-replaced", "root"),
        ("create-replacement", "root"), ("create-replacement", "labelled"),
    ]


def test_a_property_dependent_on_an_updatable_input_stays():
    """The provider's Diff decides: `restart` updates a container in place."""
    root = res("root", inputs={"image": "a"})
    dependent = res("dependent", property_dependencies={"restart": (root.urn,)}, inputs={"restart": "x"})
    plan = er.up([root, dependent], [res("root", inputs={"image": "b"}), copy.deepcopy(dependent)])
    assert not plan.has("delete-replaced", "Container", "dependent")
    assert plan.step("update", "Container", "dependent").why.startswith("restart changed")


def test_replace_with_cascades_one_level_and_deleted_with_skips_the_provider():
    """findDependentCascadeReplacements (one level); DeleteStep.Apply / isDeletedWith."""
    vm = res("vm", "vsphere:index/virtualMachine:VirtualMachine", inputs={"clone": "t1"})
    first = res("first", "command:remote:Command", replace_with=(vm.urn,), inputs={"create": "x"})
    second = res("second", "command:remote:Command", replace_with=(first.urn,), inputs={"create": "y"})
    with_vm = res("with-vm", deleted_with=vm.urn, inputs={"image": "i"})
    old = [vm, first, second, with_vm]
    new = [res("vm", "vsphere:index/virtualMachine:VirtualMachine", delete_before_replace=True, inputs={"clone": "t2"})]
    new += [copy.deepcopy(r) for r in old[1:]]
    plan = er.up(old, new)
    assert plan.step("delete-replaced", "Command", "first") and plan.step("delete-replaced", "Container", "with-vm")
    # `second` is only replace_with `first`: it is replaced when `first` registers, after the VM.
    assert plan.before(("create-replacement", "VirtualMachine", "vm"), ("create-replacement", "Command", "second"))
    assert not plan.step("delete-replaced", "Container", "with-vm").calls_provider


def test_deletes_at_the_end_go_dependents_first():
    """ScheduleDeletes: antichains over DependenciesOf, reversed."""
    vm = res("vm", "vsphere:index/virtualMachine:VirtualMachine")
    container = res("container", deleted_with=vm.urn, dependencies=(vm.urn,))
    drain = res("drain", "command:local:Command", property_dependencies={"triggers": (container.urn,)})
    plan = er.destroy([vm, container, drain])
    assert plan.before(("delete", "Command", "drain"), ("delete", "Container", "container"))
    assert plan.before(("delete", "Container", "container"), ("delete", "VirtualMachine", "vm"))
    assert plan.step("delete", "Command", "drain").calls_provider
    assert not plan.step("delete", "Container", "container").calls_provider


def test_ignore_changes_keeps_the_old_value_at_the_path():
    """processIgnoreChanges: the ignored path holds the old value, the rest is diffed."""
    old = res("vm", "vsphere:index/virtualMachine:VirtualMachine", inputs={"clone": {"templateUuid": "a"}, "numCpus": 2, "disks": [{"size": 1, "thin": True}]})
    new = res("vm", "vsphere:index/virtualMachine:VirtualMachine", ignore_changes=("clone", "disks[0].thin"), inputs={"clone": {"templateUuid": "b"}, "numCpus": 2, "disks": [{"size": 1, "thin": False}]})
    assert er.up([old], [new]).step("same", "VirtualMachine", "vm")
    new.inputs["numCpus"] = 4
    update = er.up([old], [new]).step("update", "VirtualMachine", "vm")
    assert update.reboots and update.why == "numCpus changed"


def test_an_unknown_resource_type_needs_its_rules_written_down():
    with pytest.raises(provider_rules.UnknownResourceType, match="add them, with their source"):
        er.up([res("x", "vendor:index/thing:Thing", inputs={"a": 1})], [res("x", "vendor:index/thing:Thing", inputs={"a": 2})])


def test_every_rule_names_its_source():
    for type_token, rules in provider_rules.PROVIDERS.items():
        assert "/" in rules.source and (".go" in rules.source or "DiffConfig" in rules.source), type_token


# ---------------------------------------------------------------- the program's graph


@functools.cache
def graph(at: str, changes: str = "{}", template_uuid: str = program_mocks.TEMPLATE["id"]) -> tuple[er.Resource, ...]:
    """The program's registrations for the prod stack at `at`, with `changes` (JSON: key -> value) applied."""
    raw = prod_raw()
    raw["at"] = at
    for path, value in json.loads(changes).items():
        target = raw
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    template = dict(program_mocks.TEMPLATE)
    program_mocks.TEMPLATE["id"] = template_uuid
    try:
        import tempfile
        from pathlib import Path

        # A rotated public key comes with its private half (the program checks the pair).
        secrets = {**program_mocks.TEST_SECRETS, "sshPrivateKey": program_mocks.fake_private_key(raw["ssh"]["publicKey"])}
        with tempfile.TemporaryDirectory() as home:
            run = run_program(raw, Path(home), secrets=secrets)
    finally:
        program_mocks.TEMPLATE.update(template)
    return tuple(er.from_registrations(run.registrations))


def state_after_up(at: str = NIGHT) -> list[er.Resource]:
    """What Pulumi holds after an up and a refresh: the inputs as the providers read them back."""
    return er.refreshed(copy.deepcopy(list(graph(at))))


def new(at: str = NIGHT, **kwargs) -> list[er.Resource]:
    return copy.deepcopy(list(graph(at, **kwargs)))


def test_the_model_knows_every_resource_type_the_program_registers():
    for resource in graph(NIGHT):
        if resource.custom:
            provider_rules.rules_for(resource.type)


def test_a_second_preview_after_up_and_refresh_changes_nothing():
    plan = er.up(state_after_up(), new())
    assert plan.changed() == []


def test_a_duration_written_another_way_would_diff_after_every_refresh():
    """The negative control of the test above: the read-back table is what makes it empty."""
    program = new()
    head = next(r for r in program if r.name == f"{HEAD}-ray" and r.type.endswith("Container"))
    head.inputs["healthcheck"]["startPeriod"] = "60s"
    assert [s.name for s in er.up(state_after_up(), program).changed()] == [f"{HEAD}-ray"]


def test_0545_removal_drains_each_heavy_node_before_its_container_and_vm(prod_config):
    plan = er.up(state_after_up(NIGHT), new(IN_DRAIN_LEAD))
    for node in HEAVY:
        assert plan.before(step("delete", DRAIN, node), step("delete", CONTAINER, node))
        assert plan.before(step("delete", CONTAINER, node), step("delete", VM, node))
        assert plan.step("delete", *DRAIN[:1], DRAIN[1].format(node)).calls_provider
        # Nothing else on the VM needs SSH: the VM is deleted through vCenter anyway.
        on_node = [s for s in plan.steps if s.op == "delete" and s.name.startswith(node)]
        assert {(s.kind, s.name) for s in on_node if s.calls_provider} == {
            ("Command", f"{node}-drain-on-delete"), ("VirtualMachine", node), ("PrivateKey", f"{node}-host-key"),
            # The node's TLS key and certificate: Pulumi state only, no SSH.
            ("PrivateKey", f"{node}-tls-key"), ("CertRequest", f"{node}-tls-csr"), ("LocallySignedCert", f"{node}-tls-cert"),
        }
    # The always-on tier: only the monitoring host's schedule files are copied again and installed
    # (an in-place update of each changed copy and of the command: Prometheus re-reads them).
    targets = f"{prod_config.monitoring_host.node.name}-scrape-targets"
    always_on = {(s.op, s.kind, s.name) for s in plan.changed() if not s.name.startswith("ray-hc")}
    assert ("update", "Command", targets) in always_on
    copies = always_on - {("update", "Command", targets)}
    assert copies and all(op == "update" and kind == "CopyToRemote" and name.startswith(f"{targets}/") for op, kind, name in copies)


def test_destroy_drains_every_worker_while_the_head_is_still_there():
    plan = er.destroy(state_after_up())
    for node in WORKERS:
        assert plan.before(step("delete", DRAIN, node), step("delete", CONTAINER, node))
        assert plan.before(step("delete", DRAIN, node), step("delete", CONTAINER, HEAD))
        assert plan.before(step("delete", DRAIN, node), step("delete", VM, HEAD))
        assert plan.before(step("delete", CONTAINER, node), step("delete", VM, node))


def test_a_ray_upgrade_drains_every_worker_then_replaces_the_head_then_the_workers():
    plan = er.up(state_after_up(), new(changes=json.dumps({"ray.image": "rayproject/ray:2.60.0-py312"})))
    head_delete = plan.index(*step("delete-replaced", CONTAINER, HEAD))
    head_create = plan.index(*step("create-replacement", CONTAINER, HEAD))
    for node in WORKERS:
        drain_at = plan.index(*step("delete-replaced", DRAIN, node))
        container_at = plan.index(*step("delete-replaced", CONTAINER, node))
        assert drain_at < container_at < head_delete < head_create < plan.index(*step("create-replacement", CONTAINER, node))
        assert plan.step("delete-replaced", *DRAIN[:1], DRAIN[1].format(node)).calls_provider
    # Every drain runs before the first container stops: no worker loses its head mid-drain.
    assert max(plan.index(*step("delete-replaced", DRAIN, n)) for n in WORKERS) < min(
        plan.index(*step("delete-replaced", CONTAINER, n)) for n in WORKERS + [HEAD]
    )
    assert not any(s.kind == "VirtualMachine" for s in plan.changed())


def test_a_change_to_the_heavy_workers_only_leaves_the_head_and_always_on_running():
    plan = er.up(state_after_up(), new(changes=json.dumps({"tiers.heavy-compute.schedule.drainLeadMinutes": 20})))
    for node in HEAVY:
        assert plan.before(step("delete-replaced", DRAIN, node), step("delete-replaced", CONTAINER, node))
    for node in ("ray-ao-1", "ray-ao-2", "ray-ao-3"):
        assert plan.step("same", *CONTAINER[:1], CONTAINER[1].format(node))
    assert not any(s.kind == "VirtualMachine" for s in plan.changed())


def test_a_rebuilt_template_replaces_and_reboots_no_live_vm():
    plan = er.up(state_after_up(), new(template_uuid="4217a6b4-rebuilt-template"))
    assert plan.changed() == []


def test_without_ignore_changes_a_rebuilt_template_would_replace_every_vm_head_first():
    """The negative control: the VM's clone.* is ForceNew (CustomizeDiff), so the head would go."""
    program = new(template_uuid="4217a6b4-rebuilt-template")
    for r in program:
        r.ignore_changes = ()
    plan = er.up(state_after_up(), program)
    assert plan.has("create-replacement", "VirtualMachine", HEAD)


def test_a_changed_ssh_key_reaches_every_node_over_ssh_and_reboots_no_vm():
    changed = json.dumps({"ssh.publicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRotatedKeyRotatedKeyRotatedKeyRotated ops@ray-cluster"})
    plan = er.up(state_after_up(), new(changes=changed))
    # Step (2) of the rotation sets the pair (the program checks it): the commands' connections update in place too.
    assert {s.name for s in plan.changed() if s.name.endswith("-authorized-keys")} == {f"{n}-authorized-keys" for n in [HEAD] + WORKERS}
    assert {(s.op, s.reboots) for s in plan.changed()} == {("update", False)}
    program = new(changes=changed)
    for r in program:
        r.ignore_changes = ()
    rebooted = [s.name for s in er.up(state_after_up(), program).changed() if s.reboots]
    assert sorted(rebooted) == sorted([HEAD] + WORKERS)  # what ignore_changes prevents: every VM at once


def test_replacing_a_worker_vm_drains_it_on_the_old_vm_first():
    node = "ray-hc-2"
    old = state_after_up()
    vm_urn = next(r.urn for r in old if r.type.endswith("VirtualMachine") and r.name == node)
    plan = er.up(old, new(), replace=[vm_urn])
    assert plan.before(step("delete-replaced", DRAIN, node), step("delete-replaced", VM, node))
    assert plan.step("delete-replaced", *DRAIN[:1], DRAIN[1].format(node)).calls_provider
    # What ran on the old VM goes with it: no SSH to stop it, all of it anew on the new VM.
    assert not plan.step("delete-replaced", *CONTAINER[:1], CONTAINER[1].format(node)).calls_provider
    assert plan.before(step("create-replacement", VM, node), step("create-replacement", CONTAINER, node))
    assert all(s.name == node or s.name.startswith(f"{node}-") for s in plan.changed())  # no other node touched


def test_replacing_the_head_vm_drains_every_worker_first():
    old = state_after_up()
    vm_urn = next(r.urn for r in old if r.type.endswith("VirtualMachine") and r.name == HEAD)
    plan = er.up(old, new(), replace=[vm_urn])
    head_vm_delete = plan.index(*step("delete-replaced", VM, HEAD))
    for node in WORKERS:
        assert plan.index(*step("delete-replaced", DRAIN, node)) < head_vm_delete
        assert plan.index(*step("delete-replaced", CONTAINER, node)) < head_vm_delete
        assert not plan.has("delete-replaced", "VirtualMachine", node)  # workers keep their VMs


def test_an_unreachable_worker_needs_ssh_only_for_its_drain():
    """In a removal or a destroy, the only delete that must reach a worker over SSH is its drain,
    whose script removes a node that does not answer with an alarm (tests/test_ssh_access.py)."""
    for plan in (er.up(state_after_up(NIGHT), new(IN_DRAIN_LEAD)), er.destroy(state_after_up())):
        for node in HEAVY:
            over_ssh = [
                (s.kind, s.name) for s in plan.steps
                if s.op == "delete" and s.calls_provider and s.name.startswith(node)
                and s.kind in ("Command", "Container", "RemoteImage", "Volume", "CopyToRemote")
            ]
            assert over_ssh == [("Command", f"{node}-drain-on-delete")]


def test_a_tier_resize_drains_each_vm_before_replacing_it_and_reboots_none():
    plan = er.up(state_after_up(), new(changes=json.dumps({"tiers.heavy-compute.vcpu": 64})))
    for node in HEAVY:
        assert plan.before(step("delete-replaced", DRAIN, node), step("delete-replaced", VM, node))
    assert not any(s.reboots for s in plan.steps)
    assert all(s.name.startswith("ray-hc") or s.op == "update" for s in plan.changed())


def test_without_replace_on_changes_a_resize_would_reboot_the_vm_before_its_drain():
    """The negative control: an in-place CPU change powers the VM off (no hot-add) while Ray runs."""
    program = new(changes=json.dumps({"tiers.heavy-compute.vcpu": 64}))
    for r in program:
        r.replace_on_changes = ()
    plan = er.up(state_after_up(), program)
    reboot = plan.step("update", "VirtualMachine", "ray-hc-1")
    assert reboot.reboots and plan.before(("update", "VirtualMachine", "ray-hc-1"), step("delete-replaced", DRAIN, "ray-hc-1"))


def test_the_prefixed_names_take_over_the_old_resources_through_their_aliases():
    """A stack deployed before the cluster-level children carried the component's name: the
    aliases make every one of them the same resource (no delete, no create)."""
    old = state_after_up()
    renamed = [r for r in old if r.aliases]
    # The test stack sets the Ray token and the Grafana password: no generated password to rename.
    assert {r.name for r in renamed} == {"ray-tier", "ray-tier-always-on", "ray-tier-heavy-compute"}
    for r in renamed:
        r.urn, r.aliases = r.aliases[0], ()
    assert er.up(old, new()).changed() == []
    for r in new():  # the negative control: without aliases, every renamed resource is replaced
        if r.aliases:
            plan = er.up(old, [x for x in new() if not x.aliases] + [dataclasses.replace(r, aliases=())])
            assert plan.has("create", r.urn.rsplit("::", 2)[-2].rsplit(":", 1)[-1], r.name)
            break


# ---------------------------------------------------------------- data disks (components/render/data_disk.py)

DISK = ("VirtualDisk", "{}-data-disk")
MONITORING_HOST = "ray-ao-2"
AWAY = json.dumps({"redis.host": "ray-ao-3"})


def vm_urn(resources, node: str) -> str:
    return next(r.urn for r in resources if r.type.endswith("VirtualMachine") and r.name == node)


@pytest.mark.parametrize("node, changes", [(MONITORING_HOST, "{}"), (HEAD, "{}"), ("ray-ao-3", AWAY)])
def test_replacing_a_vm_keeps_its_data_disk_detached_from_the_old_vm_first(node, changes):
    """The monitoring host, the head with its Redis, a Redis on its own VM: `--replace` of the VM."""
    old = er.refreshed(copy.deepcopy(list(graph(NIGHT, changes))))
    program = new(changes=changes)
    plan = er.up(old, program, replace=[vm_urn(old, node)])
    assert plan.step("same", *DISK[:1], DISK[1].format(node))
    assert not [s for s in plan.changed() if s.kind == "VirtualDisk"]
    assert plan.before(step("delete-replaced", VM, node), step("create-replacement", VM, node))
    assert disk_attachments.attachment_problems(plan, old, program) == []


def test_without_delete_before_replace_the_new_vm_would_attach_a_disk_the_old_one_holds():
    """The negative control: create-before-delete (the provider's default) puts the VMDK on two VMs."""
    old = state_after_up()
    program = new()
    for r in program:
        if r.type.endswith("VirtualMachine"):
            r.delete_before_replace = False
    plan = er.up(old, program, replace=[vm_urn(old, MONITORING_HOST)])
    (problem,) = disk_attachments.attachment_problems(plan, old, program)
    assert problem.startswith(f"create-replacement {MONITORING_HOST}: ") and f"{MONITORING_HOST} (old)" in problem


def test_destroy_removes_each_data_disk_after_its_vm_let_go_of_it():
    old = state_after_up()
    plan = er.destroy(old)
    for node in (HEAD, MONITORING_HOST):
        assert plan.before(step("delete", VM, node), step("delete", DISK, node))
        assert plan.step("delete", *DISK[:1], DISK[1].format(node)).calls_provider  # not deleted_with: really deleted
    assert disk_attachments.attachment_problems(plan, old, []) == []
    # The control: the disk deleted while its VM still holds it is caught.
    early = er.Plan([[plan.step("delete", *DISK[:1], DISK[1].format(HEAD))], *plan.rounds])
    assert disk_attachments.attachment_problems(early, old, []) != []


def test_a_redis_away_from_the_head_is_created_before_the_head_and_its_vm_replacement_leaves_the_head_be():
    fresh = er.up([], new(changes=AWAY))
    assert fresh.before(("create", "Container", "ray-ao-3-redis"), step("create", CONTAINER, HEAD))
    old = er.refreshed(copy.deepcopy(list(graph(NIGHT, AWAY))))
    plan = er.up(old, new(changes=AWAY), replace=[vm_urn(old, "ray-ao-3")])
    # Redis goes with its VM and comes back on the new one, from its AOF on the kept disk; the head's
    # container is not replaced (a plain depends_on edge): its `ray start` exits while Redis is away,
    # Docker restarts it, and the GCS reads its state back.
    assert plan.before(step("create-replacement", VM, "ray-ao-3"), ("create-replacement", "Container", "ray-ao-3-redis"))
    assert plan.step("same", *CONTAINER[:1], CONTAINER[1].format(HEAD))
    # Nothing else changes but the DRS rule, which names the new VM's id.
    assert {s.name for s in plan.changed() if not s.name.startswith("ray-ao-3")} == {"ray-always-on-anti-affinity"}


def test_a_stack_from_before_the_data_disks_replaces_their_vms_once_each_drained_first():
    """What the upgrade costs: cloud-init mounts the disk, so it comes with a new VM (`disks[1]`)."""
    old = state_after_up()
    for r in old:
        if r.type.endswith("VirtualMachine"):
            r.inputs["disks"] = r.inputs["disks"][:1]
    old = [r for r in old if not r.type.endswith("VirtualDisk")]
    plan = er.up(old, new())
    assert {s.name for s in plan.changed() if s.kind == "VirtualMachine"} == {HEAD, MONITORING_HOST}
    for node in (HEAD, MONITORING_HOST):
        assert plan.before(("create", "VirtualDisk", f"{node}-data-disk"), step("create-replacement", VM, node))
    assert plan.before(step("delete-replaced", DRAIN, MONITORING_HOST), step("delete-replaced", VM, MONITORING_HOST))


def test_moving_monitoring_replaces_both_vms_and_deletes_the_old_disk_only_once_let_go():
    old, program = state_after_up(), new(changes=json.dumps({"monitoring.host": "ray-ao-3"}))
    plan = er.up(old, program)
    assert plan.before(step("delete-replaced", VM, MONITORING_HOST), step("delete", DISK, MONITORING_HOST))
    assert plan.has("create", *DISK[:1], DISK[1].format("ray-ao-3")) and disk_attachments.attachment_problems(plan, old, program) == []
