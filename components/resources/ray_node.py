"""Ray in Docker on one VM: the pinned image, the supervised container, and
(on workers) the drain-on-delete resource."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker
from pulumi_command import local, remote

from components.render.containers import ContainerSpec
from components.render.drain_over_ssh import drain_over_ssh
from components.render.ray_start import REDIS_PASSWORD_ENV
from components.render.remote_files import StagedFiles
from components.resources.docker_container import docker_container, on_docker
from components.resources.node import OnNode
from components.resources.staged_files import install_staged_files

# The label on every worker's Ray container that carries the head container's id.
HEAD_CONTAINER_LABEL = "ray-cluster.head-container"


@dataclass(frozen=True)
class DrainArgs:
    """A worker's drain: the program's files on the VM, and the SSH that runs it before removal."""

    files: StagedFiles  # drain.staged_drain_files: the program and its settings, for the VM
    command: str  # drain.drain_command: what runs on the VM
    ssh_user: str
    node_ip: str
    host_public_key: pulumi.Output


@dataclass(frozen=True)
class RayNodeArgs:
    on: OnNode
    container: ContainerSpec  # containers.ray_container
    ray_token: pulumi.Output
    tls_files: pulumi.Resource  # NodeTls.files: the node's certificate, key and CA on its VM
    head_container: Optional[docker.Container] = None  # None: this is the head
    drain: Optional[DrainArgs] = None  # workers only
    redis_password: Optional[pulumi.Output] = None  # the head's: its GCS store's password
    gcs_store: Optional[pulumi.Resource] = None  # the head's: its Redis container, on whichever VM


class RayNode(pulumi.ComponentResource):
    def __init__(self, args: RayNodeArgs, opts: Optional[pulumi.ResourceOptions] = None):
        on, name = args.on, args.on.name
        super().__init__("ray-cluster:index:RayNode", name, None, opts)
        on_node = on_docker(self, on.docker_provider, on.vm)
        spec = args.container
        self.image = docker.RemoteImage(
            f"{name}-ray-image",
            name=spec.image,
            keep_locally=True,
            opts=pulumi.ResourceOptions.merge(on_node, pulumi.ResourceOptions(depends_on=list(on.images_ready))),
        )
        self.container: docker.Container = docker_container(
            f"{name}-ray",
            spec,
            self.image.image_id,
            # Ray starts only once the firewall and its certificates are in place, and the head once
            # its Redis is healthy (created with `wait`; a plain edge: a replaced Redis does not
            # replace the head, whose `ray start` exits and is restarted by Docker). It reads its
            # certificates at start: new ones (a renewal, a new CA) replace the container.
            pulumi.ResourceOptions.merge(
                on_node,
                pulumi.ResourceOptions(
                    depends_on=[on.firewall_ready, args.tls_files, *filter(None, [args.gcs_store])],
                    replace_with=[args.tls_files],
                ),
            ),
            secrets={"RAY_AUTH_TOKEN": args.ray_token, **({REDIS_PASSWORD_ENV: args.redis_password} if args.redis_password else {})},
            # A worker's container takes the head container's id as an input (labels are ForceNew
            # in the Docker provider): when the head container is replaced, the engine deletes
            # every worker container first, each after its drain (calculateDependentReplacements,
            # pulumi/pulumi pkg/resource/deploy/step_generator.go), and starts workers after the head.
            input_labels={HEAD_CONTAINER_LABEL: args.head_container.id} if args.head_container else None,
        )

        self.drain_program: Optional[remote.Command] = None
        self.drain_on_delete: Optional[local.Command] = None
        if args.drain is not None:
            drain = args.drain
            # Deleted before the container and the VM it depends on: whoever removes
            # this node (schedule, config change, destroy), the node drains first. The
            # container's id as a trigger makes a replaced container (a new image, new
            # flags, a new VM, a new head) drain first too: the engine deletes a dependent
            # whose input depends on a replaced resource, and whose provider then says
            # replace, before that resource. Never `deleted_with` the VM: it must run.
            # A local command that SSHes itself (components/render/drain_over_ssh.py), so a
            # node that does not answer is removed with an alarm instead of failing every run.
            # The program and its settings are files on the VM (their own resource), so
            # `delete` stays a few stable lines that a program change never re-diffs.
            # Removed by its own delete only after the drain ran (the drain depends on it).
            self.drain_program = install_staged_files(drain.files, on.connection, on.vm, on.firewall_ready, parent=self)
            self.drain_on_delete = local.Command(
                f"{name}-drain-on-delete",
                create="true",
                delete=drain.host_public_key.apply(
                    lambda key: drain_over_ssh(drain.ssh_user, name, drain.node_ip, key, drain.command)
                ),
                triggers=[self.container.id],
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[self.container, self.drain_program], delete_before_replace=True
                ),
            )
        self.register_outputs({"containerId": self.container.id, "imageId": self.image.image_id})
