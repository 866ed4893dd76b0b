"""Under Pulumi's mocks: the data disk that outlives a VM, and the head after its Redis.

The monitoring host and redis.host get a VMDK of their own (vsphere.VirtualDisk),
attached to their VM; cloud-init mounts it and makes one directory per stateful
container, owned by the user the container runs as; the containers bind those
directories. How the engine and the vSphere provider treat the disk on a replace
or a destroy is in tests/test_engine_rules.py; the cloud-init text against the real
schema checker in tests/test_cloud_init.py.
"""
import base64
import re
import shlex

import pytest
import yaml

from components.render import data_disk
from scripts.ops.program_mocks import run_program

CONTAINER = "docker:index/container:Container"
VM = "vsphere:index/virtualMachine:VirtualMachine"
DISK = "vsphere:index/virtualDisk:VirtualDisk"
NIGHT = "2026-11-22T22:00:00+01:00"
STATEFUL = {"prometheus": "ray-ao-2", "grafana": "ray-ao-2", "alertmanager": "ray-ao-2", "redis": "ray-ao-1"}


def user_data(vm) -> dict:
    return yaml.safe_load(base64.b64decode(vm.inputs["extraConfig"]["guestinfo.userdata"]))


def provider_node(registration) -> str:
    return registration.provider.rsplit("::", 1)[-1].removesuffix("-docker-id")


def made_dirs(document: dict) -> dict[str, str]:
    """Directory -> owner uid:gid, from the `install -d` lines the user-data runs."""
    script = " ".join(" ".join(c) if isinstance(c, list) else c for c in document["runcmd"])
    return {path: f"{uid}:{gid}" for uid, gid, path in re.findall(r"install -d -m \d+ -o (\d+) -g (\d+) (\S+)", script)}


def test_only_the_monitoring_and_redis_hosts_get_a_data_disk_attached_to_their_vm(night, raw, prod_config):
    disks = {d.name: d for d in night.of_type(DISK)}
    assert set(disks) == {"ray-ao-1-data-disk", "ray-ao-2-data-disk"}  # the head (Redis), the monitoring host
    for node in ("ray-ao-1", "ray-ao-2"):
        disk, vm = disks[f"{node}-data-disk"], night.one(VM, node)
        assert disk.inputs["size"] == prod_config.data_disk_gb
        assert disk.inputs["vmdkPath"] == f"ray-prod-data/{node}.vmdk"
        assert (disk.inputs["datastore"], disk.inputs["datacenter"]) == (raw["vsphere"]["datastore"], raw["vsphere"]["datacenter"])
        assert disk.inputs["createDirectories"] is True
        # Not deleted_with the VM, not parented to what the VM carries: a replaced VM leaves it be.
        assert not disk.deleted_with and not disk.retain_on_delete
        root, data = vm.inputs["disks"]
        assert root["label"] == "disk0" and "attach" not in root
        assert data["attach"] is True and data["path"] == disk.inputs["vmdkPath"] and "size" not in data
        assert data["unitNumber"] == data_disk.UNIT_NUMBER and data["datastoreId"] == vm.inputs["datastoreId"]
        assert disk.urn in vm.property_dependencies["disks"]
        # Replaced, never hot-plugged: cloud-init mounts it when a VM is cloned; one VM holds it at a time.
        assert vm.delete_before_replace and "disks[1]" in vm.replace_on_changes
    for vm in night.of_type(VM):
        if vm.name not in ("ray-ao-1", "ray-ao-2"):
            assert len(vm.inputs["disks"]) == 1 and "disk_setup" not in user_data(vm), vm.name


def test_stateful_containers_write_to_directories_cloud_init_makes_on_the_data_disk(night):
    for name, node in STATEFUL.items():
        container = night.one(CONTAINER, f"{node}-{name}")
        assert provider_node(container) == node
        assert not [v for v in container.inputs.get("volumes") or [] if v.get("volumeName")], "no named volume on the VM's disk"
        document = user_data(night.one(VM, node))
        owners = made_dirs(document)
        (mount,) = [m for m in container.inputs["mounts"] if m["source"].startswith(data_disk.MOUNT_POINT + "/")]
        assert mount["type"] == "bind" and not mount["readOnly"]
        # The container runs as the owner of the directory the VM made for it.
        assert owners[mount["source"]] == container.inputs["user"], name
        assert document["mounts"][0][:2] == [f"LABEL={data_disk.LABEL}", data_disk.MOUNT_POINT]
        # The directories are only made on the mounted disk, never on the VM's own.
        prepare = next(c for c in document["runcmd"] if mount["source"] in " ".join(c))
        assert f"mountpoint -q {data_disk.MOUNT_POINT} ||" in prepare[-1] and "exit 1" in prepare[-1]
        assert shlex.split(prepare[-1])  # one shell line


def test_the_data_disk_size_comes_from_config(raw, tmp_path):
    raw["at"] = NIGHT
    raw["dataDiskGb"] = 250
    assert {d.inputs["size"] for d in run_program(raw, tmp_path).of_type(DISK)} == {250}


@pytest.fixture(scope="module")
def redis_away(tmp_path_factory):
    from conftest import prod_raw

    raw = prod_raw()
    raw["at"] = NIGHT
    raw["redis"] = {**raw["redis"], "host": "ray-ao-3"}
    return run_program(raw, tmp_path_factory.mktemp("redis-away"))


def test_a_redis_on_another_vm_is_registered_healthy_before_the_head_container(redis_away):
    redis = redis_away.one(CONTAINER, "ray-ao-3-redis")
    head = redis_away.one(CONTAINER, "ray-ao-1-ray")
    assert provider_node(redis) == "ray-ao-3" and provider_node(head) == "ray-ao-1"
    assert redis.urn in head.dependencies, "the head starts once its Redis runs, wherever it runs"
    # Created only once its health check passes (resourceDockerContainerCreate `wait`).
    assert redis.inputs["wait"] is True and redis.inputs["waitTimeout"] > 0 and redis.inputs["healthcheck"]["tests"]
    order = [r.urn for r in redis_away.registrations]
    assert order.index(redis.urn) < order.index(head.urn)
    # A plain edge, not an input: a replaced Redis never replaces the head (tests/test_engine_rules.py).
    assert all(redis.urn not in urns for urns in head.property_dependencies.values())
    # Its data disk moved with it; the head keeps none (monitoring stays on ray-ao-2).
    assert {d.name for d in redis_away.of_type(DISK)} == {"ray-ao-2-data-disk", "ray-ao-3-data-disk"}
