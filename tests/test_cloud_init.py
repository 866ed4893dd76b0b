"""The cloud-init documents every node gets, read by Debian's real cloud-init.

The metadata and user-data go through the same path as on a VM: the exact
`guestinfo.*` values the program puts in `extra_config` are handed to
cloud-init's VMware datasource (which also reads them from VMX_GUESTINFO_*
environment variables), decoded, and then validated: user-data with
`cloud-init schema`, the netplan v2 network with cloud-init's own parser and
with netplan itself, which renders it to systemd-networkd on the Ubuntu VMs.
"""
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from components.render import cloud_init, data_disk
from conftest import require_tool


@pytest.fixture(autouse=True)
def cloud_init_installed():
    require_tool("cloud-init", "Debian's cloud-init")


HOST_PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedHostKey host\n"

# Runs under Debian's python3, where cloud-init lives; prints what the datasource saw.
READ_AS_VMWARE_DATASOURCE = """
import json, sys
from cloudinit.sources import DataSourceVMware as vmware
from cloudinit.net.network_state import parse_net_config_data
metadata = vmware.process_metadata(vmware.load_json_or_yaml(vmware.guestinfo_envvar("metadata")))
state = parse_net_config_data(metadata["network"]["config"])
open(sys.argv[1], "w").write(vmware.guestinfo_envvar("userdata"))
print(json.dumps({
    "hostname": metadata["local-hostname"],
    "instance_id": metadata["instance-id"],
    "addresses": [s.get("address") for i in state.iter_interfaces() for s in i["subnets"]],
    "default_via": [r["gateway"] for i in state.iter_interfaces() for s in i["subnets"]
                    for r in s.get("routes", []) if r.get("prefix") == 0 or r.get("netmask") == "0.0.0.0"],
    "dns": state.dns_nameservers,
}))
"""


@pytest.mark.parametrize("index", range(6))
def test_each_node_documents_pass_cloud_init(prod_config, tmp_path, index):
    placed = prod_config.placed_nodes[index]
    extra_config = cloud_init.guestinfo(
        cloud_init.metadata(prod_config, placed),
        cloud_init.user_data(prod_config, placed, HOST_PRIVATE, HOST_PUBLIC),
    )
    env = {"PATH": "/usr/bin:/bin", "VMX_GUESTINFO": "1"}
    env.update({"VMX_" + key.upper().replace(".", "_"): value for key, value in extra_config.items()})
    user_data_file = tmp_path / "user-data"
    seen = json.loads(
        subprocess.run(
            ["/usr/bin/python3", "-c", READ_AS_VMWARE_DATASOURCE, str(user_data_file)],
            env=env, capture_output=True, text=True, check=True,
        ).stdout
    )
    node = placed.node
    assert seen["hostname"] == seen["instance_id"] == node.name
    assert f"{node.ip}/24" in seen["addresses"] or str(node.ip) in seen["addresses"]
    assert seen["default_via"] == [str(prod_config.network.gateway)]
    assert seen["dns"] == [str(ip) for ip in prod_config.network.dns_servers]

    schema = subprocess.run(["cloud-init", "schema", "-c", str(user_data_file)], capture_output=True, text=True)
    assert schema.returncode == 0 and "Valid cloud-config" in schema.stdout, schema.stdout + schema.stderr
    user_data = user_data_file.read_text()
    assert user_data.startswith("#cloud-config\n")
    assert HOST_PUBLIC.strip() in user_data and "ed25519_private" in user_data
    assert prod_config.ssh.public_key in user_data.replace("\n    ", " ")


def test_schema_check_catches_a_broken_document(tmp_path):
    """The check above can fail: a wrong type in a known module is an error."""
    bad = tmp_path / "bad"
    bad.write_text("#cloud-config\nusers: 5\n")
    result = subprocess.run(["cloud-init", "schema", "-c", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0


def netplan_generate(network: dict, root: Path) -> subprocess.CompletedProcess:
    """netplan, which renders cloud-init's v2 network config on Ubuntu, run on `network` under `root`."""
    require_tool("netplan", "netplan.io")
    config = root / "etc" / "netplan" / "50-cloud-init.yaml"  # where cloud-init writes it
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"network": network}))
    config.chmod(0o600)
    return subprocess.run(["netplan", "generate", "--root-dir", str(root)], capture_output=True, text=True)


@pytest.mark.parametrize("index", range(6))
def test_each_node_network_is_rendered_by_netplan(prod_config, tmp_path, index):
    placed = prod_config.placed_nodes[index]
    net = prod_config.network
    result = netplan_generate(yaml.safe_load(cloud_init.metadata(prod_config, placed))["network"], tmp_path)
    assert result.returncode == 0, result.stderr
    (networkd,) = (tmp_path / "run" / "systemd" / "network").glob("*.network")
    lines = set(networkd.read_text().splitlines())
    assert {"Name=en*", f"Address={placed.node.ip}/{net.cidr.prefixlen}", "Destination=0.0.0.0/0", f"Gateway={net.gateway}"} <= lines
    assert {f"DNS={ip}" for ip in net.dns_servers} <= lines


def test_netplan_catches_a_broken_network(prod_config, tmp_path):
    """The check above can fail: an address without its prefix length is refused."""
    network = yaml.safe_load(cloud_init.metadata(prod_config, prod_config.head))["network"]
    network["ethernets"]["primary"]["addresses"] = [str(prod_config.head.node.ip)]
    assert netplan_generate(network, tmp_path).returncode != 0


def test_cloud_init_blanks_the_user_data_after_reading_it(prod_config, tmp_path):
    """The metadata's `redact` list, handed to cloud-init's own redaction, clears the user-data
    (it carries the host private key) and its encoding in guestinfo."""
    calls = tmp_path / "rpctool-calls"
    rpctool = tmp_path / "vmware-rpctool"
    rpctool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {calls}\n')
    rpctool.chmod(0o755)
    placed = prod_config.placed_nodes[3]
    redact = yaml.safe_load(cloud_init.metadata(prod_config, placed))["redact"]
    subprocess.run(
        ["/usr/bin/python3", "-c",
         "import json, sys\nfrom cloudinit.sources import DataSourceVMware as vmware\n"
         "vmware.guestinfo_redact_keys(json.loads(sys.argv[1]), sys.argv[2])",
         json.dumps(redact), str(rpctool)],
        check=True, capture_output=True, text=True,
    )
    blanked = calls.read_text().splitlines()
    assert "info-set guestinfo.userdata ---" in blanked
    assert "info-set guestinfo.userdata.encoding  " in blanked  # cloud-init writes a space: guestinfo cannot be empty
    # Exactly the keys that carry the user-data; the metadata (no secret) stays readable.
    assert {line.split()[1] for line in blanked} == {"guestinfo.userdata", "guestinfo.userdata.encoding"}

def test_libyaml_writes_the_very_text_pyyaml_would(prod_config):
    # The faster dumper must not change a byte: a changed user-data reboots every VM (extra_config).
    for placed in prod_config.placed_nodes:
        assert cloud_init.user_data(prod_config, placed, HOST_PRIVATE, HOST_PUBLIC) == "#cloud-config\n" + yaml.safe_dump(
            yaml.safe_load(cloud_init.user_data(prod_config, placed, HOST_PRIVATE, HOST_PUBLIC)), sort_keys=False
        )
        assert cloud_init.metadata(prod_config, placed) == yaml.safe_dump(yaml.safe_load(cloud_init.metadata(prod_config, placed)), sort_keys=False)

# ---- The data disk: formatted once, mounted on every VM it is attached to ----

# cloud-init's own disk_setup/fs_setup code (cc_disk_setup.mkpart and mkfs) on our entries, with
# only the probing of the device stood in for (no disk here): what it finds -> what it runs.
DISK_SETUP_DECISIONS = """
import json, sys
from cloudinit.config import cc_disk_setup as d
document, found = json.loads(sys.argv[1]), json.loads(sys.argv[2])
disk = {"name": "sdb", "type": "disk", "fstype": None, "label": None}
children = [{"name": "sdb1", "type": "part", **f} for f in found]  # what lsblk lists under the disk
ran = []
def partitioned(table_type, device, layout):
    ran.append(["partition", device])
    children.append({"name": "sdb1", "type": "part", "fstype": None, "label": None})
d.assert_and_settle_device = lambda device: None
d.is_device_valid = lambda device, partition=False: True
d.check_partition_layout = lambda table_type, device, layout: False  # as on a grown disk
d.enumerate_disk = lambda device, nodeps=False: iter([disk] + ([] if nodeps else children))
d.check_fs = lambda device: next(((c["label"], c["fstype"], None) for c in children if "/dev/" + c["name"] == device), (None, None, None))
d.exec_mkpart = partitioned
d.get_hdd_size = lambda device: 100 * 2**30
d.subp.which = lambda name: "/sbin/" + name
d.subp.subp = lambda cmd, *args, **kwargs: ran.append(cmd) or ("", "")
for device, definition in document["disk_setup"].items():
    d.mkpart(device, definition)
for fs in document["fs_setup"]:
    d.mkfs(fs)
print(json.dumps(ran))
"""


def disk_setup_runs(document: dict, found: list[dict]) -> list:
    """What cloud-init runs for `document` on a disk whose partition 1 is `found` (none: blank)."""
    return json.loads(subprocess.run(
        ["/usr/bin/python3", "-c", DISK_SETUP_DECISIONS, json.dumps(document), json.dumps(found)],
        capture_output=True, text=True, check=True,
    ).stdout)


def test_the_data_disk_is_formatted_when_blank_and_never_again(prod_config, tmp_path):
    monitoring = prod_config.monitoring_host
    document = yaml.safe_load(cloud_init.user_data(prod_config, monitoring, HOST_PRIVATE, HOST_PUBLIC))
    assert {"disk_setup", "fs_setup", "mounts"} <= set(document)  # schema-checked with the rest above
    blank = disk_setup_runs(document, [])
    assert blank[0] == ["partition", data_disk.DEVICE]
    (mkfs,) = [cmd for cmd in blank if cmd[0].startswith("/sbin/mkfs")]
    assert mkfs[0] == f"/sbin/mkfs.{data_disk.FILESYSTEM}" and data_disk.LABEL in mkfs and f"{data_disk.DEVICE}1" in mkfs
    # The disk a replaced VM left behind: nothing is partitioned or formatted.
    kept = {"fstype": data_disk.FILESYSTEM, "label": data_disk.LABEL}
    assert disk_setup_runs(document, [kept]) == []
    # Someone else's file system on it: left alone too.
    assert disk_setup_runs(document, [{"fstype": "xfs", "label": "other"}]) == []
    # The control: `partition: none` (the whole disk) would format it again on every new VM.
    document["fs_setup"][0]["partition"] = "none"
    assert any(cmd[0].startswith("/sbin/mkfs") for cmd in disk_setup_runs(document, [kept]))


def test_only_nodes_with_data_keep_a_data_disk(prod_config):
    for placed in prod_config.placed_nodes:
        document = yaml.safe_load(cloud_init.user_data(prod_config, placed, HOST_PRIVATE, HOST_PUBLIC))
        has_disk = placed.node.name in (prod_config.monitoring_host.node.name, prod_config.redis_host.node.name)
        assert ("mounts" in document) == has_disk, placed.node.name


# ---- A nightly VM installs nothing: the template's Docker, the LAN's images ----


def _stub_bin(tmp_path, present: set[str]):
    """A PATH with `present` as stub commands and an apt-get that records its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in present:
        (bin_dir / command).write_text("#!/bin/sh\n")
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/apt-calls\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def _runcmd_script(cfg, placed) -> str:
    document = yaml.safe_load(cloud_init.user_data(cfg, placed, HOST_PRIVATE, HOST_PUBLIC))
    [check] = [cmd for cmd in document["runcmd"] if cmd[:2] == ["sh", "-c"] and "missing=" in cmd[2]]
    return check[2]


def test_a_heavy_vm_cloud_init_installs_nothing_and_names_what_the_template_lacks(prod_config, tmp_path):
    heavy = next(p for p in prod_config.placed_nodes if not p.tier.always_on)
    user_data = cloud_init.user_data(prod_config, heavy, HOST_PRIVATE, HOST_PUBLIC)
    document = yaml.safe_load(user_data)
    assert not {"packages", "package_update", "package_upgrade", "apt", "snap"} & set(document)
    assert "http://" not in user_data and "https://" not in user_data and "docker.io" not in str(document["runcmd"][1:])
    # /usr/bin has python3 here; docker and ufw are absent from the stub PATH (and from this machine's /usr/bin).
    path = _stub_bin(tmp_path, {"python3"})
    env = {"PATH": path}
    result = subprocess.run(["/bin/sh", "-c", _runcmd_script(prod_config, heavy)], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "the template lacks docker.io" in result.stderr
    assert not (tmp_path / "apt-calls").exists(), "a nightly VM must never run apt"


def test_a_heavy_vm_with_a_complete_template_passes_the_check(prod_config, tmp_path):
    heavy = next(p for p in prod_config.placed_nodes if not p.tier.always_on)
    env = {"PATH": _stub_bin(tmp_path, {"docker", "ufw", "python3", "rsyslogd"})}
    result = subprocess.run(["/bin/sh", "-c", _runcmd_script(prod_config, heavy)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "apt-calls").exists()


def test_an_always_on_vm_installs_only_what_its_template_lacks(prod_config, tmp_path):
    always_on = prod_config.head
    env = {"PATH": _stub_bin(tmp_path, {"ufw", "python3", "rsyslogd"})}
    result = subprocess.run(["/bin/sh", "-c", _runcmd_script(prod_config, always_on)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "apt-calls").read_text().splitlines()
    assert calls[0] == "update" and calls[1].split()[-1] == "docker.io" and "ufw" not in calls[1]
