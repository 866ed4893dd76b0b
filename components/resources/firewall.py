"""A node's UFW firewall, converged over SSH before anything listens."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_command import remote

from components.render import firewall_rules
from components.resources.staged_files import install_staged_files


@dataclass(frozen=True)
class FirewallArgs:
    node_name: str
    script: str  # firewall_rules.ufw_script: converges the host to exactly the node's rules
    connection: remote.ConnectionArgs
    vm: pulumi.Resource


class Firewall(pulumi.ComponentResource):
    def __init__(self, args: FirewallArgs, opts: Optional[pulumi.ResourceOptions] = None):
        name = args.node_name
        super().__init__("ray-cluster:index:Firewall", name, None, opts)
        self.script = args.script
        # The script converges the host to exactly this rule set; a changed rule set
        # changes stdin, which re-runs it, and a replaced VM gets it anew (`deleted_with`
        # the VM: replaced with it, and no SSH to a VM that is going anyway).
        # cloud-init may still be installing ufw when SSH first answers, hence the wait.
        self.command = remote.Command(
            firewall_rules.firewall_name(name),
            connection=args.connection,
            create=firewall_rules.firewall_command(),
            stdin=self.script,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.vm], deleted_with=args.vm),
        )
        # Then a timer re-applies the same script, so a hand-made change does not last.
        self.guard = install_staged_files(
            firewall_rules.guard(name, self.script), args.connection, args.vm, self.command, parent=self
        )
        self.register_outputs({"rules": self.script})
