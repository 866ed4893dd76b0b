"""How the providers this program uses diff their inputs, and read values back.

The engine model (scripts/ops/engine_rules.py) asks these rules which input changes
replace a resource, which in-place updates reboot a VM, which are accepted but never
applied, and how a provider spells a value when it reads it back on refresh. Each
rule cites the provider source it was read from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from components.render.containers import go_duration

@dataclass(frozen=True)
class ProviderRules:
    """How one resource type's provider diffs its inputs (top-level keys)."""

    source: str
    replace_keys: frozenset[str] = frozenset()
    replace_all_but: Optional[frozenset[str]] = None  # every key replaces except these
    delete_before_replace: bool = False  # the provider's own default
    reboot_keys: frozenset[str] = frozenset()  # an in-place update of these restarts the VM
    no_effect_keys: frozenset[str] = frozenset()  # accepted into state, never applied

    def replaces(self, key: str) -> bool:
        if self.replace_all_but is not None:
            return key not in self.replace_all_but
        return key in self.replace_keys


_COMMAND = ProviderRules(
    source="pulumi/pulumi-command 1.2.1: only `triggers` is replaceOnChanges; any other change is an "
    "Update that re-runs `update` or `create` (provider/pkg/provider/{local,remote}/command.go)",
    replace_keys=frozenset({"triggers"}),
)

PROVIDERS: dict[str, ProviderRules] = {
    "vsphere:index/virtualMachine:VirtualMachine": ProviderRules(
        source="vmware/terraform-provider-vsphere v2.16.1 resource_vsphere_virtual_machine.go: "
        "resourceVSphereVirtualMachineCustomizeDiff forces a new VM on any clone.0.* change; "
        "extra_config_reboot_required (default true), guest_id, firmware and CPU/memory changes "
        "without hot-add power the VM off (virtual_machine_config_structure.go); disks[*] is never ForceNew: "
        "a disk is added, detached or grown in place (DiskApplyOperation), DiskSubresource.DiffExisting refuses "
        "a shrink or a changed `attach` (virtualdevice/virtual_machine_disk_subresource.go)",
        replace_keys=frozenset({"clone", "replaceTrigger", "ovfDeploy"}),
        delete_before_replace=False,
        reboot_keys=frozenset({"extraConfig", "guestId", "firmware", "numCpus", "memory"}),
    ),
    "vsphere:index/virtualDisk:VirtualDisk": ProviderRules(
        source="vmware/terraform-provider-vsphere v2.16.1 (6e5d67ea) vsphere/resource_vsphere_virtual_disk.go "
        "resourceVSphereVirtualDisk: vmdk_path, datastore, type, adapter_type, datacenter, create_directories are "
        "ForceNew; size updates in place (resourceVSphereVirtualDiskUpdate extends it, refuses to shrink)",
        replace_keys=frozenset({"vmdkPath", "datastore", "type", "adapterType", "datacenter", "createDirectories"}),
    ),
    "vsphere:index/tagCategory:TagCategory": ProviderRules(
        source="vmware/terraform-provider-vsphere vsphere/resource_vsphere_tag_category.go: cardinality is ForceNew; "
        "associable_types updates in place (resourceVSphereTagCategoryUpdate adds types)",
        replace_keys=frozenset({"cardinality"}),
    ),
    "vsphere:index/tag:Tag": ProviderRules(
        source="vmware/terraform-provider-vsphere vsphere/resource_vsphere_tag.go: category_id is ForceNew",
        replace_keys=frozenset({"categoryId"}),
    ),
    "vsphere:index/computeClusterVmAntiAffinityRule:ComputeClusterVmAntiAffinityRule": ProviderRules(
        source="vmware/terraform-provider-vsphere vsphere/resource_vsphere_compute_cluster_vm_anti_affinity_rule.go: compute_cluster_id is ForceNew",
        replace_keys=frozenset({"computeClusterId"}),
    ),
    "tls:index/privateKey:PrivateKey": ProviderRules(
        source="hashicorp/terraform-provider-tls internal/provider/resource_private_key.go: every argument RequiresReplace",
        replace_all_but=frozenset(),
    ),
    "tls:index/selfSignedCert:SelfSignedCert": ProviderRules(
        source="hashicorp/terraform-provider-tls internal/provider/resource_self_signed_cert.go: every argument RequiresReplace",
        replace_all_but=frozenset(),
    ),
    "tls:index/certRequest:CertRequest": ProviderRules(
        source="hashicorp/terraform-provider-tls internal/provider/resource_cert_request.go: every argument RequiresReplace",
        replace_all_but=frozenset(),
    ),
    "tls:index/locallySignedCert:LocallySignedCert": ProviderRules(
        source="hashicorp/terraform-provider-tls internal/provider/resource_locally_signed_cert.go: every argument RequiresReplace",
        replace_all_but=frozenset(),
    ),
    "random:index/randomPassword:RandomPassword": ProviderRules(
        source="hashicorp/terraform-provider-random internal/provider/resource_password.go: every argument RequiresReplace",
        replace_all_but=frozenset(),
    ),
    "command:remote:Command": _COMMAND,
    "command:local:Command": _COMMAND,
    "command:remote:CopyToRemote": ProviderRules(
        source="pulumi/pulumi-command 1.2.1 provider/pkg/provider/remote/copyToRemote.go: `triggers` replaces",
        replace_keys=frozenset({"triggers"}),
    ),
    "docker:index/container:Container": ProviderRules(
        source="kreuzwerker/terraform-provider-docker v4.5.0 internal/provider/resource_docker_container.go: every argument "
        "ForceNew but the updatable ones (resourceDockerContainerUpdate); pulumi-docker sets "
        "DeleteBeforeReplace for containers; healthcheck, destroy_grace_seconds and friends are "
        "accepted into state but never applied",
        replace_all_but=frozenset(
            {"restart", "maxRetryCount", "memory", "memoryReservation", "memorySwap", "cpuShares", "cpuSet",
             "mustRun", "healthcheck", "tmpfs", "init", "cpuPeriod", "cpuQuota", "wait", "waitTimeout",
             "destroyGraceSeconds"}
        ),
        delete_before_replace=True,
        no_effect_keys=frozenset({"healthcheck", "tmpfs", "init", "cpuPeriod", "cpuQuota", "wait", "waitTimeout", "destroyGraceSeconds"}),
    ),
    "docker:index/remoteImage:RemoteImage": ProviderRules(
        source="kreuzwerker/terraform-provider-docker v4.5.0 internal/provider/resource_docker_image.go: name, platform, pull_triggers, triggers are ForceNew",
        replace_keys=frozenset({"name", "platform", "pullTriggers", "triggers", "build"}),
    ),
    "docker:index/volume:Volume": ProviderRules(
        source="kreuzwerker/terraform-provider-docker v4.5.0 internal/provider/resource_docker_volume.go: name, driver, driver_opts, labels are ForceNew",
        replace_keys=frozenset({"name", "driver", "driverOpts", "labels"}),
    ),
    "pulumi:providers:docker": ProviderRules(
        source="pulumi/pulumi-terraform-bridge pkg/tfbridge/provider.go DiffConfig: a provider is replaced only "
        "for keys marked ForcesProviderReplace, which pulumi-docker marks nowhere",
    ),
}

VM_TYPE = "vsphere:index/virtualMachine:VirtualMachine"
VIRTUAL_DISK_TYPE = "vsphere:index/virtualDisk:VirtualDisk"


def attached_vmdks(type_token: str, inputs: dict[str, Any]) -> frozenset[str]:
    """The VMDK paths a VM attaches (`disks[*]` with `attach`), which outlive it.

    vmware/terraform-provider-vsphere v2.16.1 (6e5d67ea),
    vsphere/internal/virtualdevice/virtual_machine_disk_subresource.go: resourceVSphereVirtualMachineDelete
    calls DiskDestroyOperation before virtualmachine.Destroy, which detaches every disk with `attach` or
    `keep_on_remove` (DiskSubresource.Delete clears the FileOperation): the VMDK is kept. `attach` implies
    keep_on_remove (DiffGeneral); path and size of an attached disk are not read back (setFlatBackingProperties).
    DiskDiffOperation refuses one path twice within ONE VM only: nothing in the provider stops a second
    VM attaching a VMDK another VM holds; vSphere's file lock on a running VM's disks then fails it.
    """
    if type_token != VM_TYPE:
        return frozenset()
    return frozenset(d["path"] for d in inputs.get("disks") or [] if d.get("attach") and d.get("path"))


# Values a provider reads back in another spelling than it was given: written any other
# way, every refresh shows a diff. Path -> how the provider spells it on read.
READ_BACK: dict[str, dict[str, Callable[[Any], Any]]] = {
    # terraform-provider-docker v4.5.0 resource_docker_container_funcs.go flattenHealthcheck: time.Duration.String()
    "docker:index/container:Container": {
        "healthcheck.interval": go_duration,
        "healthcheck.timeout": go_duration,
        "healthcheck.startPeriod": go_duration,
    },
}


class UnknownResourceType(KeyError):
    pass


def rules_for(type_token: str) -> ProviderRules:
    if type_token not in PROVIDERS:
        raise UnknownResourceType(f"{type_token}: no provider rules in scripts/ops/provider_rules.py; add them, with their source")
    return PROVIDERS[type_token]


