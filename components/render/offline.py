"""An offline render of what each VM receives: the library behind `python -m scripts.render --stack prod --out DIR`.

No Pulumi engine and no Pulumi import: the stack's config comes from
`Pulumi.<stack>.yaml` (`stack.read_stack_file`), every text from the same pure
renderers the components call. For every node of the config, live at the
instant or not (`--at`, default: the stack's pinned `at`, else now), DIR gets:

    nodes/<node>/user-data, meta-data   cloud-init (vSphere guestinfo)
    nodes/<node>/ufw.sh, ufw-rules.txt  the firewall script and its rules, one per line
    nodes/<node>/containers.sh          every container of the node, as `docker run`
    nodes/<node>/drain.sh, drain/       workers: what drain-on-delete runs before removal, and its program
    nodes/<node>/host/<path>            every other file the program puts on the VM, at its path there
                                        (firewall guard, Docker's mirror trust, log shipping, the head's
                                        TLS proxy config, the monitoring host's archive and mirror config)
    monitoring/...                      the monitoring host's files, laid out as under HOST_DIR
    summary.md, summary.json            tiers, sizes, live or not, open ports per node

Three things exist only at deploy time and are placeholders or left out: each
node's SSH host key (Pulumi generates it), the secrets (Ray token, Grafana
password), which containers.sh reads from the environment, and each node's TLS
certificate and key (issued by Pulumi from the cluster CA).
"""
from __future__ import annotations

import datetime as dt
import json
import shlex
import shutil
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from components.render import cloud_init, dashboard_proxy, drain, image_mirror, log_shipping
from components.render import alerting_config as ac
from components.render import monitoring_config as mc
from components.render.containers import RESTART, ContainerSpec, node_containers
from components.model.config import ClusterConfig, PlacedNode, Tier
from components.render.firewall_rules import UfwRule, firewall_rules, guard_files, ufw_script

# Pulumi generates each node's SSH host key at deploy time; no real key is ever rendered here.
HOST_KEY_PLACEHOLDER_PRIVATE = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "PLACEHOLDER-offline-render-the-host-key-is-generated-by-Pulumi-at-deploy-time\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
HOST_KEY_PLACEHOLDER_PUBLIC = "ssh-ed25519 PLACEHOLDER-generated-by-Pulumi-at-deploy-time offline-render"
PLACEHOLDER_NOTE = (
    "# OFFLINE RENDER: ssh_keys below hold a PLACEHOLDER; Pulumi generates the real host key at deploy time.\n"
)
# Secrets containers.sh takes from the environment, and the stack output holding each.
SECRET_ENV_OUTPUTS = {
    "RAY_AUTH_TOKEN": "rayToken",
    "GF_SECURITY_ADMIN_PASSWORD": "grafanaAdminPassword",
    "RAY_REDIS_PASSWORD": "redisPassword",
    "REDISCLI_AUTH": "redisPassword",
}
SUMMARY_JSON = "summary.json"
EXECUTABLE = ".sh"
HEREDOC_END = "END_OF_HEALTH_CMD"


def docker_run(spec: ContainerSpec) -> str:
    """`spec` as one `docker run` command for sh, an option per line; secrets from the environment."""
    q = shlex.quote
    options = [f"--name {q(spec.name)}", "--network host", f"--restart {RESTART}"]
    options += ["--pid host"] * spec.pid_host + ["--privileged"] * spec.privileged
    options += [f"--user {q(spec.user)}"] if spec.user else []
    options += [f"--env {q(f'{name}={value}')}" for name, value in sorted(spec.env.items())]
    options += [f'--env "{name}=${name}"' for name in spec.secret_env]
    for bind in spec.binds:
        if bind.is_mount:
            read_only = ",readonly" * bind.read_only
            propagation = f",bind-propagation={bind.propagation}" if bind.propagation else ""
            options.append(f"--mount type=bind,source={q(bind.source)},target={q(bind.target)}{read_only}{propagation}")
        else:
            options.append(f"--volume {q(f'{bind.source}:{bind.target}' + ':ro' * bind.read_only)}")
    options += [f"--volume {q(f'{volume}:{path}')}" for volume, path in spec.volumes.items()]
    options += [f"--device {q(f'{device}:{device}')}" for device in spec.devices]
    options += [f"--label {q(f'{key}={value}')}" for key, value in spec.labels.items()]
    options += [f"--log-driver {q(spec.log_driver)}"] if spec.log_driver else []
    options += [f"--log-opt {q(f'{key}={value}')}" for key, value in spec.log_opts.items()]
    health = spec.health
    # `docker run` only has the shell form: the same argv, quoted for the image's sh.
    health_cmd = shlex.join(health.test[1:])
    preamble = ""
    if "\n" in health_cmd:
        # A multi-line program: literal in a quoted here-document, not quoted twice more.
        variable = f"{spec.name.replace('-', '_')}_health_cmd"
        preamble = f"{variable}=$(cat <<'{HEREDOC_END}'\n{health_cmd}\n{HEREDOC_END}\n)\n"
        health_cmd = f'"${variable}"'
    else:
        health_cmd = q(health_cmd)
    options += [
        f"--health-cmd {health_cmd}",
        f"--health-interval {health.interval}",
        f"--health-timeout {health.timeout}",
        f"--health-retries {health.retries}",
        f"--health-start-period {health.start_period}",
    ]
    if spec.shm_size_mb is not None:
        options.append(f"--shm-size {spec.shm_size_mb}m")
    if spec.stop_timeout is not None:
        options.append(f"--stop-timeout {spec.stop_timeout}")
    lines = ["docker run --detach", *options, q(spec.image)] + ([shlex.join(spec.command)] if spec.command else [])
    return preamble + " \\\n  ".join(lines) + "\n"


# ---- Per node ----


def _yes(live: bool) -> str:
    return "yes" if live else "no"


def containers_script(cfg: ClusterConfig, placed: PlacedNode, live: bool, at: dt.datetime) -> str:
    containers = node_containers(cfg, placed)
    secrets = [name for spec in containers for name in spec.secret_env]
    require = [
        f': "${{{name}:?export {name} first: pulumi stack output --show-secrets {SECRET_ENV_OUTPUTS[name]}}}"'
        for name in secrets
    ]
    runs = [f"# {spec.name}\n{docker_run(spec)}" for spec in containers]
    return "\n".join(
        [
            "#!/bin/sh",
            f"# The containers Pulumi runs on {placed.node.name}, as docker run commands (offline render).",
            f"# Live at {at.isoformat()}: {_yes(live)}. Secrets come from the environment, never from this file.",
            "set -eu",
            *require,
            "",
            "\n".join(runs),
        ]
    )


def rule_lines(rules: list[UfwRule]) -> str:
    return "".join(f"allow {f'{rule.ports}/{rule.proto}':<16} from {rule.source:<16} {rule.comment}\n" for rule in rules)


def node_files(cfg: ClusterConfig, placed: PlacedNode, live: bool, at: dt.datetime) -> dict[str, str]:
    """A node's files, by name."""
    user_data = cloud_init.user_data(cfg, placed, HOST_KEY_PLACEHOLDER_PRIVATE, HOST_KEY_PLACEHOLDER_PUBLIC)
    first_line, rest = user_data.split("\n", 1)  # "#cloud-config" must stay first
    rules = firewall_rules(cfg, placed)
    files = {
        "user-data": f"{first_line}\n{PLACEHOLDER_NOTE}{rest}",
        "meta-data": cloud_init.metadata(cfg, placed),
        "ufw.sh": ufw_script(rules),
        "ufw-rules.txt": rule_lines(rules),
        "containers.sh": containers_script(cfg, placed, live, at),
    }
    if not placed.node.head:
        files["drain.sh"] = (
            "#!/bin/sh\n"
            f"# What {placed.node.name}'s drain-on-delete runs (over SSH) before its container and VM are removed;\n"
            f"# it runs the program in drain/, which the VM has under {drain.DRAIN_DIR}.\n"
            + drain.drain_command(placed)
        )
        settings = drain.drain_settings(cfg, placed)
        files.update({f"drain/{path}": text for path, text in drain.drain_files(settings).items()})
    files.update({f"host{path}": text for path, text in host_files(cfg, placed, files["ufw.sh"]).items()})
    return files


def host_files(cfg: ClusterConfig, placed: PlacedNode, ufw: str) -> dict[str, str]:
    """The plain files the program puts on `placed`'s VM over SSH, by path there (the monitoring
    host's Prometheus and Grafana files are monitoring_host_files; the TLS files are secrets)."""
    files = {
        **guard_files(ufw),
        image_mirror.DAEMON_JSON: image_mirror.daemon_json(cfg),
        **log_shipping.node_files(cfg),
    }
    if placed.node.head:
        proxy_conf = f"{dashboard_proxy.HOST_CONF_DIR}/{dashboard_proxy.NGINX_CONF}"
        files[proxy_conf] = dashboard_proxy.nginx_conf(dashboard_proxy.proxy_settings(cfg))
    if placed.node.name == cfg.monitoring_host.node.name:
        files.update(log_shipping.receiver_files(cfg))
        files[image_mirror.CONFIG_FILE] = image_mirror.config_yml(cfg)
    return files


# ---- The monitoring host ----


def monitoring_host_files(cfg: ClusterConfig, at: dt.datetime) -> dict[str, str]:
    """Every file Monitoring writes on the monitoring host, by host path (receiver secrets as placeholders)."""
    placeholders = {r.name: f"https://PLACEHOLDER.invalid/alertingSecrets/{r.name}" for r in cfg.alerting.receivers}
    alertmanager = {f"{ac.ALERTMANAGER_CONFIG.host}/{ac.ALERTMANAGER_YML}": ac.alertmanager_yml(cfg, placeholders)}
    return {**mc.config_files(cfg), **mc.dashboard_files(), **mc.schedule_files(cfg, at), **alertmanager}


# ---- Summary ----


def schedule_text(tier: Tier) -> str:
    window = tier.window
    if window is None:
        text = "always"
    else:
        drain_from = (dt.datetime.combine(dt.date(2000, 1, 2), window.end) - window.drain_lead).time()
        bring_up = (dt.datetime.combine(dt.date(2000, 1, 2), window.start) - window.bring_up_lead).time()
        text = f"{window.start:%H:%M}–{window.end:%H:%M} {window.timezone}, brought up from {bring_up:%H:%M}, drained from {drain_from:%H:%M}"
    return text + (f" (override: {tier.override})" if tier.override else "")


def _sizes(tiers: Sequence[Tier]) -> dict[str, int]:
    return {
        "nodes": sum(len(t.nodes) for t in tiers),
        "vcpu": sum(t.vcpu * len(t.nodes) for t in tiers),
        "memoryGb": sum(t.memory_gb * len(t.nodes) for t in tiers),
        "diskGb": sum(t.disk_gb * len(t.nodes) for t in tiers),
    }


def open_ports(rules: list[UfwRule]) -> list[dict[str, Any]]:
    """One entry per port (or range) and purpose, with every source it is open to."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for rule in rules:
        grouped.setdefault((rule.ports, rule.proto, rule.comment), []).append(rule.source)
    return [
        {"port": ports, "proto": proto, "rule": comment, "sources": sources}
        for (ports, proto, comment), sources in grouped.items()
    ]


def summary(cfg: ClusterConfig, stack: str, at: dt.datetime) -> dict[str, Any]:
    live_tiers = cfg.live_tiers(at)
    return {
        "stack": stack,
        "at": at.isoformat(),
        "liveTiers": live_tiers,
        "tiers": [
            {
                "name": name,
                "schedule": schedule_text(tier),
                "live": name in live_tiers,
                "perNode": {"vcpu": tier.vcpu, "memoryGb": tier.memory_gb, "diskGb": tier.disk_gb},
                **_sizes([tier]),
                "ips": [str(node.ip) for node in tier.nodes],
            }
            for name, tier in cfg.tiers.items()
        ],
        "totals": {
            "declared": _sizes(list(cfg.tiers.values())),
            "live": _sizes([cfg.tiers[name] for name in live_tiers]),
        },
        "nodes": [
            {
                "name": p.node.name,
                "tier": p.tier_name,
                "ip": str(p.node.ip),
                "role": mc.role(p),
                "monitoringHost": p.node.name == cfg.monitoring_host.node.name,
                "live": p.tier_name in live_tiers,
                "openPorts": open_ports(firewall_rules(cfg, p)),
            }
            for p in cfg.placed_nodes
        ],
    }


def summary_markdown(s: dict[str, Any]) -> str:
    def row(*cells: object) -> str:
        return "| " + " | ".join(map(str, cells)) + " |"

    def size_row(label: str, sizes: dict[str, int], schedule: str = "", live: str = "") -> str:
        return row(label, schedule, live, sizes["nodes"], sizes["vcpu"], f"{sizes['memoryGb']} GB", f"{sizes['diskGb']} GB")

    lines = [
        f"# Stack {s['stack']} at {s['at']}",
        "",
        "Rendered offline (`python -m scripts.render`). Live: what the schedule and override want at this instant.",
        "",
        "## Tiers",
        "",
        row("tier", "schedule", "live", "nodes", "vCPU", "memory", "disk"),
        row(*["---"] * 7),
        *(size_row(t["name"], t, t["schedule"], _yes(t["live"])) for t in s["tiers"]),
        size_row("**total declared**", s["totals"]["declared"]),
        size_row("**total live**", s["totals"]["live"]),
        "",
        row("tier", "per node", "IPs"),
        row(*["---"] * 3),
        *(
            row(t["name"], f"{t['perNode']['vcpu']} vCPU, {t['perNode']['memoryGb']} GB, {t['perNode']['diskGb']} GB", ", ".join(t["ips"]))
            for t in s["tiers"]
        ),
        "",
        "## Nodes",
        "",
        row("node", "tier", "IP", "role", "live"),
        row(*["---"] * 5),
        *(
            row(n["name"], n["tier"], n["ip"], n["role"] + (", monitoring host" if n["monitoringHost"] else ""), _yes(n["live"]))
            for n in s["nodes"]
        ),
        "",
        "## Open ports (UFW; everything else is dropped)",
    ]
    for node in s["nodes"]:
        lines += ["", f"### {node['name']} ({node['ip']})", "", row("port", "rule", "from"), row(*["---"] * 3)]
        lines += [row(f"{p['port']}/{p['proto']}", p["rule"], ", ".join(p["sources"])) for p in node["openPorts"]]
    return "\n".join(lines) + "\n"


def readme(s: dict[str, Any]) -> str:
    return f"""\
# Offline render of stack {s['stack']} at {s['at']}

What every VM of the config receives, rendered by `python -m components.render` from
Pulumi.{s['stack']}.yaml with the program's own renderers (no Pulumi engine). Every node is
rendered; summary.md says which are live at this instant.

- nodes/<node>/user-data: the SSH host key in it is a PLACEHOLDER. Pulumi generates the real
  one at deploy time; this render holds no secret.
- nodes/<node>/containers.sh: reads RAY_AUTH_TOKEN (and GF_SECURITY_ADMIN_PASSWORD on the
  monitoring host) from the environment.
- monitoring/: the files under {mc.HOST_DIR} on the monitoring host, same layout.
"""


# ---- The whole render ----


def render(cfg: ClusterConfig, stack: str, at: dt.datetime) -> dict[str, str]:
    """Every file of the render, by path relative to the output directory."""
    live = {p.node.name for p in cfg.live_nodes(at)}
    files: dict[str, str] = {}
    for placed in cfg.placed_nodes:
        for name, text in node_files(cfg, placed, placed.node.name in live, at).items():
            files[f"nodes/{placed.node.name}/{name}"] = text
    for host_path, text in monitoring_host_files(cfg, at).items():
        files[f"monitoring/{PurePosixPath(host_path).relative_to(mc.HOST_DIR)}"] = text
    overview = summary(cfg, stack, at)
    files[SUMMARY_JSON] = json.dumps(overview, indent=2) + "\n"
    files["summary.md"] = summary_markdown(overview)
    files["README.md"] = readme(overview)
    return files


def write(files: dict[str, str], out: Path) -> None:
    """Replaces `out` with `files`; refuses a non-empty directory that is not an earlier render."""
    if out.exists() and any(out.iterdir()):
        if not (out / SUMMARY_JSON).is_file():
            raise SystemExit(f"{out} is not empty and not an earlier render: choose an empty or new directory")
        shutil.rmtree(out)
    for relative, text in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if relative.endswith(EXECUTABLE):
            path.chmod(0o755)
