"""The data disk: a VMDK of its own on the monitoring host and on redis.host, which
outlives the VM (no Pulumi here; components/resources/vm.py attaches it).

vSphere keeps an attached disk when its VM is deleted (terraform-provider-vsphere
DiskDestroyOperation detaches it first), so a replaced VM gets the same disk back.
Cloud-init makes it usable on every new VM without ever formatting it twice: the
partition table is written only on a blank disk (cc_disk_setup.mkpart: "not overwrite
and (is_disk_used or is_filesystem)" skips), the file system only on a partition
without one (`partition: auto`, cc_disk_setup.find_device_node: a partition with our
label and type is reused, one with another file system is never touched).
`partition: none` would format the disk on every new VM, whatever it holds.

Prometheus, Grafana, Alertmanager and Redis keep their data in a directory each,
owned by the user the container runs as.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass

from components.render import alerting_config as ac

MOUNT_POINT = "/srv/ray-cluster-data"
LABEL = "ray-data"
FILESYSTEM = "ext4"
# Attached as unit 1 of the first SCSI controller, after the template's disk (unit 0): the guest's sdb.
UNIT_NUMBER = 1
DEVICE = "/dev/sdb"


@dataclass(frozen=True)
class DataDir:
    name: str
    uid: int
    gid: int

    @property
    def host(self) -> str:
        return f"{MOUNT_POINT}/{self.name}"

    @property
    def user(self) -> str:
        """The container's --user: the directory's owner."""
        return f"{self.uid}:{self.gid}"


# Each image's own user, so nothing inside the image changes.
PROMETHEUS = DataDir("prometheus", 65534, 65534)  # prom/prometheus: USER nobody
ALERTMANAGER = DataDir("alertmanager", 65534, ac.IMAGE_GID)  # prom/alertmanager: USER nobody
GRAFANA = DataDir("grafana", 472, 0)  # grafana/grafana: GF_UID 472, GF_GID 0
REDIS = DataDir("redis", 999, 999)  # redis: the image's redis user
ROLE_DIRS = {"monitoring": (PROMETHEUS, GRAFANA, ALERTMANAGER), "redis": (REDIS,)}


def data_dirs(roles: tuple[str, ...]) -> tuple[DataDir, ...]:
    return tuple(d for role in roles for d in ROLE_DIRS[role])


def cloud_config(roles: tuple[str, ...]) -> dict:
    """The user-data keys that partition, format (once) and mount the disk, then make the directories."""
    dirs = data_dirs(roles)
    make_dirs = " && ".join(f"install -d -m 0750 -o {d.uid} -g {d.gid} {shlex.quote(d.host)}" for d in dirs)
    # Never write the data onto the VM's own disk: no mounted data disk, no directories (the
    # containers then fail to start, and cloud-init reports the error).
    prepare = (
        f"mountpoint -q {MOUNT_POINT} || {{ echo 'ray-cluster: the data disk is not mounted at {MOUNT_POINT}' >&2; exit 1; }}; "
        f"{make_dirs}"
    )
    return {
        "disk_setup": {DEVICE: {"table_type": "mbr", "layout": True, "overwrite": False}},
        "fs_setup": [{"label": LABEL, "filesystem": FILESYSTEM, "device": DEVICE, "partition": "auto", "overwrite": False}],
        # nofail: a VM whose disk is missing still boots (and says so above) instead of hanging.
        "mounts": [[f"LABEL={LABEL}", MOUNT_POINT, FILESYSTEM, "defaults,nofail", "0", "2"]],
        "runcmd": [["sh", "-c", prepare]],
    }


def vmdk_path(cluster_name: str, stack: str, node_name: str) -> str:
    """The disk's path on the datastore: one folder per cluster and stack."""
    return f"{cluster_name}-{stack}-data/{node_name}.vmdk"
