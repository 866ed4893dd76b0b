"""One Ubuntu VM cloned from the vSphere template, configured by cloud-init; on the
monitoring host and redis.host, with a data disk that outlives it (render/data_disk.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import pulumi
import pulumi_tls as tls
import pulumi_vsphere as vsphere

from components.render import cloud_init, data_disk
from components.model.config import Vsphere


# VM inputs that only matter when the VM is cloned (template-derived, or cloud-init).
SET_AT_CLONE = (
    "clone",
    "extraConfig",
    "guestId",
    "scsiType",
    "firmware",
    "networkInterfaces[0].adapterType",
    "disks[0].thinProvisioned",
    "disks[0].eagerlyScrub",
)

# The VM's disks entry of the data disk (after the template's disk0).
DATA_DISK_ENTRY = "disks[1]"


@dataclass(frozen=True)
class Placement:
    """Where VMs go, looked up once per stack from the names in config."""

    resource_pool_id: str
    datastore_id: str
    datastore_name: str  # a vsphere.VirtualDisk names its datastore and datacenter
    datacenter_name: str
    network_id: str
    template: vsphere.GetVirtualMachineResult
    folder: Optional[str]
    compute_cluster_id: Optional[str]  # for DRS rules; None when VMs go to a bare resource pool

    @staticmethod
    def lookup(names: Vsphere) -> "Placement":
        datacenter = vsphere.get_datacenter(name=names.datacenter)
        cluster = (
            vsphere.get_compute_cluster(name=names.compute_cluster, datacenter_id=datacenter.id) if names.compute_cluster else None
        )
        if names.resource_pool:
            pool_id = vsphere.get_resource_pool(name=names.resource_pool, datacenter_id=datacenter.id).id
        else:
            assert cluster is not None  # the config requires computeCluster or resourcePool
            pool_id = cluster.resource_pool_id
        return Placement(
            resource_pool_id=pool_id,
            datastore_id=vsphere.get_datastore(name=names.datastore, datacenter_id=datacenter.id).id,
            datastore_name=names.datastore,
            datacenter_name=names.datacenter,
            network_id=vsphere.get_network(name=names.network, datacenter_id=datacenter.id).id,
            template=vsphere.get_virtual_machine(name=names.template, datacenter_id=datacenter.id),
            folder=names.folder,
            compute_cluster_id=cluster.id if cluster else None,
        )


@dataclass(frozen=True)
class DataDiskArgs:
    size_gb: int
    vmdk_path: str  # data_disk.vmdk_path


@dataclass(frozen=True)
class VmArgs:
    name: str
    vcpu: int
    memory_gb: int
    disk_gb: int
    metadata: str  # cloud_init.metadata
    user_data: Callable[[str, str], str]  # (host private key, host public key) -> cloud_init.user_data
    tier_tag_id: pulumi.Input[str]
    data_disk: Optional[DataDiskArgs] = None  # on the nodes whose data must outlive the VM


class Vm(pulumi.ComponentResource):
    """A node's VM and its SSH host key."""

    def __init__(self, args: VmArgs, placement: Placement, opts: Optional[pulumi.ResourceOptions] = None):
        name = args.name
        super().__init__("ray-cluster:index:Vm", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        template = placement.template
        template_disk = template.disks[0]

        self.host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=child)
        user_data = pulumi.Output.all(
            self.host_key.private_key_openssh, self.host_key.public_key_openssh
        ).apply(lambda keys: args.user_data(keys[0], keys[1]))
        # The user-data carries the host private key: keep it secret in state and diffs.
        guestinfo: pulumi.Output[dict[str, str]] = user_data.apply(lambda text: cloud_init.guestinfo(args.metadata, text))
        extra_config: pulumi.Output[dict[str, str]] = pulumi.Output.secret(guestinfo)
        disks = [
            vsphere.VirtualMachineDiskArgs(
                label="disk0",
                # vSphere cannot shrink a cloned disk: never ask for less than the template's.
                size=max(args.disk_gb, int(template_disk.size)),
                thin_provisioned=template_disk.thin_provisioned,
                eagerly_scrub=template_disk.eagerly_scrub,
            )
        ]
        self.data_disk: Optional[vsphere.VirtualDisk] = None
        if args.data_disk is not None:
            self.data_disk = self._data_disk(name, args.data_disk, placement)
            disks.append(
                vsphere.VirtualMachineDiskArgs(
                    label="data",
                    # Attached, not created by the VM: deleting the VM detaches it first and keeps
                    # the VMDK (terraform-provider-vsphere DiskDestroyOperation), for the next VM.
                    attach=True,
                    path=self.data_disk.vmdk_path,
                    datastore_id=placement.datastore_id,
                    unit_number=data_disk.UNIT_NUMBER,
                )
            )

        self.vm = vsphere.VirtualMachine(
            name,
            name=name,
            resource_pool_id=placement.resource_pool_id,
            datastore_id=placement.datastore_id,
            folder=placement.folder,
            num_cpus=args.vcpu,
            memory=args.memory_gb * 1024,
            guest_id=template.guest_id,
            scsi_type=template.scsi_type,
            firmware=template.firmware,
            network_interfaces=[
                vsphere.VirtualMachineNetworkInterfaceArgs(
                    network_id=placement.network_id,
                    adapter_type=template.network_interface_types[0],
                )
            ],
            disks=disks,
            clone=vsphere.VirtualMachineCloneArgs(template_uuid=template.id),
            extra_config=extra_config,
            tags=[args.tier_tag_id],
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    # A VM name is unique in its folder, and a data disk is attached to one VM at a
                    # time: a replacement deletes (and so detaches from) the old VM first.
                    delete_before_replace=True,
                    # Set once, when the VM is cloned: a rebuilt template (a new UUID; every clone.*
                    # is ForceNew) or new cloud-init (extraConfig updates in place and reboots) must
                    # not replace or reboot a live VM. They reach a VM when it is created: heavy-tier
                    # VMs every evening, always-on VMs by the explicit replacement in README "Day 2".
                    ignore_changes=list(SET_AT_CLONE),
                    # A resize would power the VM off in place, before anything on it drains;
                    # as a replacement, the engine drains the node first, then replaces the VM.
                    # The data disk is partitioned and mounted by cloud-init, which runs when a VM
                    # is cloned: attached to a running VM it would be an unmounted disk.
                    replace_on_changes=["numCpus", "memory", DATA_DISK_ENTRY],
                ),
            ),
        )
        self.host_public_key = self.host_key.public_key_openssh
        self.register_outputs({"vmId": self.vm.id, "hostPublicKey": self.host_public_key})

    def _data_disk(self, name: str, args: DataDiskArgs, placement: Placement) -> vsphere.VirtualDisk:
        """The VMDK of its own. Not deleted_with the VM: it outlives a replaced VM; a destroy, or the
        node no longer hosting monitoring or Redis, deletes it after the VM (README "Monitoring data")."""
        return vsphere.VirtualDisk(
            f"{name}-data-disk",
            size=args.size_gb,
            vmdk_path=args.vmdk_path,
            datastore=placement.datastore_name,
            datacenter=placement.datacenter_name,
            type="thin",
            create_directories=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
