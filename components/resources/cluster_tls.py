"""The cluster's TLS: one CA, a certificate per node delivered to its VM, the
operators' client certificate, and the head's dashboard proxy.

Everything is issued by pulumi-tls from the profiles in components/render/tls.py;
private keys exist only in Pulumi state (secret) and, for a node's own key, in
an owner-only file on that node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_tls as tls
from pulumi_command import remote

from components.render import dashboard_proxy
from components.render import tls as tls_render
from components.render.containers import ContainerSpec
from components.render.ray_start import IMAGE_GID, IMAGE_UID
from components.render.remote_files import StagedFiles
from components.resources.docker_container import docker_container, on_docker
from components.resources.node import OnNode
from components.resources.staged_files import install_staged_files


def _key(name: str, opts: pulumi.ResourceOptions) -> tls.PrivateKey:
    return tls.PrivateKey(name, algorithm=tls_render.KEY_ALGORITHM, ecdsa_curve=tls_render.ECDSA_CURVE, opts=opts)


class ClusterCa(pulumi.ComponentResource):
    """The cluster CA, and certificates it signs."""

    def __init__(self, name: str, stack: str, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("ray-cluster:index:ClusterCa", name, None, opts)
        self.child = pulumi.ResourceOptions(parent=self)
        self.key = _key(f"{name}-key", self.child)
        self.cert = tls.SelfSignedCert(
            name,
            private_key_pem=self.key.private_key_pem,
            is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=tls_render.ca_common_name(stack), organization=tls_render.ORGANIZATION
            ),
            validity_period_hours=tls_render.CA_VALIDITY_HOURS,
            early_renewal_hours=tls_render.EARLY_RENEWAL_HOURS,
            allowed_uses=list(tls_render.CA_USES),
            opts=self.child,
        )
        self.cert_pem = self.cert.cert_pem
        self.register_outputs({"certPem": self.cert_pem})

    def issue(self, name: str, profile: tls_render.CertProfile) -> tuple[pulumi.Output, pulumi.Output]:
        """A new key and its certificate for `profile`: (certificate PEM, key PEM as a secret)."""
        key = _key(f"{name}-key", self.child)
        request = tls.CertRequest(
            f"{name}-csr",
            private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=profile.common_name, organization=tls_render.ORGANIZATION),
            dns_names=list(profile.dns_names) or None,
            ip_addresses=list(profile.ip_addresses) or None,
            opts=self.child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-cert",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=self.key.private_key_pem,
            ca_cert_pem=self.cert.cert_pem,
            validity_period_hours=tls_render.CERT_VALIDITY_HOURS,
            early_renewal_hours=tls_render.EARLY_RENEWAL_HOURS,
            allowed_uses=list(profile.allowed_uses),
            opts=self.child,
        )
        return cert.cert_pem, pulumi.Output.secret(key.private_key_pem)


class NodeTls(pulumi.ComponentResource):
    """One node's certificate and key, written owner-only to its VM before Ray starts."""

    def __init__(
        self, on: OnNode, ca: ClusterCa, profile: tls_render.CertProfile, opts: Optional[pulumi.ResourceOptions] = None
    ):
        super().__init__("ray-cluster:index:NodeTls", on.name, None, opts)
        cert_pem, key_pem = ca.issue(f"{on.name}-tls", profile)
        script: pulumi.Output[str] = pulumi.Output.all(ca.cert_pem, cert_pem, key_pem).apply(
            lambda pems: tls_render.tls_files_script(pems[0], pems[1], pems[2], owner=f"{IMAGE_UID}:{IMAGE_GID}")
        )
        # Ray reads its certificates once, at start: a new certificate (renewal, a new CA)
        # replaces this command, and the containers that read it are replaced with it.
        # `deleted_with` the VM, as every remote command: written anew on a new VM.
        self.files = remote.Command(
            f"{on.name}-tls-files",
            connection=on.connection,
            create="sudo sh -s",
            stdin=script,  # secret: the key in it is
            triggers=[ca.cert_pem, cert_pem],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[on.firewall_ready], deleted_with=on.vm),
        )
        self.register_outputs({"certPem": cert_pem})


@dataclass(frozen=True)
class DashboardProxyArgs:
    on: OnNode  # the head
    container: ContainerSpec  # containers.dashboard_proxy_container
    nginx_conf: str  # dashboard_proxy.nginx_conf
    tls_files: pulumi.Resource  # the head's NodeTls.files: the proxy serves its certificate


class DashboardProxy(pulumi.ComponentResource):
    """nginx on the head serving the dashboard and Jobs API over HTTPS (dashboard_proxy.py)."""

    def __init__(self, args: DashboardProxyArgs, opts: Optional[pulumi.ResourceOptions] = None):
        on, head = args.on, args.on.name
        super().__init__("ray-cluster:index:DashboardProxy", head, None, opts)
        conf_path = f"{dashboard_proxy.HOST_CONF_DIR}/{dashboard_proxy.NGINX_CONF}"
        # nginx reads its config at start: a new config replaces the command (its trigger), and
        # the container with it (its replace_with).
        self.config = install_staged_files(
            StagedFiles(f"{head}-dashboard-proxy-config", {conf_path: args.nginx_conf}),
            on.connection, on.vm, on.firewall_ready, parent=self, triggers=[args.nginx_conf],
        )
        on_head = on_docker(self, on.docker_provider, on.vm)
        image = docker.RemoteImage(
            f"{head}-dashboard-proxy-image", name=args.container.image, keep_locally=True, opts=on_head
        )
        self.container = docker_container(
            f"{head}-dashboard-proxy",
            args.container,
            image.image_id,
            pulumi.ResourceOptions.merge(
                on_head,
                pulumi.ResourceOptions(
                    depends_on=[on.firewall_ready, self.config, args.tls_files],
                    replace_with=[self.config, args.tls_files],
                ),
            ),
        )
        self.register_outputs({"containerId": self.container.id})
