"""The program's wiring under Pulumi's mocks: which resources, inputs, dependencies."""
import base64
import json

import pytest
import yaml

from components import config
from pulumi_harness import TEMPLATE, TEST_SECRETS, run_program

VM = "vsphere:index/virtualMachine:VirtualMachine"
CONTAINER = "docker:index/container:Container"
COMMAND = "command:remote:Command"
IMAGE = "docker:index/remoteImage:RemoteImage"
DOCKER_PROVIDER = "pulumi:providers:docker"

NIGHT = "2026-11-22T22:00:00+01:00"  # 22:00 in Europe/Berlin (CET)
NOON = "2026-11-22T12:00:00+01:00"
IN_DRAIN_LEAD = "2026-11-23T05:50:00+01:00"
AO = ["ray-ao-1", "ray-ao-2", "ray-ao-3"]
HC = ["ray-hc-1", "ray-hc-2", "ray-hc-3"]


def run_at(raw, tmp_path, at, override=None):
    raw["at"] = at
    if override is not None:
        raw["tiers"]["heavy-compute"]["override"] = override
    return run_program(raw, tmp_path)


def vm_shapes(run):
    return sorted(
        (r.name, r.inputs["numCpus"], r.inputs["memory"], r.inputs["disks"][0]["size"]) for r in run.of_type(VM)
    )


def test_night_has_six_vms_sized_by_tier(raw, tmp_path):
    run = run_at(raw, tmp_path, NIGHT)
    assert vm_shapes(run) == sorted(
        [(n, 32, 110 * 1024, 400) for n in AO] + [(n, 80, 350 * 1024, 1000) for n in HC]
    )


@pytest.mark.parametrize(
    "at,override",
    [(NOON, None), (IN_DRAIN_LEAD, None), (NIGHT, "off")],
    ids=["noon", "inside-drain-lead", "night-override-off"],
)
def test_heavy_tier_out_leaves_always_on_untouched(raw, tmp_path, at, override):
    night = run_at(prod_copy(raw), tmp_path, NIGHT)
    day = run_at(raw, tmp_path, at, override)
    assert sorted(r.name for r in day.of_type(VM)) == AO
    # Nothing about the always-on tier changes: same resources, same inputs, same edges.
    assert always_on_view(day) == always_on_view(night)


@pytest.mark.parametrize("at", [NOON, IN_DRAIN_LEAD, NIGHT])
def test_override_on_keeps_six_vms_at_any_instant(raw, tmp_path, at):
    assert len(run_at(raw, tmp_path, at, "on").of_type(VM)) == 6


def prod_copy(raw):
    return json.loads(json.dumps(raw))


def always_on_view(run):
    """The always-on nodes' resources, minus cluster-wide monitoring inventory."""
    return {
        (r.type, r.name): (r.inputs, sorted(r.dependencies), r.parent, r.provider)
        for r in run.registrations
        if any(r.name.startswith(node) for node in AO)
    }


def test_same_config_evaluates_to_identical_inputs(raw, tmp_path):
    """No perpetual diff: two evaluations register the same resources with the same inputs."""
    first = run_at(prod_copy(raw), tmp_path, NIGHT)
    second = run_at(raw, tmp_path, "2026-11-23T03:10:00+01:00")  # a later instant, same tiers
    view = lambda run: {(r.type, r.name): (r.inputs, sorted(r.dependencies)) for r in run.registrations}
    assert view(first) == view(second)


def test_bad_config_registers_nothing(raw, tmp_path):
    raw["network"]["adminCidrs"] = ["0.0.0.0/0"]
    raw["at"] = NIGHT
    with pytest.raises(Exception) as caught:
        run_program(raw, tmp_path)
    assert "ray-cluster:network.adminCidrs[0]" in str(caught.value)
    # The harness's monitor is fresh per run: nothing at all may have been registered.
    from pulumi.runtime import settings

    assert settings.SETTINGS.monitor.registrations == []


def test_plain_text_secret_is_refused(raw, tmp_path):
    raw["at"] = NIGHT
    raw["rayToken"] = "typed-without---secret"
    with pytest.raises(Exception, match=r"ray-cluster:rayToken: is a secret"):
        run_program(raw, tmp_path, secrets={"sshPrivateKey": TEST_SECRETS["sshPrivateKey"]})


@pytest.fixture
def night(raw, tmp_path):
    return run_at(raw, tmp_path, NIGHT)


def test_vms_cloned_from_template_with_its_hardware(night):
    for vm in night.of_type(VM):
        assert vm.inputs["clone"]["templateUuid"] == TEMPLATE["id"]
        assert (vm.inputs["guestId"], vm.inputs["scsiType"], vm.inputs["firmware"]) == ("ubuntu64Guest", "pvscsi", "efi")
        assert vm.inputs["networkInterfaces"][0]["adapterType"] == "vmxnet3"
        assert vm.inputs["resourcePoolId"] == "resgroup-1"
        assert vm.inputs["folder"] == "ray-cluster"


def test_disk_never_smaller_than_template(raw, tmp_path):
    raw["tiers"]["always-on"]["diskGb"] = 20  # template disk is 40 GB
    run = run_at(raw, tmp_path, NOON)
    assert {vm.inputs["disks"][0]["size"] for vm in run.of_type(VM)} == {TEMPLATE["disks"][0]["size"]}


def test_vm_guestinfo_carries_static_ip_and_pinned_host_key(night, prod_config):
    keys = {r.name.removesuffix("-host-key"): r for r in night.of_type("tls:index/privateKey:PrivateKey")}
    for vm in night.of_type(VM):
        extra = vm.inputs["extraConfig"]
        assert "extraConfig" in vm.secret_inputs
        assert extra["guestinfo.metadata.encoding"] == extra["guestinfo.userdata.encoding"] == "base64"
        metadata = yaml.safe_load(base64.b64decode(extra["guestinfo.metadata"]))
        node = next(p.node for p in prod_config.placed_nodes if p.node.name == vm.name)
        assert metadata["local-hostname"] == vm.name
        assert metadata["network"]["ethernets"]["primary"]["addresses"] == [f"{node.ip}/24"]
        user_data = yaml.safe_load(base64.b64decode(extra["guestinfo.userdata"]))
        assert keys[vm.name].inputs["algorithm"] == "ED25519"
        assert user_data["ssh_keys"]["ed25519_public"].startswith("ssh-ed25519 ")
        assert any(d.endswith(f"::{vm.name}-host-key") for d in vm.dependencies)


def test_vm_tagged_with_its_tier(night):
    tags = {r.urn: r.inputs["name"] for r in night.of_type("vsphere:index/tag:Tag")}
    category = night.of_type("vsphere:index/tagCategory:TagCategory")[0]
    assert category.inputs["cardinality"] == "SINGLE"
    for vm in night.of_type(VM):
        (tag_urn,) = [d for d in vm.dependencies if d in tags]
        assert tags[tag_urn] == ("always-on" if vm.name in AO else "heavy-compute")


def test_components_parent_their_children(night):
    components = {r.urn: r for r in night.registrations if r.type.startswith("ray-cluster:index:")}
    assert {r.type for r in components.values()} >= {
        "ray-cluster:index:RayCluster", "ray-cluster:index:Vm", "ray-cluster:index:Firewall", "ray-cluster:index:RayNode"
    }
    for r in night.registrations:
        if r.type != "ray-cluster:index:RayCluster":
            assert r.parent in components, f"{r.type} {r.name} is not parented by a component"


def test_no_secret_in_plain_inputs(night):
    secret_values = list(TEST_SECRETS.values())
    for r in night.registrations:
        for key, value in r.inputs.items():
            if key not in r.secret_inputs:
                text = json.dumps(value, default=str)
                assert not any(s.strip() in text for s in secret_values), f"{r.type} {r.name}.{key} leaks a secret"


def test_outputs(night):
    assert night.outputs["headIp"] == "10.20.0.11"
    assert night.outputs["dashboardUrl"] == "http://10.20.0.11:8265"
    assert night.outputs["rayAddress"] == "10.20.0.11:6379"
    assert [(n["name"], n["tier"]) for n in night.outputs["nodes"]] == [(n, "always-on") for n in AO] + [
        (n, "heavy-compute") for n in HC
    ]
    assert night.outputs["liveTiers"] == ["always-on", "heavy-compute"]
