"""Value types of the stack config, each refusing a bad value in plain words with the fix."""
from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

# vSphere 8 per-VM maximums (virtual hardware 18 and later), from "Virtual Machine Compatibility",
# vSphere 8.0 Virtual Machine Administration: 768 logical processors, 24560 GB memory; 62 TB per
# virtual disk (configuration maximums). Above them vCenter refuses the clone halfway through an up.
MAX_VCPU = 768
MAX_MEMORY_GB = 24560
MAX_DISK_GB = 62 * 1024



class ConfigModel(BaseModel):
    """A section of the stack config: camelCase keys, unknown keys refused, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


YAML_BOOLEAN_HINT = (
    "a YAML boolean (true/false; some YAML readers also take yes/no/on/off unquoted as booleans): "
    'write the word in quotes, like "on"'
)


def refuse_booleans(value: Any) -> Any:
    """A word was expected: an unquoted true/false reached us as a boolean."""
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is {YAML_BOOLEAN_HINT}")
    return value


def _hostname(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", value):
        raise ValueError(
            f"{value!r} is not a host name: use 1 to 63 lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit (like ray-hc-1)"
        )
    return value


def _ssh_user(value: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value):
        raise ValueError(f"{value!r} is not a Linux user name: lowercase letters, digits, _ and -, starting with a letter or _, at most 32")
    if value == "root":
        raise ValueError("must not be root: cloud-init creates a sudo user for the program")
    return value


def _ssh_public_key(value: str) -> str:
    parts = value.split()
    kinds = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
    if len(parts) < 2 or parts[0] not in kinds or not re.fullmatch(r"[A-Za-z0-9+/]+=*", parts[1]):
        raise ValueError(
            "is not an OpenSSH public key: paste the one line of the .pub file, "
            "like `ssh-ed25519 AAAAC3Nza... you@host` (ssh-ed25519, ssh-rsa or ecdsa-sha2-nistp256/384/521)"
        )
    return value


def _digest(value: str) -> str:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
        raise ValueError(f"{value!r} is not an image digest: sha256: and 64 lowercase hex digits, as `docker images --digests` shows")
    return value


def ipv4_network(value: Any) -> Any:
    """An IPv4 network; a host address with a prefix gets the network it meant."""
    if not isinstance(value, str):
        return value
    try:
        return ipaddress.IPv4Network(value)
    except ipaddress.NetmaskValueError:
        raise ValueError(f"{value!r} has no valid prefix length: write a network like 10.20.0.0/24")
    except ValueError:
        try:
            meant = ipaddress.IPv4Network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 network: write one like 10.20.0.0/24")
        raise ValueError(f"{value!r} has host bits set: did you mean {meant}?")


def _proxy_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"{value!r} is not a proxy URL: write http://host:port, like http://proxy.dc1.example.internal:3128")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{value!r} has a bad port: write http://host:port")
    return value


def _registry_path(value: str) -> str:
    if "://" in value:
        raise ValueError(f"{value!r}: write the registry without a scheme, like harbor.dc1.example.internal/hub")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*", value):
        raise ValueError(f"{value!r} is not a registry path: host[:port][/project], lowercase, like harbor.dc1.example.internal/hub")
    return value


Hostname = Annotated[str, BeforeValidator(refuse_booleans), AfterValidator(_hostname)]
SshUser = Annotated[str, BeforeValidator(refuse_booleans), AfterValidator(_ssh_user)]
SshPublicKey = Annotated[str, AfterValidator(_ssh_public_key)]
Digest = Annotated[str, AfterValidator(_digest)]
Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(ipv4_network)]
RegistryPath = Annotated[str, AfterValidator(_registry_path)]
ProxyUrl = Annotated[str, AfterValidator(_proxy_url)]
Vcpu = Annotated[int, Field(gt=0, le=MAX_VCPU, description=f"vSphere 8 allows at most {MAX_VCPU} vCPUs per VM")]
MemoryGb = Annotated[int, Field(gt=0, le=MAX_MEMORY_GB)]
DiskGb = Annotated[int, Field(gt=0, le=MAX_DISK_GB)]
Port = Annotated[int, Field(ge=1, le=65535)]

# The data disk (components/render/data_disk.py) gets an MBR partition table, which sfdisk
# (util-linux, on every Ubuntu) writes; MBR addresses 2 TiB. Below 10 GB ext4's reserve and
# journal leave Prometheus too little.
MIN_DATA_DISK_GB, MAX_DATA_DISK_GB = 10, 2048


def _data_disk_gb(value: int) -> int:
    if not MIN_DATA_DISK_GB <= value <= MAX_DATA_DISK_GB:
        raise ValueError(
            f"{value} GB is outside {MIN_DATA_DISK_GB}..{MAX_DATA_DISK_GB}: the data disk keeps Prometheus, Grafana and "
            f"Redis data (at least {MIN_DATA_DISK_GB} GB) on an MBR partition (at most 2 TiB)"
        )
    return value


DataDiskGb = Annotated[int, AfterValidator(_data_disk_gb)]
