"""The LAN image mirror on the monitoring host, and every node's Docker trusting it
(components/render/image_mirror.py says why)."""
from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from components.model.config import ClusterConfig
from components.render import containers, image_mirror
from components.render.remote_files import StagedFiles
from components.resources.docker_container import docker_container, on_docker
from components.resources.staged_files import install_staged_files


def trust_mirror_command(
    node_name: str,
    cfg: ClusterConfig,
    connection: remote.ConnectionArgs,
    vm: pulumi.Resource,
    firewall_ready: pulumi.Resource,
    parent: pulumi.Resource,
) -> remote.Command:
    """The node's Docker daemon config, so it pulls from the mirror over HTTP (a live VM gets it too:
    user-data reaches a VM only when it is cloned). After the firewall step, which waits for
    cloud-init (and so for Docker)."""
    return install_staged_files(image_mirror.daemon_config(node_name, cfg), connection, vm, firewall_ready, parent)


class ImageMirror(pulumi.ComponentResource):
    """The registry on the monitoring host's Docker engine, filled with every pinned node image."""

    def __init__(
        self,
        cfg: ClusterConfig,
        docker_provider: docker.Provider,
        connection: remote.ConnectionArgs,
        vm: pulumi.Resource,
        host_trusts_mirror: pulumi.Resource,
        firewall_ready: pulumi.Resource,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        host = cfg.monitoring_host.node.name
        super().__init__("ray-cluster:index:ImageMirror", host, None, opts)
        on_host = on_docker(self, docker_provider, vm)
        config = install_staged_files(
            StagedFiles(f"{host}-image-mirror-config", {image_mirror.CONFIG_FILE: image_mirror.config_yml(cfg)}),
            # The registry's own config: it needs the host up, not its Docker trusting the mirror
            # (only the push below does), so it stays off the longest chain.
            connection, vm, firewall_ready, parent=self,
        )
        image = docker.RemoteImage(
            f"{host}-image-mirror-image", name=cfg.image(cfg.monitoring.images.registry), keep_locally=True, opts=on_host
        )
        volume = docker.Volume(
            f"{host}-image-mirror-data",
            name=image_mirror.DATA_VOLUME,
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(delete_before_replace=True)),
        )
        self.container = docker_container(
            f"{host}-{image_mirror.CONTAINER_NAME}",
            containers.image_mirror_container(cfg),
            image.image_id,
            pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(depends_on=[config])),
            volume_names={image_mirror.DATA_VOLUME: volume.name},
        )
        # The only pulls that reach a public registry (or the data centre's mirror): on the always-on
        # host, by day, when a pin changes; the provider's registry credentials apply.
        sources = [
            docker.RemoteImage(f"{host}-{role}-upstream-image", name=image_mirror.upstream(cfg, ref), keep_locally=True, opts=on_host)
            for role, ref in zip(("ray", "node-exporter", "cadvisor"), image_mirror.mirrored_references(cfg))
        ]
        # A changed script (a new pin) replaces the command, which pushes again.
        self.filled = remote.Command(
            f"{host}-image-mirror-copy",
            connection=connection,
            create="sh -s",
            stdin=image_mirror.copy_script(cfg),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.container, host_trusts_mirror, *sources], deleted_with=vm
            ),
        )
        self.register_outputs({"address": image_mirror.address(cfg)})
