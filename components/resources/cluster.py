"""The whole cluster: which nodes the schedule wants now, each node's VM,
firewall and Ray container, and the monitoring stack."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random
import pulumi_vsphere as vsphere

from components.model import ports
from components.model.config import ClusterConfig, PlacedNode
from components.render import alerting_config, cloud_init, containers, dashboard_proxy, data_disk, drain, firewall_rules, monitoring_config
from components.render import tls as tls_render
from components.resources.cluster_tls import ClusterCa, DashboardProxy, DashboardProxyArgs, NodeTls
from components.resources.firewall import Firewall, FirewallArgs
from components.resources.gcs_store import GcsStore, GcsStoreArgs
from components.resources.monitoring import MonitoringArgs, Monitoring, NodeExporters, NodeExportersArgs
from components.resources.node import OnNode
from components.resources.image_mirror import ImageMirror, trust_mirror_command
from components.resources.log_shipping import log_archive_command, ship_logs_command
from components.resources.ray_node import DrainArgs, RayNode, RayNodeArgs
from components.resources.ssh_access import SshAccess, authorized_keys_command
from components.resources.stack_config import ClusterSecrets
from components.resources.vm import DataDiskArgs, Placement, Vm, VmArgs


class RayCluster(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: ClusterConfig,
        secrets: ClusterSecrets,
        at: dt.datetime,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        super().__init__("ray-cluster:index:RayCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        placement = Placement.lookup(cfg.vsphere)

        # Tags exist for every tier, live or not, so a tier change never touches them.
        # Child names start with the component's name, so two clusters in one stack never collide;
        # the alias keeps the name these resources had before, so no existing stack replaces them.
        category = vsphere.TagCategory(
            f"{name}-tier",
            name=f"{name}-{pulumi.get_stack()}-tier",
            description="Ray tier of the VM (the seeds' tier: always-on / tier: heavy-compute)",
            cardinality="SINGLE",
            associable_types=["VirtualMachine"],
            opts=renamed(child, "tier"),
        )
        tier_tags = {
            tier: vsphere.Tag(f"{name}-tier-{tier}", name=tier, category_id=category.id, opts=renamed(child, f"tier-{tier}"))
            for tier in cfg.tiers
        }
        ray_token = secrets.ray_token or random.RandomPassword(
            f"{name}-ray-token", length=48, special=False, opts=renamed(child, "ray-token")
        ).result
        ssh = SshAccess(cfg.ssh.user, secrets.ssh_private_key)
        redis_password: pulumi.Output = random.RandomPassword(f"{name}-redis-password", length=48, special=False, opts=child).result
        always_on_vms = []
        # No VM before the SSH key pair is checked (stack_config.matching_private_key): with a
        # mismatched pair the update fails with no VM cloned, rather than with VMs nobody can reach.
        vm_opts = pulumi.ResourceOptions(parent=self, depends_on=secrets.ssh_private_key.apply(lambda _: []))
        # The mirror's credentials: each RemoteImage pull through it uses them.
        registry_auth = (
            [docker.ProviderRegistryAuthArgs(address=cfg.registry.host, username=cfg.registry.username, password=secrets.registry_password)]
            if cfg.registry and cfg.registry.username
            else None
        )
        # Exists whatever the schedule: a tier coming or going never touches the CA. Like the
        # VMs, only once the key pair is checked: a mismatched pair leaves nothing behind.
        ca = ClusterCa(f"{name}-tls-ca", pulumi.get_stack(), opts=vm_opts)
        operator_cert, operator_key = ca.issue(f"{name}-operator-tls", tls_render.operator_profile())

        self.live_tiers = cfg.live_tiers(at)
        live_nodes = sorted(cfg.live_nodes(at), key=lambda p: not p.node.head)  # head first
        self.nodes: dict[str, RayNode] = {}
        host_keys: dict[str, pulumi.Output] = {}
        head: Optional[RayNode] = None
        hosts: dict[str, OnNode] = {}
        for placed in live_nodes:
            node_name, ip = placed.node.name, str(placed.node.ip)
            vm = Vm(vm_args(cfg, placed, tier_tags[placed.tier_name].id, name), placement, opts=vm_opts)
            host_keys[node_name] = vm.host_public_key
            if placed.tier.always_on:
                always_on_vms.append(vm.vm)
            connection = ssh.connection(ip, vm.host_public_key)
            authorized_keys_command(node_name, cloud_init.authorized_keys(cfg), connection, vm.vm, parent=vm)
            script = firewall_rules.ufw_script(firewall_rules.firewall_rules(cfg, placed))
            firewall = Firewall(FirewallArgs(node_name, script, connection, vm.vm), opts=child)
            docker_host, ssh_opts = ssh.docker_host(ip, vm.host_public_key)
            docker_provider = docker.Provider(
                f"{node_name}-docker",
                host=docker_host,
                ssh_opts=ssh_opts,
                registry_auth=registry_auth,
                # The firewall step waits for cloud-init, after which Docker runs.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[firewall.command], deleted_with=vm.vm),
            )
            trusts_mirror = trust_mirror_command(node_name, cfg, connection, vm.vm, firewall.command, parent=vm)
            hosts[node_name] = OnNode(node_name, vm.vm, connection, docker_provider, firewall.command, (trusts_mirror,))

        # Every node pulls its Ray and exporter images from the mirror on the monitoring host, and
        # ships its logs there.
        mirror_host = hosts[cfg.monitoring_host.node.name]
        mirror = ImageMirror(
            cfg, mirror_host.docker_provider, mirror_host.connection, mirror_host.vm, mirror_host.images_ready[0],
            mirror_host.firewall_ready, opts=child,
        )
        log_archive_command(cfg, mirror_host.connection, mirror_host.vm, mirror_host.firewall_ready, parent=self)
        # Before any Ray node, wherever it runs: the head starts only once its Redis is healthy.
        store = GcsStore(GcsStoreArgs(hosts[cfg.redis_host.node.name], containers.redis_container(cfg), redis_password), opts=child)
        for placed in live_nodes:
            node_name = placed.node.name
            on = dataclasses.replace(hosts[node_name], images_ready=(*hosts[node_name].images_ready, mirror.filled))
            ship_logs_command(node_name, cfg, on.connection, on.vm, on.firewall_ready, parent=self)
            node_tls = NodeTls(on, ca, tls_render.node_profile(node_name, str(placed.node.ip)), opts=child)
            if not placed.node.maintenance:
                node_args = ray_node_args(cfg, placed, on, ray_token, host_keys[node_name], head, node_tls.files)
                if placed.node.head:
                    node_args = dataclasses.replace(node_args, redis_password=redis_password, gcs_store=store.container)
                node = RayNode(node_args, opts=child)
                if placed.node.head:
                    DashboardProxy(dashboard_proxy_args(cfg, on, node_tls.files), opts=child)
                head = head or node
                self.nodes[node_name] = node
            exporters = (containers.node_exporter_container(cfg, placed), containers.cadvisor_container(cfg))
            NodeExporters(NodeExportersArgs(on, exporters), opts=child)
            if node_name == cfg.monitoring_host.node.name:
                self.monitoring = Monitoring(monitoring_args(cfg, at, on, secrets), opts=child)
        if placement.compute_cluster_id and len(always_on_vms) > 1:
            # DRS keeps the always-on VMs on different ESXi hosts: one host failure takes one node.
            vsphere.ComputeClusterVmAntiAffinityRule(
                f"{name}-always-on-anti-affinity",
                name=f"{name}-{pulumi.get_stack()}-always-on-apart",
                compute_cluster_id=placement.compute_cluster_id,
                virtual_machine_ids=[vm.id for vm in always_on_vms],
                opts=child,
            )

        head_ip = str(cfg.head.node.ip)
        self.outputs = {
            "at": at.isoformat(),
            "liveTiers": self.live_tiers,
            "nodes": [
                {"name": p.node.name, "tier": p.tier_name, "ip": str(p.node.ip), "maintenance": p.node.maintenance}
                for p in live_nodes
            ],
            # Public: operators' SSH (scripts/scheduler.py drain) pins them, as Pulumi's own SSH does.
            "hostKeys": host_keys,
            "headIp": head_ip,
            "dashboardUrl": dashboard_proxy.https_url(dashboard_proxy.proxy_settings(cfg), head_ip),
            "rayAddress": f"{head_ip}:{ports.RAY.gcs}",
            "rayClientAddress": f"ray://{head_ip}:{ports.RAY.client}",
            "prometheusUrl": monitoring_config.prometheus_url(cfg),
            "grafanaUrl": monitoring_config.grafana_url(cfg),
            # Operators' tools (scheduler, monitor, smoke test) need these; they stay secret.
            "rayToken": pulumi.Output.secret(ray_token),
            "grafanaAdminPassword": pulumi.Output.secret(self.monitoring.grafana_admin_password),
            "redisPassword": pulumi.Output.secret(redis_password),
            "alertmanagerUrl": alerting_config.alertmanager_url(cfg),
            # Ray speaks mutual TLS only: the CA to trust, and the operators' client certificate.
            "rayTlsCaCert": ca.cert_pem,
            "rayTlsOperatorCert": operator_cert,
            "rayTlsOperatorKey": operator_key,
        }
        self.register_outputs(self.outputs)


def vm_args(cfg: ClusterConfig, placed: PlacedNode, tier_tag_id: pulumi.Input[str], cluster_name: str) -> VmArgs:
    node_name = placed.node.name
    return VmArgs(
        name=node_name,
        vcpu=placed.tier.vcpu,
        memory_gb=placed.tier.memory_gb,
        disk_gb=placed.tier.disk_gb,
        metadata=cloud_init.metadata(cfg, placed),
        user_data=lambda private, public: cloud_init.user_data(cfg, placed, private, public),
        tier_tag_id=tier_tag_id,
        data_disk=DataDiskArgs(cfg.data_disk_gb, data_disk.vmdk_path(cluster_name, pulumi.get_stack(), node_name))
        if cfg.data_disk_roles(node_name)
        else None,
    )


def ray_node_args(
    cfg: ClusterConfig, placed: PlacedNode, on: OnNode, ray_token: pulumi.Output, host_public_key: pulumi.Output,
    head: Optional[RayNode], tls_files: pulumi.Resource,
) -> RayNodeArgs:
    worker_drain = None
    if not placed.node.head:
        worker_drain = DrainArgs(
            files=drain.staged_drain_files(placed.node.name, drain.drain_files(drain.drain_settings(cfg, placed))),
            command=drain.drain_command(placed),
            ssh_user=cfg.ssh.user,
            node_ip=str(placed.node.ip),
            host_public_key=host_public_key,
        )
    return RayNodeArgs(
        on=on,
        container=containers.ray_container(cfg, placed),
        ray_token=ray_token,
        tls_files=tls_files,
        head_container=head.container if head else None,
        drain=worker_drain,
    )


def dashboard_proxy_args(cfg: ClusterConfig, on: OnNode, tls_files: pulumi.Resource) -> DashboardProxyArgs:
    return DashboardProxyArgs(
        on=on,
        container=containers.dashboard_proxy_container(cfg),
        nginx_conf=dashboard_proxy.nginx_conf(dashboard_proxy.proxy_settings(cfg)),
        tls_files=tls_files,
    )


def monitoring_args(cfg: ClusterConfig, at: dt.datetime, on: OnNode, secrets: ClusterSecrets) -> MonitoringArgs:
    return MonitoringArgs(
        on=on,
        ssh_user=cfg.ssh.user,
        config_files=monitoring_config.config_files(cfg),
        schedule_files=monitoring_config.schedule_files(cfg, at),
        prometheus=containers.prometheus_container(cfg),
        grafana=containers.grafana_container(cfg),
        grafana_admin_password=secrets.grafana_admin_password,
        prometheus_url=monitoring_config.prometheus_url(cfg),
        grafana_url=monitoring_config.grafana_url(cfg),
        alertmanager=containers.alertmanager_container(cfg),
        alertmanager_yml=lambda receiver_secrets: alerting_config.alertmanager_yml(cfg, receiver_secrets),
        alerting_secrets=secrets.alerting_secrets,
        alertmanager_url=alerting_config.alertmanager_url(cfg),
    )


def renamed(opts: pulumi.ResourceOptions, old_name: str) -> pulumi.ResourceOptions:
    """`opts`, plus an alias to the name a resource had before its component's prefix."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(name=old_name)]))
