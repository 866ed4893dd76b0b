"""Ray in Docker on one VM: the pinned image, the supervised container, and
(on workers) the drain-on-delete resource."""
from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from components import drain, ray_start
from components.config import ClusterConfig, PlacedNode


def image_reference(cfg: ClusterConfig) -> str:
    """The pinned tag, plus the digest when one is configured."""
    return f"{cfg.ray.image}@{cfg.ray.image_digest}" if cfg.ray.image_digest else cfg.ray.image


class RayNode(pulumi.ComponentResource):
    def __init__(
        self,
        cfg: ClusterConfig,
        placed: PlacedNode,
        docker_provider: docker.Provider,
        connection: remote.ConnectionArgs,
        ray_token: pulumi.Output,
        firewall_ready: pulumi.Resource,
        head: Optional["RayNode"] = None,
        extra_env: Optional[dict[str, str]] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        name = placed.node.name
        super().__init__("ray-cluster:index:RayNode", name, None, opts)
        on_node = pulumi.ResourceOptions(parent=self, provider=docker_provider)
        settings = ray_start.node_settings(cfg, placed)
        plain_env = {**ray_start.ray_env(settings), **(extra_env or {})}

        self.image = docker.RemoteImage(
            f"{name}-ray-image", name=image_reference(cfg), keep_locally=True, opts=on_node
        )
        # Ray starts only once the firewall is in place; workers only once the head is up.
        after = [firewall_ready] + ([head.container] if head else [])
        grace = ray_start.stop_grace_seconds(cfg, placed)
        self.container = docker.Container(
            f"{name}-ray",
            name=ray_start.CONTAINER_NAME,
            image=self.image.image_id,
            network_mode="host",  # publish nothing: -p ports bypass UFW
            command=["sh", "-c", ray_start.entrypoint_script(settings)],
            envs=ray_token.apply(
                lambda token: [f"{k}={v}" for k, v in sorted(plain_env.items())] + [f"RAY_AUTH_TOKEN={token}"]
            ),
            shm_size=settings.shm_bytes // 2**20,
            volumes=[
                docker.ContainerVolumeArgs(
                    host_path=ray_start.HOST_DATA_DIR, container_path=ray_start.CONTAINER_DATA_DIR
                )
            ],
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=ray_start.health_check_command(settings),
                interval="15s",
                timeout="5s",
                retries=4,
                start_period="60s",
            ),
            restart="unless-stopped",
            stop_timeout=grace,
            destroy_grace_seconds=grace,
            labels=[docker.ContainerLabelArgs(label="ray-cluster.tier", value=placed.tier_name)],
            opts=pulumi.ResourceOptions.merge(on_node, pulumi.ResourceOptions(depends_on=after)),
        )

        self.drain_on_delete: Optional[remote.Command] = None
        if not placed.node.head:
            # Deleted before the container and the VM it depends on: whoever removes
            # this node (schedule, config change, destroy), the node drains first.
            self.drain_on_delete = remote.Command(
                f"{name}-drain-on-delete",
                connection=connection,
                create="true",
                delete=drain.drain_command(cfg, placed),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.container]),
            )
        self.register_outputs({"containerId": self.container.id, "imageId": self.image.image_id})
