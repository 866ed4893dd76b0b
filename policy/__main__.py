"""ray-cluster-guardrails: the CrossGuard policy pack for this program.

Run by `pulumi preview/up --policy-pack policy` (the CLI starts it as
`python -m pulumi.policy <engine> policy`). Only registration lives here: each
policy hands the resource's inputs (or, for the stack policy, every resource's
properties) to the plain checks in policy/checks.py.
"""
import sys
from functools import lru_cache
from pathlib import Path

# The checks reuse the program's own ports, version pins and stack config.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import (  # noqa: E402
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from components.model.config import ConfigError  # noqa: E402
from components.model.stack import read_stack_file  # noqa: E402
from policy import checks  # noqa: E402


def by_type(checks_by_type):
    """A validator running the check registered for the resource's type, if any."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        check = checks_by_type.get(args.resource_type)
        for message in check(args.props) if check else []:
            report_violation(message)

    return validate


@lru_cache
def allowed_dashboard_sources(stack: str):
    return checks.dashboard_sources(read_stack_file(stack))


def with_stack_networks(check):
    """A validator running `check(props, the stack's admin and cluster networks)` on what sets a firewall."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in checks.FIREWALL_TYPES:
            return
        stack = args.urn.split("::", 1)[0].rsplit(":", 1)[-1]  # urn:pulumi:<stack>::<project>::...
        try:
            allowed = allowed_dashboard_sources(stack)
        except (OSError, ConfigError) as error:
            report_violation(f"cannot read the admin and cluster networks from Pulumi.{stack}.yaml: {error}")
            return
        for message in check(args.props, allowed):
            report_violation(message)

    return validate


def every_vm_firewalled(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    # Only the whole stack shows a firewall that is missing, or a guard that drifted from its
    # node's firewall step: no single resource does.
    commands = {r.name: r.props for r in args.resources if r.resource_type == checks.REMOTE_COMMAND}
    copies = {r.props["remotePath"]: r.props for r in args.resources if r.resource_type == checks.COPY_TO_REMOTE}
    for vm in args.resources:
        if vm.resource_type == checks.VIRTUAL_MACHINE:
            for message in checks.vm_firewall_violations(vm.name, commands, copies):
                report_violation(message, vm.urn)


POLICIES = [
    ResourceValidationPolicy(
        name="pinned-images",
        description="Docker images carry an exact version tag; the Ray image is the Ray client's version.",
        validate=by_type({
            checks.REMOTE_IMAGE: checks.remote_image_violations,
            checks.CONTAINER: checks.container_image_violations,
        }),
    ),
    ResourceValidationPolicy(
        name="supervised-containers",
        description="Every container has a health check and a restart policy.",
        validate=by_type({checks.CONTAINER: checks.container_supervision_violations}),
    ),
    ResourceValidationPolicy(
        name="no-published-ports",
        description="No container publishes ports: Docker's published ports bypass UFW.",
        validate=by_type({checks.CONTAINER: checks.container_publishing_violations}),
    ),
    ResourceValidationPolicy(
        name="firewall-default-deny",
        description=(
            "A UFW script (a command's, or the firewall guard's staged copy) denies incoming by default, "
            "enables UFW, and opens no Ray port to anyone, nor to networks that together are most of the world."
        ),
        validate=by_type({kind: checks.firewall_violations for kind in checks.FIREWALL_TYPES}),
    ),
    ResourceValidationPolicy(
        name="dashboards-admin-only",
        description=(
            "Grafana and Prometheus are open only to the admin networks and single cluster hosts; "
            "the Ray dashboard also to the cluster network."
        ),
        validate=with_stack_networks(checks.dashboard_exposure_violations),
    ),
    ResourceValidationPolicy(
        name="sources-within-networks",
        description="A UFW script opens ports only to the stack's cluster and admin networks (or parts of them).",
        validate=with_stack_networks(checks.source_violations),
    ),
    StackValidationPolicy(
        name="every-vm-firewalled",
        description=(
            "Every VM has its `<vm>-ufw` firewall command, and that firewall is default-deny; its firewall "
            "guard's staged script is default-deny too and the very script that command applies."
        ),
        validate=every_vm_firewalled,
    ),
]

PolicyPack(
    name="ray-cluster-guardrails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
