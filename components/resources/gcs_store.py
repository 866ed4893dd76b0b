"""The Redis that keeps the head's GCS state, on redis.host (default: the head's VM)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker

from components.render import redis_store
from components.render.containers import ContainerSpec
from components.resources.docker_container import docker_container, on_docker
from components.resources.node import OnNode


@dataclass(frozen=True)
class GcsStoreArgs:
    on: OnNode  # redis.host
    container: ContainerSpec  # containers.redis_container
    password: pulumi.Output  # generated, secret


class GcsStore(pulumi.ComponentResource):
    def __init__(self, args: GcsStoreArgs, opts: Optional[pulumi.ResourceOptions] = None):
        on, host = args.on, args.on.name
        super().__init__("ray-cluster:index:GcsStore", host, None, opts)
        on_host = on_docker(self, on.docker_provider, on.vm)
        spec = args.container
        image = docker.RemoteImage(f"{host}-redis-image", name=spec.image, keep_locally=True, opts=on_host)
        # The append-only file is on the host's data disk (render/data_disk.py): it outlives the
        # container and the VM. Created healthy (`wait`), so the head after it finds Redis answering.
        self.container = docker_container(
            f"{host}-redis",
            spec,
            image.image_id,
            pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(depends_on=[on.firewall_ready])),
            secrets={redis_store.PASSWORD_ENV: args.password},
            wait_healthy_seconds=redis_store.HEALTHY_WITHIN_SECONDS,
        )
        self.register_outputs({"containerId": self.container.id})
