"""Cloud-init documents for one VM, as text (no Pulumi).

vSphere hands them to the guest through `guestinfo.metadata` / `guestinfo.userdata`
(cloud-init's VMware datasource). The metadata carries the hostname and the
static address as netplan v2; the user-data creates the SSH user, installs the
program-generated SSH host key (so every later SSH connection can pin it) and
uses the template's Docker engine. On the monitoring host and redis.host it also
formats (once) and mounts the data disk (render/data_disk.py).

A VM of a windowed tier (cloned every evening) never installs anything: its
bring-up must not depend on the internet or a package mirror. The template
must carry Docker, ufw, python3 and tzdata (README "Template requirements");
a clone whose template lacks one says which on its console and in cloud-init's
output, and its `up` fails. An always-on VM (cloned once) installs what its
template lacks.
"""
from __future__ import annotations

import base64

import yaml

from components.model.config import ClusterConfig, PlacedNode, Proxy
from components.render import data_disk
from components.render.ray_start import HOST_DATA_DIR, IMAGE_GID, IMAGE_UID

USER_DATA_KEY = "userdata"  # guestinfo.<key>, as cloud-init's VMware datasource names it

# libyaml's dumper where PyYAML has it: the same text (tests/test_cloud_init.py compares), 4x faster per node.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _yaml(document: dict) -> str:
    return yaml.dump(document, Dumper=_DUMPER, sort_keys=False)


def metadata(cfg: ClusterConfig, placed: PlacedNode) -> str:
    net = cfg.network
    nameservers = {"addresses": [str(ip) for ip in net.dns_servers]}
    if net.search_domains:
        nameservers["search"] = list(net.search_domains)
    document = {
        "instance-id": placed.node.name,
        "local-hostname": placed.node.name,
        # Once read, cloud-init blanks the user-data (it holds the host private key) in the
        # VM's guestinfo, so guest processes cannot read it back (vmware-rpctool info-get).
        "redact": [USER_DATA_KEY],
        "network": {
            "version": 2,
            "ethernets": {
                "primary": {
                    # vSphere names the single vmxnet3 NIC ens192/ens160 by slot: match any.
                    "match": {"name": "en*"},
                    "dhcp4": False,
                    "addresses": [f"{placed.node.ip}/{net.cidr.prefixlen}"],
                    "routes": [{"to": "0.0.0.0/0", "via": str(net.gateway)}],
                    "nameservers": nameservers,
                }
            },
        },
    }
    return _yaml(document)


def user_data(cfg: ClusterConfig, placed: PlacedNode, host_private_key: str, host_public_key: str) -> str:
    """The #cloud-config for one node; carries the host private key, so it is secret."""
    document = {
        "hostname": placed.node.name,
        "manage_etc_hosts": True,
        "groups": ["docker"],
        "users": [
            {
                "name": cfg.ssh.user,
                "groups": ["sudo", "docker"],
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": cfg.ssh.authorized_keys,
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
        # Replace the template's host keys with the one the program generated and pins.
        "ssh_deletekeys": True,
        "ssh_keys": {"ed25519_private": host_private_key, "ed25519_public": host_public_key.strip()},
        "growpart": {"mode": "auto", "devices": ["/"]},
        "resize_rootfs": True,
        "runcmd": [
            ["sh", "-c", packages_script(installs=placed.tier.always_on)],
            ["systemctl", "enable", "--now", "docker"],
            # Ray's temp and spill dirs, on the grown root disk, owned by the image's user.
            ["install", "-d", "-m", "0755", "-o", str(IMAGE_UID), "-g", str(IMAGE_GID), HOST_DATA_DIR],
        ],
    }
    roles = cfg.data_disk_roles(placed.node.name)
    if roles:
        disk = data_disk.cloud_config(roles)
        document["runcmd"] += disk.pop("runcmd")
        document.update(disk)
    if cfg.proxy is not None:
        document.update(proxy_settings(cfg, cfg.proxy))
    return "#cloud-config\n" + _yaml(document)


DOCKER_PROXY_DROP_IN = "/etc/systemd/system/docker.service.d/http-proxy.conf"


def proxy_settings(cfg: ClusterConfig, proxy: Proxy) -> dict:
    """apt and the Docker engine (which pulls every image) through the data centre's proxy.

    The drop-in is written before the packages are installed (cloud-init's
    write_files runs in its init stage, package installs later), so Docker's
    first start already has it. The cluster network bypasses the proxy.
    """
    https = proxy.https or proxy.http
    no_proxy = ",".join(["localhost", "127.0.0.1", str(cfg.network.cidr), *proxy.no_proxy])
    service = (
        "[Service]\n"
        f'Environment="HTTP_PROXY={proxy.http}" "HTTPS_PROXY={https}" "NO_PROXY={no_proxy}"\n'
    )
    return {
        "apt": {"http_proxy": proxy.http, "https_proxy": https},
        "write_files": [{"path": DOCKER_PROXY_DROP_IN, "permissions": "0644", "content": service}],
    }


# The packages the template must carry (Ubuntu's cloud images have all but docker.io), and how to tell.
TEMPLATE_PACKAGES = {
    "docker.io": "command -v docker",
    "ufw": "command -v ufw",
    "python3": "command -v python3",
    "tzdata": "test -e /usr/share/zoneinfo/Etc/UTC",
    "rsyslog": "command -v rsyslogd",  # ships the node's logs to the monitoring host
}


def packages_script(installs: bool) -> str:
    """Shell that checks the template's packages; installs the missing ones only if `installs`."""
    missing = " ".join(f"{test} >/dev/null || missing=\"$missing {pkg}\";" for pkg, test in TEMPLATE_PACKAGES.items())
    if installs:
        act = 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $missing'
    else:
        act = 'echo "ray-cluster: the template lacks$missing (README: Template requirements); nothing is installed on a nightly VM" >&2; exit 1'
    return f'missing=""; {missing} [ -z "$missing" ] || {{ {act}; }}'


def guestinfo(metadata_text: str, user_data_text: str) -> dict[str, str]:
    """The VM `extra_config` entries that deliver both documents to cloud-init."""
    encode = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    return {
        "guestinfo.metadata": encode(metadata_text),
        "guestinfo.metadata.encoding": "base64",
        f"guestinfo.{USER_DATA_KEY}": encode(user_data_text),
        f"guestinfo.{USER_DATA_KEY}.encoding": "base64",
    }


# Run over SSH as the node's user: the same keys as the user-data, for a VM cloned before they changed.
AUTHORIZED_KEYS_UPDATE = (
    "umask 077 && mkdir -p ~/.ssh && cat > ~/.ssh/authorized_keys.new && mv ~/.ssh/authorized_keys.new ~/.ssh/authorized_keys"
)


def authorized_keys(cfg: ClusterConfig) -> str:
    """The node user's authorized_keys file (stdin of AUTHORIZED_KEYS_UPDATE)."""
    return "".join(f"{key}\n" for key in cfg.ssh.authorized_keys)
