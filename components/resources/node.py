"""How the components placed on one VM reach it: the small shared part of their args."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
from pulumi_command import remote


@dataclass(frozen=True)
class OnNode:
    """One VM as the components on it see it."""

    name: str  # the node's name: every child's name starts with it
    vm: pulumi.Resource  # what runs on the VM is deleted_with it
    connection: remote.ConnectionArgs  # SSH, host key pinned
    docker_provider: docker.Provider  # the VM's Docker engine over SSH
    firewall_ready: pulumi.Resource  # nothing listens before the firewall is in place
    # The node's image pulls wait for these: its Docker trusting the LAN image mirror, the mirror filled.
    images_ready: tuple[pulumi.Resource, ...] = ()
