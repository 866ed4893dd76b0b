"""A container spec (components/containers.py) as a pulumi-docker Container, and the
options every resource on a VM's Docker engine shares."""
from __future__ import annotations

from typing import Mapping, Optional

import pulumi
import pulumi_docker as docker

from components.render.containers import RESTART, ContainerSpec, go_duration


def on_docker(parent: pulumi.Resource, docker_provider: docker.Provider, vm: pulumi.Resource) -> pulumi.ResourceOptions:
    """Options for what lives on a VM's Docker engine: it goes with the VM.

    `deleted_with` the VM: replaced whenever the VM is, and never deleted on its own
    when the VM goes too (no SSH to a VM that is being removed, or is gone).
    """
    return pulumi.ResourceOptions(parent=parent, provider=docker_provider, deleted_with=vm)


def docker_container(
    resource_name: str,
    spec: ContainerSpec,
    image_id: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
    secrets: Optional[Mapping[str, pulumi.Input[str]]] = None,
    volume_names: Optional[Mapping[str, pulumi.Input[str]]] = None,
    input_labels: Optional[Mapping[str, pulumi.Input[str]]] = None,
    wait_healthy_seconds: Optional[int] = None,
) -> docker.Container:
    """`secrets` gives each of `spec.secret_env`; `volume_names` the managed Volume behind a named volume;
    `input_labels` labels whose values are other resources' outputs (so the engine sees the dependency);
    `wait_healthy_seconds`: the create returns only once the health check passed (resourceDockerContainerCreate,
    `wait`), so what depends on the container starts after it is healthy."""
    plain_env = [f"{name}={value}" for name, value in sorted(spec.env.items())]
    envs: pulumi.Input = plain_env or None
    if spec.secret_env:
        given = secrets or {}
        values: pulumi.Output[list[str]] = pulumi.Output.secret(pulumi.Output.all(*[given[name] for name in spec.secret_env]))
        envs = values.apply(lambda vs: plain_env + [f"{name}={v}" for name, v in zip(spec.secret_env, vs)])
    health = spec.health
    volumes = [
        docker.ContainerVolumeArgs(host_path=b.source, container_path=b.target, read_only=b.read_only or None)
        for b in spec.binds
        if not b.is_mount
    ] + [
        docker.ContainerVolumeArgs(volume_name=(volume_names or {}).get(volume, volume), container_path=path)
        for volume, path in spec.volumes.items()
    ]
    mounts = [
        docker.ContainerMountArgs(
            type="bind",
            source=b.source,
            target=b.target,
            read_only=b.read_only,
            bind_options=docker.ContainerMountBindOptionsArgs(propagation=b.propagation) if b.propagation else None,
        )
        for b in spec.binds
        if b.is_mount
    ]
    return docker.Container(
        resource_name,
        name=spec.name,
        image=image_id,
        network_mode="host",  # publish nothing: -p ports bypass UFW
        pid_mode="host" if spec.pid_host else None,
        privileged=spec.privileged or None,
        user=spec.user,
        command=list(spec.command) or None,
        envs=envs,
        mounts=mounts or None,
        volumes=volumes or None,
        devices=[docker.ContainerDeviceArgs(host_path=d, container_path=d) for d in spec.devices] or None,
        healthcheck=docker.ContainerHealthcheckArgs(
            tests=list(health.test),
            # As the provider reads them back (Go's Duration.String()), or every refresh diffs.
            interval=go_duration(health.interval),
            timeout=go_duration(health.timeout),
            retries=health.retries,
            start_period=go_duration(health.start_period),
        ),
        restart=RESTART,
        wait=True if wait_healthy_seconds else None,
        wait_timeout=wait_healthy_seconds,
        shm_size=spec.shm_size_mb,
        stop_timeout=spec.stop_timeout,
        destroy_grace_seconds=spec.stop_timeout,
        log_driver=spec.log_driver,
        log_opts=spec.log_opts or None,
        labels=[
            docker.ContainerLabelArgs(label=k, value=v) for k, v in {**spec.labels, **(input_labels or {})}.items()
        ] or None,
        # The name is fixed (operators, the drain and the health checks use it), and Docker
        # refuses a second container of that name: a replacement deletes the old one first.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True)),
    )
