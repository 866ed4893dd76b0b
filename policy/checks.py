"""The cluster's guardrails as plain functions: a resource's inputs in, violation messages out.

`policy/__main__.py` registers them as a CrossGuard policy pack; tests call them
directly with the inputs a mocks run of the program registers. Inputs arrive as
the engine sends them (camelCase keys, plain dicts and lists, or pulumi_policy's
read-only proxies of them). During a preview an input may not be known yet:
reading it raises pulumi_policy's UnknownValueError, which the pack reports as
"cannot check during preview" rather than as a violation.

Ports and the Ray version come from the program's own modules, never copied.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from components.model.checks import source_set_problem
from components.model.config import ClusterConfig
from components.model.versions import pinned_ray_client, pinned_version
from components.render.firewall_rules import GUARD_SCRIPT, firewall_name, guard
from components.model.ports import MONITORING, RAY
from policy.ufw_script import AllowRule, Network, PortRange, ufw_intent

REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
CONTAINER = "docker:index/container:Container"
REMOTE_COMMAND = "command:remote:Command"
COPY_TO_REMOTE = "command:remote:CopyToRemote"
VIRTUAL_MACHINE = "vsphere:index/virtualMachine:VirtualMachine"
# The resources whose text sets a host's firewall (see `firewall_script`).
FIREWALL_TYPES = (REMOTE_COMMAND, COPY_TO_REMOTE)


# --- images ---------------------------------------------------------------


def _repository(ref: str) -> str:
    """`registry/org/name` of an image reference, without tag or digest."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def image_violations(ref: Optional[str]) -> list[str]:
    """A reference must carry an exact version tag; Ray's must be the pinned Ray client's version."""
    if not ref:
        return ["no image reference: it must name an image with an exact version tag"]
    version = pinned_version(ref.split("@", 1)[0])  # a digest may follow the tag
    if version is None:
        return [f"image {ref!r} is not pinned to an exact version tag (never latest or untagged)"]
    # Ray's own image, or a mirror of it: the cluster's Ray must speak the client's protocol.
    if _repository(ref).rsplit("/", 1)[-1] == "ray" and version != pinned_ray_client():
        return [
            f"Ray image {ref!r} is Ray {version}, but requirements.txt pins the Ray client "
            f"{pinned_ray_client()}: they must be equal"
        ]
    return []


def remote_image_violations(props: Mapping) -> list[str]:
    return image_violations(props.get("name"))


def container_image_violations(props: Mapping) -> list[str]:
    image = props.get("image")
    if isinstance(image, str) and image.startswith("sha256:"):
        return []  # the ID of a pulled RemoteImage, whose own name is checked
    return image_violations(image)


# --- containers -----------------------------------------------------------


def container_supervision_violations(props: Mapping) -> list[str]:
    problems = []
    tests = list((props.get("healthcheck") or {}).get("tests") or [])
    if not tests or tests[0] == "NONE":
        problems.append(
            "no health check (healthcheck.tests is empty): nothing tells a hung service from a healthy one"
        )
    restart = props.get("restart") or "no"  # the provider's default
    if restart == "no":
        problems.append(f"restart policy {restart!r}: the service stays down after a crash or a reboot")
    return problems


def container_publishing_violations(props: Mapping) -> list[str]:
    problems = []
    published = props.get("ports") or []
    if published:
        problems.append(
            f"publishes ports {sorted(port.get('internal') for port in published)}: Docker's published "
            "ports bypass UFW (the FORWARD chain); use host networking and let the firewall decide"
        )
    if props.get("publishAllPorts"):
        problems.append("publish_all_ports is set: every exposed port would bypass UFW")
    return problems


# --- the firewall script ----------------------------------------------------


def command_script(props: Mapping) -> str:
    """The shell text a Command runs when created or updated."""
    return "\n".join(str(props.get(key) or "") for key in ("create", "update", "stdin"))


def is_guard_copy(props: Mapping) -> bool:
    """Whether a CopyToRemote stages the firewall guard's script (StagedFiles.staged ends with the host path),
    which the guard's timer re-applies as root every few minutes."""
    return str(props.get("remotePath") or "").endswith(GUARD_SCRIPT)


def asset_text(asset: Any) -> Optional[str]:
    """A text asset's text: the pack receives a pulumi.StringAsset (pulumi_policy deserialize.py
    `_deserialize_asset`), a mocks run records the wire form (`{<sig>: <asset sig>, "text": ...}`).
    None for any other asset (a file or a URI), whose text the pack cannot read."""
    text = asset.get("text") if isinstance(asset, Mapping) else getattr(asset, "text", None)
    return text if isinstance(text, str) else None


def firewall_script(props: Mapping) -> str:
    """The shell text a resource makes a host run: a Command's script, or the firewall guard's
    staged copy ("" if its asset is not text: `firewall_violations` refuses that)."""
    if is_guard_copy(props):
        return asset_text(props.get("source")) or ""
    return command_script(props)


def _ray_ports() -> dict[str, PortRange]:
    """Every port Ray uses, by name, from components/ports.py."""
    workers = ("min_worker", "max_worker")
    single = {f.name: (getattr(RAY, f.name),) * 2 for f in dataclasses.fields(RAY) if f.name not in workers}
    return {**single, "workers": (RAY.min_worker, RAY.max_worker)}


DASHBOARDS: dict[str, int] = {
    "Ray dashboard": RAY.dashboard_https,  # its TLS proxy; the dashboard itself answers on loopback only
    "Grafana": MONITORING.grafana,
    "Prometheus": MONITORING.prometheus,
}


def firewall_violations(props: Mapping) -> list[str]:
    """A script that configures ufw (a command's, or the guard's) leaves it enabled, deny-by-default, with no port open to all."""
    if is_guard_copy(props) and asset_text(props.get("source")) is None:
        return ["the firewall guard's script is not a text asset: the pack cannot read the rules its timer re-applies"]
    intent = ufw_intent(firewall_script(props))
    if intent is None:
        return []
    problems = []
    if intent.incoming_default not in ("deny", "reject"):
        problems.append(
            f"the ufw script leaves incoming traffic at {intent.incoming_default or 'the host default'}: "
            "it must run `ufw default deny incoming`"
        )
    if not intent.enabled:
        problems.append("the ufw script never ends with ufw enabled (`ufw --force enable`)")
    ray_ports = _ray_ports()
    for rule in intent.allows:
        opened = [name for name, (low, high) in ray_ports.items() if rule.opens(low, high)]
        if rule.from_anywhere and opened:
            problems.append(
                f"`{rule.command}` opens Ray's {', '.join(opened)} port(s) to anyone: "
                "Ray listens on every interface, only the firewall keeps it private"
            )
        elif rule.from_anywhere:
            problems.append(
                f"`{rule.command}` opens a port to anyone: name the networks allowed "
                "(a tier's extraPorts take cluster, admins or a network in `from`)"
            )
    # Rules no one of which is the world may be the world together (0.0.0.0/1 + 128.0.0.0/1).
    named = {ports: f"Ray's {name} port" for name, ports in ray_ports.items()}
    for rule in intent.allows:
        for low, high in rule.ports or ():
            named.setdefault((low, high), f"port {low}" + (f":{high}" if high != low else ""))
    by_rules: dict[tuple[AllowRule, ...], list[str]] = {}
    for (low, high), name in named.items():
        rules = tuple(rule for rule in intent.allows if rule.opens(low, high) and not rule.from_anywhere)
        by_rules.setdefault(rules, []).append(name)
    for rules, names in by_rules.items():
        too_wide = source_set_problem(rule.network for rule in rules)
        if too_wide:
            problems.append(
                f"{' + '.join(f'`{rule.command}`' for rule in rules)} open {', '.join(names)} to networks "
                f"that {too_wide}"
            )
    return problems


def vm_firewall_violations(vm_name: str, commands: Mapping[str, Mapping], copies: Mapping[str, Mapping]) -> list[str]:
    """A VM is firewalled by its `<vm>-ufw` Command, which must pass the default-deny checks; its
    firewall guard must be staged, pass them too and re-apply exactly the Command's script.

    `commands` maps every remote Command in the stack, by name, to its properties; `copies` every
    CopyToRemote, by remotePath.
    """
    name = firewall_name(vm_name)
    if name not in commands:
        return [f"VM {vm_name} has no firewall: no `{name}` command converges its ufw"]
    props = commands[name]
    if ufw_intent(command_script(props)) is None:
        return [f"VM {vm_name} has no firewall: its `{name}` command never changes ufw"]
    problems = firewall_violations(props)
    found = [f"VM {vm_name}'s firewall `{name}` is not default-deny: {'; '.join(problems)}"] if problems else []
    guard_path = guard(vm_name, "").staged(GUARD_SCRIPT)  # where the node's guard script is staged
    if guard_path not in copies:
        return found + [f"VM {vm_name} has no firewall guard: nothing stages {guard_path}, so a rule changed by hand would last"]
    return found + _guard_violations(f"VM {vm_name}'s firewall guard ({guard_path})", name, props, copies[guard_path])


def _guard_violations(guard_described: str, step_name: str, step: Mapping, copy: Mapping) -> list[str]:
    """The guard copy's script passes the firewall checks and is the step's `stdin`, byte for byte
    (the differing lines are named)."""
    problems = firewall_violations(copy)
    found = [f"{guard_described} is not default-deny: {'; '.join(problems)}"] if problems else []
    text, applied = asset_text(copy.get("source")), str(step.get("stdin") or "")
    if text is not None and text != applied:
        guard_lines, step_lines = text.splitlines(), applied.splitlines()
        only = [
            f"only in {where}: {', '.join(f'`{line.strip()}`' for line in lines if line not in others)}"
            for where, lines, others in (
                ("the guard", guard_lines, set(step_lines)),
                (f"`{step_name}`", step_lines, set(guard_lines)),
            )
            if not others.issuperset(lines)
        ]
        found.append(
            f"{guard_described} is not the script its firewall step `{step_name}` applies "
            f"({'; '.join(only) or 'the same lines in another order'}): its timer would re-apply other rules"
        )
    return found


@dataclass(frozen=True)
class DashboardSources:
    """Who may reach the dashboards (and any port), from the stack's config."""

    admins: tuple[Network, ...]
    cluster: Network
    # A network a tier's extraPorts names in `from`, with the port range it opens to it.
    extra: tuple[tuple[Network, PortRange], ...] = ()


def dashboard_sources(cfg: ClusterConfig) -> DashboardSources:
    extra = tuple(
        (source, (port.port, port.to_port or port.port))
        for tier in cfg.tiers.values()
        for port in tier.extra_ports
        for source in port.sources
        if not isinstance(source, str)
    )
    return DashboardSources(tuple(cfg.network.admin_cidrs), cfg.network.cidr, extra)


def _inside(network: Optional[Network], nets: Sequence[Network]) -> bool:
    return network is not None and any(network.version == net.version and network.subnet_of(net) for net in nets)


def _may_reach(dashboard: str, network: Optional[Network], sources: DashboardSources) -> bool:
    """Admins reach every dashboard; the cluster network only what the cluster itself uses."""
    if _inside(network, sources.admins):
        return True
    if dashboard == "Ray dashboard":
        return _inside(network, [sources.cluster])  # workers and jobs reach the dashboard and Jobs API
    # Grafana and Prometheus: one cluster host at most (the head's dashboard queries both server-side).
    return _inside(network, [sources.cluster]) and network.num_addresses == 1


def dashboard_exposure_violations(props: Mapping, sources: DashboardSources) -> list[str]:
    """Grafana and Prometheus are open only to the admin networks and single cluster hosts; the Ray
    dashboard also to the cluster network."""
    intent = ufw_intent(firewall_script(props))
    if intent is None:
        return []
    problems = []
    for rule in intent.allows:
        opened = [
            name for name, port in DASHBOARDS.items()
            if rule.opens(port, port) and not _may_reach(name, rule.network, sources)
        ]
        if opened:
            problems.append(
                f"`{rule.command}` opens {', '.join(opened)} to {rule.source}: Grafana and Prometheus are for "
                f"the admin networks ({', '.join(map(str, sources.admins))}) and single hosts of the cluster "
                f"network, the Ray dashboard also for the whole cluster network ({sources.cluster})"
            )
    return problems


def _named_for_its_ports(rule: AllowRule, sources: DashboardSources) -> bool:
    """Whether a tier's extraPorts open each of the rule's ports to a network holding its source."""
    return rule.ports is not None and all(
        any(_inside(rule.network, [net]) and first <= low and high <= last for net, (first, last) in sources.extra)
        for low, high in rule.ports
    )


def source_violations(props: Mapping, sources: DashboardSources) -> list[str]:
    """Every port is opened only to the cluster network, the admin networks (or parts of them),
    or, for a tier's extra port, the networks its `from` names."""
    intent = ufw_intent(firewall_script(props))
    if intent is None:
        return []
    return [
        f"`{rule.command}` opens a port to {rule.source}, outside the networks the cluster needs: "
        f"ray-cluster:network.cidr ({sources.cluster}) and ray-cluster:network.adminCidrs "
        f"({', '.join(map(str, sources.admins))}), or for an extra port the networks in its tier's extraPorts `from`"
        for rule in intent.allows
        if not _inside(rule.network, [sources.cluster, *sources.admins]) and not _named_for_its_ports(rule, sources)
    ]
