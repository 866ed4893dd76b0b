"""Each node's UFW rule set, and the shell script that converges a host to it.

Pure: no Pulumi. `firewall.Firewall` runs `ufw_script(firewall_rules(...))` on
the VM with sudo.

Every rule allows TCP to one port (or port range) from one named source: SSH
from the admin networks, Ray's internal ports from the cluster network,
metrics and exporters from the monitoring host only, the head's dashboard and
client from the admin and cluster networks, and Grafana/Prometheus from the
admin networks (and from the head, whose dashboard queries both server-side),
and a tier's `extraPorts` from the sources its config names. Everything else
is dropped; nothing is ever open to the world.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, Union

from components.model.config import ClusterConfig, PlacedNode
from components.model.ports import MONITORING, RAY, SSH
from components.render.remote_files import write_files_script

PortOrRange = Union[int, tuple[int, int]]


def firewall_name(node_name: str) -> str:
    """The name of the Command that converges a node's ufw (the policy pack looks for it)."""
    return f"{node_name}-ufw"


@dataclass(frozen=True)
class UfwRule:
    """Allow `proto` to `port` (through `last_port`, if a range) from `source`."""

    port: int
    source: str  # an IPv4 address or network, as ufw prints it
    comment: str
    last_port: Optional[int] = None
    proto: str = "tcp"

    def __post_init__(self) -> None:
        # Defence in depth: whatever the config says, never render a rule for the world.
        if ipaddress.IPv4Network(self.source).prefixlen == 0:
            raise ValueError(f"refusing a UFW rule from {self.source}: name the networks allowed")
        if "'" in self.comment:
            raise ValueError(f"a UFW comment must not contain a quote: {self.comment!r}")

    @property
    def ports(self) -> str:
        return str(self.port) if self.last_port is None else f"{self.port}:{self.last_port}"

    @property
    def spec(self) -> str:
        """The rule in the exact form `ufw show added` prints it, comment aside."""
        return f"allow from {self.source} to any port {self.ports} proto {self.proto}"

    @property
    def command(self) -> str:
        """The `ufw` arguments that add this rule."""
        return f"{self.spec} comment '{self.comment}'"


def _allow(sources: list[str], **ports: PortOrRange) -> list[UfwRule]:
    """One rule per (named port, source); the port's name becomes the comment."""
    rules = []
    for name, port in ports.items():
        first, last = port if isinstance(port, tuple) else (port, None)
        rules += [UfwRule(first, source, f"ray-cluster {name}", last) for source in sources]
    return rules


def _host(placed: PlacedNode) -> str:
    return str(placed.node.ip)  # ufw prints a single host without /32


def firewall_rules(cfg: ClusterConfig, placed: PlacedNode) -> list[UfwRule]:
    """Every port `placed` opens, each to the sources that need it."""
    admins = [str(cidr) for cidr in cfg.network.admin_cidrs]
    cluster = [str(cfg.network.cidr)]
    monitor = cfg.monitoring_host
    name = placed.node.name
    is_head = name == cfg.head.node.name
    is_monitor = name == monitor.node.name

    rules = _allow(admins, ssh=SSH)
    rules += _allow(
        cluster,
        node_manager=RAY.node_manager,
        object_manager=RAY.object_manager,
        runtime_env_agent=RAY.runtime_env_agent,
        dashboard_agent_grpc=RAY.dashboard_agent_grpc,
        dashboard_agent_http=RAY.dashboard_agent_http,
        workers=(RAY.min_worker, RAY.max_worker),
    )
    rules += _allow(
        [_host(monitor)],
        metrics_export=RAY.metrics_export,
        node_exporter=MONITORING.node_exporter,
        cadvisor=MONITORING.cadvisor,
    )
    if is_head:
        # Only the head runs the GCS; workers dial it, nothing dials a worker's.
        rules += _allow(cluster, gcs=RAY.gcs)
        # The dashboard answers on loopback only: its TLS proxy is what the network reaches.
        rules += _allow(admins + cluster, dashboard_https=RAY.dashboard_https, client=RAY.client)
        rules += _allow(
            [_host(monitor)],
            autoscaler_metrics=RAY.autoscaler_metrics,
            dashboard_metrics=RAY.dashboard_metrics,
        )
    if is_monitor:
        # The head's dashboard checks Grafana's health and queries Prometheus itself.
        ui_sources = admins if is_head else admins + [_host(cfg.head)]
        rules += _allow(ui_sources, grafana=MONITORING.grafana, prometheus=MONITORING.prometheus)
    rules += _extra_port_rules(placed, admins, cluster)
    return list(dict.fromkeys(rules))  # an admin network may also be the cluster network


def _extra_port_rules(placed: PlacedNode, admins: list[str], cluster: list[str]) -> list[UfwRule]:
    """The tier's `extraPorts` (Ray Serve, a service of its own), each to its named sources only."""
    rules = []
    for extra in placed.tier.extra_ports:
        sources = [s for source in extra.sources for s in {"admins": admins, "cluster": cluster}.get(str(source), [str(source)])]
        last = extra.to_port if extra.to_port not in (None, extra.port) else None
        rules += [UfwRule(extra.port, source, f"ray-cluster {placed.tier_name} extra", last, extra.protocol) for source in sources]
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


def guard_install_script(script: str) -> str:
    """Shell (as root) that installs the guard and starts its timer."""
    return write_files_script(
        guard_files(script), then=f"systemctl daemon-reload && systemctl enable --now {GUARD_UNIT}.timer"
    )
