"""The Redis that keeps the head's GCS state, on redis.host (default: the head's VM)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker

from components.render import redis_store
from components.render.containers import ContainerSpec
from components.resources.docker_container import docker_container, on_docker
from components.resources.monitoring import kept_volume
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
        # The append-only file: losing it restarts the cluster from nothing, so Pulumi never deletes it.
        data = kept_volume(f"{host}-{redis_store.VOLUME_NAME}", redis_store.VOLUME_NAME, on_host)
        self.container = docker_container(
            f"{host}-redis",
            spec,
            image.image_id,
            pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(depends_on=[on.firewall_ready])),
            secrets={redis_store.PASSWORD_ENV: args.password},
            volume_names={redis_store.VOLUME_NAME: data.name},
        )
        self.register_outputs({"containerId": self.container.id})
