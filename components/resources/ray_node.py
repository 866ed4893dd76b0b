"""Ray in Docker on one VM: the pinned image, the supervised container, and
(on workers) the drain-on-delete resource."""
from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_docker as docker
from pulumi_command import local, remote

from components.render import drain
from components.model.config import ClusterConfig, PlacedNode
from components.render.containers import ray_container
from components.render.drain_over_ssh import drain_over_ssh
from components.resources.docker_container import docker_container, on_docker

# The label on every worker's Ray container that carries the head container's id.
HEAD_CONTAINER_LABEL = "ray-cluster.head-container"


class RayNode(pulumi.ComponentResource):
    def __init__(
        self,
        cfg: ClusterConfig,
        placed: PlacedNode,
        docker_provider: docker.Provider,
        host_public_key: pulumi.Output,
        ray_token: pulumi.Output,
        vm: pulumi.Resource,
        firewall_ready: pulumi.Resource,
        connection: remote.ConnectionArgs,
        tls_files: pulumi.Resource,
        head: Optional["RayNode"] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        name = placed.node.name
        super().__init__("ray-cluster:index:RayNode", name, None, opts)
        on_node = on_docker(self, docker_provider, vm)
        spec = ray_container(cfg, placed)
        self.image = docker.RemoteImage(f"{name}-ray-image", name=spec.image, keep_locally=True, opts=on_node)
        self.container: docker.Container = docker_container(
            f"{name}-ray",
            spec,
            self.image.image_id,
            # Ray starts only once the firewall and its certificates are in place. It reads its
            # certificates at start: new ones (a renewal, a new CA) replace the container.
            pulumi.ResourceOptions.merge(
                on_node, pulumi.ResourceOptions(depends_on=[firewall_ready, tls_files], replace_with=[tls_files])
            ),
            secrets={"RAY_AUTH_TOKEN": ray_token},
            # A worker's container takes the head container's id as an input (labels are ForceNew
            # in the Docker provider): when the head container is replaced, the engine deletes
            # every worker container first, each after its drain (calculateDependentReplacements,
            # pulumi/pulumi pkg/resource/deploy/step_generator.go), and starts workers after the head.
            input_labels={HEAD_CONTAINER_LABEL: head.container.id} if head else None,
        )

        self.drain_program: Optional[remote.Command] = None
        self.drain_on_delete: Optional[local.Command] = None
        if not placed.node.head:
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
            self.drain_program = remote.Command(
                f"{name}-drain-program",
                connection=connection,
                create="sudo sh -s",
                stdin=drain.delivery_script(drain.drain_files(drain.drain_settings(cfg, placed))),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[firewall_ready], deleted_with=vm),
            )
            command = drain.drain_command(placed)
            self.drain_on_delete = local.Command(
                f"{name}-drain-on-delete",
                create="true",
                delete=host_public_key.apply(
                    lambda key: drain_over_ssh(cfg.ssh.user, name, str(placed.node.ip), key, command)
                ),
                triggers=[self.container.id],
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[self.container, self.drain_program], delete_before_replace=True
                ),
            )
        self.register_outputs({"containerId": self.container.id, "imageId": self.image.image_id})
