"""The whole cluster: which nodes the schedule wants now, each node's VM,
firewall and Ray container, and the monitoring stack."""
from __future__ import annotations

import datetime as dt
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random
import pulumi_vsphere as vsphere

from components.render import dashboard_proxy, monitoring_config
from components.render import tls as tls_render

from components.model import ports
from components.model.config import ClusterConfig
from components.resources.cluster_tls import ClusterCa, DashboardProxy, NodeTls
from components.resources.firewall import Firewall
from components.resources.monitoring import MonitoringStack, NodeExporters
from components.resources.ray_node import RayNode
from components.resources.ssh_access import SshAccess, authorized_keys_command
from components.resources.stack_config import ClusterSecrets
from components.resources.vm import Placement, RayVm


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
        placement = Placement.lookup(cfg)

        # Tags exist for every tier, live or not, so a tier change never touches them.
        category = vsphere.TagCategory(
            "tier",
            name=f"{name}-{pulumi.get_stack()}-tier",
            description="Ray tier of the VM (the seeds' tier: always-on / tier: heavy-compute)",
            cardinality="SINGLE",
            associable_types=["VirtualMachine"],
            opts=child,
        )
        tier_tags = {
            tier: vsphere.Tag(f"tier-{tier}", name=tier, category_id=category.id, opts=child)
            for tier in cfg.tiers
        }
        ray_token = secrets.ray_token or random.RandomPassword(
            "ray-token", length=48, special=False, opts=child
        ).result
        ssh = SshAccess(cfg.ssh.user, secrets.ssh_private_key)
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
        operator_cert, operator_key = ca.issue("operator-tls", tls_render.operator_profile())

        self.live_tiers = cfg.live_tiers(at)
        live_nodes = sorted(cfg.live_nodes(at), key=lambda p: not p.node.head)  # head first
        self.nodes: dict[str, RayNode] = {}
        host_keys: dict[str, pulumi.Output] = {}
        head: Optional[RayNode] = None
        for placed in live_nodes:
            node_name, ip = placed.node.name, str(placed.node.ip)
            vm = RayVm(cfg, placed, placement, tier_tags[placed.tier_name].id, opts=vm_opts)
            host_keys[node_name] = vm.host_public_key
            connection = ssh.connection(ip, vm.host_public_key)
            authorized_keys_command(node_name, cfg, connection, vm.vm, parent=vm)
            firewall = Firewall(cfg, placed, connection, vm.vm, opts=child)
            docker_host, ssh_opts = ssh.docker_host(ip, vm.host_public_key)
            docker_provider = docker.Provider(
                f"{node_name}-docker",
                host=docker_host,
                ssh_opts=ssh_opts,
                registry_auth=registry_auth,
                # The firewall step waits for cloud-init, which installs Docker.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[firewall.command], deleted_with=vm.vm),
            )
            node_tls = NodeTls(ca, placed, connection, vm.vm, firewall.command, opts=child)
            if not placed.node.maintenance:
                node = RayNode(
                    cfg, placed, docker_provider, vm.host_public_key, ray_token, vm.vm, firewall.command, connection,
                    tls_files=node_tls.files, head=head, opts=child,
                )
                if placed.node.head:
                    DashboardProxy(cfg, docker_provider, connection, vm.vm, firewall.command, node_tls, opts=child)
                head = head or node
                self.nodes[node_name] = node
            NodeExporters(cfg, placed, docker_provider, vm.vm, firewall.command, opts=child)
            if placed.node.name == cfg.monitoring_host.node.name:
                self.monitoring = MonitoringStack(
                    cfg,
                    at,
                    docker_provider,
                    connection,
                    vm.vm,
                    firewall.command,
                    secrets.grafana_admin_password,
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
            # Ray speaks mutual TLS only: the CA to trust, and the operators' client certificate.
            "rayTlsCaCert": ca.cert_pem,
            "rayTlsOperatorCert": operator_cert,
            "rayTlsOperatorKey": operator_key,
        }
        self.register_outputs(self.outputs)
