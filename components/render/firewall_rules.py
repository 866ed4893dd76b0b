"""Each node's UFW rule set, and the shell script that converges a host to it.

Pure: no Pulumi. `firewall.Firewall` runs `ufw_script(firewall_rules(...))` on
the VM with sudo.

Every rule allows a few ports (TCP unless an extra port says UDP) from one
named source: SSH from the admin networks; Ray's internal ports from each node of the cluster (every node of
every tier, live or not, so a tier coming or going changes no firewall; other
hosts of the cluster network, its DNS servers for one, reach none of them);
metrics and exporters from the monitoring host only; the head's dashboard and
client from the admin networks and the nodes; Grafana/Prometheus from the
admin networks (and from the head, whose dashboard queries both server-side);
Alertmanager from the admin networks; the GCS's Redis from the head only; the image
mirror and the log archive (monitoring host) from the nodes;
a tier's `extraPorts` from the sources its config names. Everything else is
dropped; nothing is ever open to the world.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Union

from components.model.config import ClusterConfig, PlacedNode
from components.model.ports import MONITORING, RAY, REDIS, SSH
from components.render.remote_files import StagedFiles

PortOrRange = Union[int, tuple[int, int]]

# ufw's (iptables multiport's) limit for one rule; a range counts twice.
MAX_PORTS_PER_RULE = 15


def firewall_name(node_name: str) -> str:
    """The name of the Command that converges a node's ufw (the policy pack looks for it)."""
    return f"{node_name}-ufw"


@dataclass(frozen=True)
class UfwRule:
    """Allow `proto` to each of `opened` (ports and (first, last) ranges) from `source`."""

    opened: tuple[PortOrRange, ...]
    source: str  # an IPv4 address or network, as ufw prints it
    comment: str
    proto: str = "tcp"

    def __post_init__(self) -> None:
        # Defence in depth: whatever the config says, never render a rule for the world.
        if ipaddress.IPv4Network(self.source).prefixlen == 0:
            raise ValueError(f"refusing a UFW rule from {self.source}: name the networks allowed")
        if "'" in self.comment:
            raise ValueError(f"a UFW comment must not contain a quote: {self.comment!r}")
        if not self.opened or sum(2 if isinstance(p, tuple) else 1 for p in self.opened) > MAX_PORTS_PER_RULE:
            raise ValueError(f"a UFW rule opens 1 to {MAX_PORTS_PER_RULE} ports (a range counts twice): {self.opened}")

    @property
    def ports(self) -> str:
        """The ports as ufw writes them back, sorted by first port: `22`, `6380,6381,10002:19999,52365`."""
        ordered = sorted(self.opened, key=lambda p: p[0] if isinstance(p, tuple) else p)
        return ",".join(f"{p[0]}:{p[1]}" if isinstance(p, tuple) else str(p) for p in ordered)

    def covers(self, port: int) -> bool:
        return any(p[0] <= port <= p[1] if isinstance(p, tuple) else p == port for p in self.opened)

    @property
    def spec(self) -> str:
        """The rule in the exact form `ufw show added` prints it, comment aside."""
        return f"allow from {self.source} to any port {self.ports} proto {self.proto}"

    @property
    def command(self) -> str:
        """The `ufw` arguments that add this rule."""
        return f"{self.spec} comment '{self.comment}'"


def _allow(purpose: str, sources: list[str], *ports: PortOrRange) -> list[UfwRule]:
    """One rule per source opening `ports`; the purpose becomes the comment."""
    return [UfwRule(tuple(ports), source, f"ray-cluster {purpose}") for source in sources]


def _host(placed: PlacedNode) -> str:
    return str(placed.node.ip)  # ufw prints a single host without /32


# Every node's internal Ray ports: raylet, object manager, agents and the workers' range.
RAY_INTERNAL: tuple[PortOrRange, ...] = (
    RAY.node_manager,
    RAY.object_manager,
    RAY.runtime_env_agent,
    RAY.dashboard_agent_grpc,
    RAY.dashboard_agent_http,
    (RAY.min_worker, RAY.max_worker),
)


def firewall_rules(cfg: ClusterConfig, placed: PlacedNode) -> list[UfwRule]:
    """Every port `placed` opens, each to the sources that need it."""
    admins = [str(cidr) for cidr in cfg.network.admin_cidrs]
    # Every node of every tier, live or not: the heavy tier's evening arrival changes no rule.
    nodes = [_host(p) for p in cfg.placed_nodes]
    monitor = [_host(cfg.monitoring_host)]
    name = placed.node.name
    is_head = name == cfg.head.node.name
    is_monitor = name == cfg.monitoring_host.node.name

    rules = _allow("ssh", admins, SSH)
    # Only the head runs the GCS; workers dial it, nothing dials a worker's.
    rules += _allow("ray internal", nodes, *((RAY.gcs,) if is_head else ()), *RAY_INTERNAL)
    head_metrics = (RAY.autoscaler_metrics, RAY.dashboard_metrics) if is_head else ()
    rules += _allow("metrics", monitor, RAY.metrics_export, MONITORING.node_exporter, MONITORING.cadvisor, *head_metrics)
    if is_head:
        # The dashboard answers on loopback only: its TLS proxy is what the network reaches.
        rules += _allow("ray dashboard and client", admins + nodes, RAY.dashboard_https, RAY.client)
    if is_monitor:
        # The head's dashboard checks Grafana's health and queries Prometheus itself.
        ui_sources = admins if is_head else admins + [_host(cfg.head)]
        rules += _allow("grafana and prometheus", ui_sources, MONITORING.grafana, MONITORING.prometheus)
        rules += _allow("alertmanager", admins, MONITORING.alertmanager)  # Prometheus reaches it on loopback
        # The image mirror and the log archive serve the cluster's nodes only.
        rules += _allow("image mirror and log archive", nodes, MONITORING.image_mirror, MONITORING.log_archive)
    if name == cfg.redis_host.node.name:
        rules += _allow("gcs store", [_host(cfg.head)], REDIS)  # what the GCS keeps is nobody else's business
    rules += _extra_port_rules(placed, admins, [str(cfg.network.cidr)])
    return list(dict.fromkeys(rules))  # an admin network may also be the cluster network


def _extra_port_rules(placed: PlacedNode, admins: list[str], cluster: list[str]) -> list[UfwRule]:
    """The tier's `extraPorts` (Ray Serve, a service of its own), each to its named sources only."""
    rules = []
    for extra in placed.tier.extra_ports:
        sources = [s for source in extra.sources for s in {"admins": admins, "cluster": cluster}.get(str(source), [str(source)])]
        opened = (extra.port, extra.to_port) if extra.to_port not in (None, extra.port) else extra.port
        rules += [UfwRule((opened,), source, f"ray-cluster {placed.tier_name} extra", extra.protocol) for source in sources]
    return rules


def ufw_script(rules: list[UfwRule]) -> str:
    """A POSIX sh script (run as root) converging ufw to exactly `rules`.

    Never `ufw reset` or `disable`: the host is never more open than before or
    after. New rules are added first (live at once on an active firewall),
    then rules not in the set are deleted, then ufw is enabled (a no-op when
    it already runs). `ufw default` restarts an active firewall, accepting
    everything for a moment, so it runs only when a policy differs. Re-running
    is harmless: ufw skips existing rules and only a stale rule is deleted.
    """
    adds = "\n".join(f"ufw {rule.command}" for rule in rules)
    wanted = "\n".join(rule.spec for rule in rules)
    return f"""#!/bin/sh
# Converge ufw to exactly the rules below; generated by ray-cluster, do not edit.
set -eu
defaults=/etc/default/ufw
grep -qx 'DEFAULT_INPUT_POLICY="DROP"' "$defaults" || ufw default deny incoming
grep -qx 'DEFAULT_OUTPUT_POLICY="ACCEPT"' "$defaults" || ufw default allow outgoing
{adds}
wanted='{wanted}'
# ufw prints each added rule as the command that adds it; one not wanted
# (compared without its comment) is stale. eval: app names come quoted.
added=$(ufw show added)
printf '%s\\n' "$added" | sed -n 's/^ufw //p' | sed "s/ comment '.*'\\$//" |
while IFS= read -r rule; do
    printf '%s\\n' "$wanted" | grep -qxF -e "$rule" && continue
    case $rule in
        route\\ *) eval "ufw route delete ${{rule#route }}" ;;
        *) eval "ufw delete $rule" ;;
    esac
done
ufw --force enable
"""


# Drift: a rule added or removed by hand (seed 002's fix for a worker that could not
# reach the head) would last until the rule set next changes. A timer re-applies it.
GUARD_SCRIPT = "/etc/ray-cluster/ufw.sh"
GUARD_UNIT = "ray-cluster-ufw"
GUARD_EVERY = "15min"
# The timer and a `pulumi up` never run ufw at the same time.
GUARD_LOCK = "/run/lock/ray-cluster-ufw.lock"


def guard_files(script: str) -> dict[str, str]:
    """The converging script and the systemd timer that re-runs it, by host path."""
    service = f"""[Unit]
Description=ray-cluster: converge ufw to the rule set Pulumi rendered (undo hand edits)

[Service]
Type=oneshot
ExecStart=/usr/bin/flock {GUARD_LOCK} /bin/sh {GUARD_SCRIPT}
"""
    timer = f"""[Unit]
Description=ray-cluster: re-apply the rendered ufw rule set every {GUARD_EVERY}

[Timer]
OnBootSec=2min
OnUnitActiveSec={GUARD_EVERY}

[Install]
WantedBy=timers.target
"""
    return {
        GUARD_SCRIPT: script,
        f"/etc/systemd/system/{GUARD_UNIT}.service": service,
        f"/etc/systemd/system/{GUARD_UNIT}.timer": timer,
    }


def firewall_command() -> str:
    """What the firewall step runs over SSH, the ufw script on its stdin. It waits for cloud-init
    first (which installs ufw and Docker). A hard cloud-init error (exit 1; 2 is a recoverable
    one, warnings: cloudinit/cmd/status.py `handle_status_args`) fails the step with cloud-init's
    own account, rather than a half-configured VM failing later somewhere else."""
    return (
        "cloud-init status --wait >/dev/null; [ $? -ne 1 ] || "
        "{ echo 'cloud-init failed on this VM:' >&2; cloud-init status --long >&2; exit 1; }; "
        f"sudo flock {GUARD_LOCK} sh -s"
    )


def guard(node_name: str, script: str) -> StagedFiles:
    """The guard's files for a node, its timer started once they are in place and stopped before they go."""
    return StagedFiles(
        f"{node_name}-ufw-guard",
        guard_files(script),
        then=f"systemctl daemon-reload && systemctl enable --now {GUARD_UNIT}.timer",
        before_removal=f"systemctl disable --now {GUARD_UNIT}.timer || true",
        after_removal="systemctl daemon-reload",
    )
