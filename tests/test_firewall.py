"""Each node's UFW rules: who may reach which port, proven with real ufw and real packets.

The rule checks read the prod stack. The packet tests build a lab of network
namespaces (tests/netns.py) from a copy of the prod config moved onto private
test ranges that exist only inside those namespaces, run the very script
`ufw_script` renders in the node's namespace, and connect from each peer.
"""
import copy
import dataclasses
import datetime as dt
import ipaddress
import subprocess

import pytest

import netns
from components.model import config
from components.render import firewall_rules as fw
from components.model.ports import MONITORING, RAY, REDIS, SSH

LAB_CIDR = ipaddress.ip_network("10.77.0.0/24")
LAB_ADMIN_CIDRS = ["10.78.0.0/24", "10.79.0.0/24"]
LAB_MONITORING_HOST = "ray-ao-2"  # not the head, so the head's own access to it is exercised

RAY_SINGLE_PORTS = {
    f.name: getattr(RAY, f.name) for f in dataclasses.fields(RAY) if f.name not in ("min_worker", "max_worker")
}
RAY_METRICS = {"metrics_export", "autoscaler_metrics", "dashboard_metrics"}
RAY_ENTRY = {"dashboard_https", "client"}  # the head's doors for people and jobs (the dashboard's TLS proxy)
LOOPBACK_ONLY = {"dashboard"}  # plain HTTP: only the TLS proxy on the head reaches it
HEAD_ONLY = {"gcs", "dashboard_https", "client", "autoscaler_metrics", "dashboard_metrics"}
# Every other Ray port is internal: between the cluster's nodes only.
RAY_INTERNAL = set(RAY_SINGLE_PORTS) - RAY_METRICS - RAY_ENTRY - LOOPBACK_ONLY

# What the packet tests connect to on the head: every Ray port, the worker range's
# ends and middle, and a few others. Each peer is named for where it sits.
PROBED = {
    **RAY_SINGLE_PORTS,
    "worker_first": RAY.min_worker,
    "worker": (RAY.min_worker + RAY.max_worker) // 2,
    "worker_last": RAY.max_worker,
    "past_workers": RAY.max_worker + 1,
    "ssh": SSH,
    "grafana": MONITORING.grafana,  # runs on the monitoring host, not the head
    "redis": REDIS,  # the GCS's store on the head's VM: the head itself only, no peer
}
FROM_NODES = RAY_INTERNAL | {"worker_first", "worker", "worker_last"} | RAY_ENTRY
REACHES = {
    "heavy": FROM_NODES,  # a worker of the heavy tier
    "monitor": FROM_NODES | RAY_METRICS,  # a node too
    "cluster": set(),  # inside network.cidr, not a node
    "dns": set(),  # a DNS server of the cluster network
    "admin": {"ssh"} | RAY_ENTRY,
    "admin2": {"ssh"} | RAY_ENTRY,
    "outsider": set(),
}


@pytest.fixture
def namespaces():
    """Skips unless network and mount namespaces can be made here."""
    netns.require_namespaces()


def ray_ports_in(rule: fw.UfwRule) -> set[str]:
    """The Ray ports a rule opens, by name; "workers" if it opens any of the worker range."""
    names = {name for name, port in RAY_SINGLE_PORTS.items() if rule.covers(port)}
    overlaps_workers = any(
        (p[0] <= RAY.max_worker and p[1] >= RAY.min_worker) if isinstance(p, tuple) else RAY.min_worker <= p <= RAY.max_worker
        for p in rule.opened
    )
    return names | ({"workers"} if overlaps_workers else set())


def node_rules(cfg: config.ClusterConfig):
    return [(placed, fw.firewall_rules(cfg, placed)) for placed in cfg.placed_nodes]


def with_monitoring_host(raw: dict, host: str) -> config.ClusterConfig:
    raw = copy.deepcopy(raw)
    raw.setdefault("monitoring", {})["host"] = host
    return config.load(raw)


# --- The rules, as data -------------------------------------------------------------------------


def test_every_source_is_the_cluster_or_an_admin_network(prod_config):
    allowed = [prod_config.network.cidr, *prod_config.network.admin_cidrs]
    for placed, rules in node_rules(prod_config):
        for rule in rules:
            source = ipaddress.ip_network(rule.source)
            assert source.prefixlen > 0, (placed.node.name, rule)
            assert any(source.subnet_of(net) for net in allowed), (placed.node.name, rule)


def test_ray_ports_open_only_to_whom_they_serve(prod_config):
    admins = {str(c) for c in prod_config.network.admin_cidrs}
    nodes = {str(p.node.ip) for p in prod_config.placed_nodes}  # every tier's, live or not
    monitor = str(prod_config.monitoring_host.node.ip)
    for placed, rules in node_rules(prod_config):
        sources: dict[str, set[str]] = {}
        for rule in rules:
            for name in ray_ports_in(rule):
                sources.setdefault(name, set()).add(rule.source)
        for name in HEAD_ONLY:
            assert (name in sources) == placed.node.head, f"{name} on {placed.node.name}"
        for name, opened_to in sources.items():
            expected = {monitor} if name in RAY_METRICS else admins | nodes if name in RAY_ENTRY else nodes
            assert opened_to == expected, (placed.node.name, name)
        assert set(sources) >= (RAY_INTERNAL - HEAD_ONLY) | {"workers", "metrics_export"}, placed.node.name
        assert not set(sources) & LOOPBACK_ONLY, placed.node.name


def test_a_tier_off_now_keeps_its_nodes_in_every_firewall(raw):
    """The heavy tier's VMs come and go twice a day; no firewall rule changes with them."""
    on, off = copy.deepcopy(raw), copy.deepcopy(raw)
    on["tiers"]["heavy-compute"]["override"], off["tiers"]["heavy-compute"]["override"] = "on", "off"
    on_cfg, off_cfg = config.load(on), config.load(off)
    heavy = {str(node.ip) for node in off_cfg.tiers["heavy-compute"].nodes}
    for placed in off_cfg.live_nodes(dt.datetime.now(dt.timezone.utc)):
        rules = fw.firewall_rules(off_cfg, placed)
        assert heavy <= {rule.source for rule in rules if rule.covers(RAY.node_manager)}, placed.node.name
        assert rules == fw.firewall_rules(on_cfg, on_cfg.placed(placed.node.name)), placed.node.name


def test_ssh_only_from_every_admin_network(prod_config):
    for placed, rules in node_rules(prod_config):
        sources = [rule.source for rule in rules if rule.covers(SSH)]
        assert sorted(sources) == sorted(str(c) for c in prod_config.network.admin_cidrs), placed.node.name


def test_every_port_is_one_named_in_ports_py(prod_config):
    named = set(RAY_SINGLE_PORTS.values()) | {getattr(MONITORING, f.name) for f in dataclasses.fields(MONITORING)} | {SSH, REDIS}
    for placed, rules in node_rules(prod_config):
        for rule in rules:
            for port in rule.opened:
                assert port in named or port == (RAY.min_worker, RAY.max_worker), rule


def test_monitoring_uis_only_on_the_monitoring_host(raw):
    cfg = with_monitoring_host(raw, LAB_MONITORING_HOST)
    admins = {str(c) for c in cfg.network.admin_cidrs}
    head = str(cfg.head.node.ip)
    for placed, rules in node_rules(cfg):
        for port in (MONITORING.grafana, MONITORING.prometheus):
            sources = {rule.source for rule in rules if rule.covers(port)}
            # The head's dashboard checks Grafana's health and queries Prometheus server-side.
            assert sources == (admins | {head} if placed.node.name == LAB_MONITORING_HOST else set()), placed.node.name


def test_exporters_only_from_the_monitoring_host(raw):
    cfg = with_monitoring_host(raw, LAB_MONITORING_HOST)
    for placed, rules in node_rules(cfg):
        for port in (MONITORING.node_exporter, MONITORING.cadvisor, RAY.metrics_export):
            assert {r.source for r in rules if r.covers(port)} == {str(cfg.monitoring_host.node.ip)}, placed.node.name


def test_no_rule_is_ever_rendered_for_the_world():
    # The config refuses a world-wide network (test_config); the rule itself refuses it too.
    with pytest.raises(ValueError, match="0.0.0.0/0"):
        fw.UfwRule((RAY.gcs,), "0.0.0.0/0", "gcs")


def test_no_rule_opens_more_ports_than_ufw_takes_in_one():
    worker_ranges = ((RAY.min_worker, RAY.max_worker),) * 8  # 16 ports for ufw
    with pytest.raises(ValueError, match="1 to 15 ports"):
        fw.UfwRule(worker_ranges, "10.0.0.1", "too many")


@pytest.mark.parametrize("cloud_init_exit, runs_ufw", [(0, True), (2, True), (1, False)], ids=["done", "recoverable", "error"])
def test_the_firewall_step_waits_for_cloud_init_and_stops_on_its_hard_error(tmp_path, cloud_init_exit, runs_ufw):
    """The step's command run by sh, with `cloud-init` and `sudo` standing in on PATH: the ufw
    script (stdin) runs after a finished or degraded cloud-init, never after a failed one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cloud-init").write_text(
        f"#!/bin/sh\n[ \"$2\" = --long ] && echo 'status: error' && echo 'errors: module apt-configure failed'\nexit {cloud_init_exit}\n"
    )
    (bin_dir / "sudo").write_text('#!/bin/sh\necho "as root: $*"; cat\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    ran = subprocess.run(
        ["sh", "-c", fw.firewall_command()], input="ufw --force enable\n", capture_output=True, text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=30,
    )
    if runs_ufw:
        assert ran.returncode == 0 and ran.stdout == f"as root: flock {fw.GUARD_LOCK} sh -s\nufw --force enable\n"
    else:
        assert ran.returncode == 1 and ran.stdout == ""
        assert "cloud-init failed on this VM:" in ran.stderr and "module apt-configure failed" in ran.stderr


@pytest.mark.netns
def test_ufw_dry_run_accepts_every_prod_rule(namespaces, prod_config, tmp_path):
    commands = sorted({rule.command for _, rules in node_rules(prod_config) for rule in rules})
    check = "".join(f'ufw --dry-run {command} >/dev/null || echo "rejected: {command}"\n' for command in commands)
    with netns.running_lab(str(LAB_CIDR[1]), peers={}) as sandbox:
        result = netns.run_ufw(sandbox.node, netns.ufw_state_copy(tmp_path), check)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def lab_config(raw: dict, admin_cidrs: list[str]) -> config.ClusterConfig:
    """Prod moved onto the lab ranges: each node keeps its host number."""
    raw = copy.deepcopy(raw)
    prod_cidr = ipaddress.ip_network(raw["network"]["cidr"])
    raw["network"] = {
        "cidr": str(LAB_CIDR),
        "gateway": str(LAB_CIDR[1]),
        "dnsServers": [str(LAB_CIDR[2])],
        "adminCidrs": admin_cidrs,
    }
    for tier in raw["tiers"].values():
        for node in tier["nodes"]:
            node["ip"] = str(LAB_CIDR[int(ipaddress.ip_address(node["ip"])) - int(prod_cidr.network_address)])
    return with_monitoring_host(raw, LAB_MONITORING_HOST)


@pytest.fixture
def lab_cfg(raw):
    return lab_config(raw, LAB_ADMIN_CIDRS)


@pytest.fixture
def lab(namespaces, lab_cfg):
    """The head's namespace listening on every probed port; peers wired, nothing filtered yet."""
    peers = {
        "heavy": str(lab_cfg.placed("ray-hc-1").node.ip),
        "monitor": str(lab_cfg.monitoring_host.node.ip),
        "cluster": str(LAB_CIDR[50]),
        "dns": str(lab_cfg.network.dns_servers[0]),
        "admin": str(ipaddress.ip_network(LAB_ADMIN_CIDRS[0])[5]),
        "admin2": str(ipaddress.ip_network(LAB_ADMIN_CIDRS[1])[5]),
        "outsider": "10.99.0.5",
    }
    with netns.running_lab(str(lab_cfg.head.node.ip), peers) as running:
        running.listen(list(PROBED.values()))
        everything = set(PROBED.values())
        assert running.reachable(list(PROBED.values())) == {peer: everything for peer in peers}, "lab wiring"
        yield running


@pytest.fixture
def ufw_state(tmp_path):
    return netns.ufw_state_copy(tmp_path)


def converge(lab, ufw_state, cfg) -> str:
    """Runs the head's rendered script in the lab, as the Firewall component does on the VM."""
    result = netns.run_ufw(lab.node, ufw_state, fw.ufw_script(fw.firewall_rules(cfg, cfg.head)))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def ufw_query(lab, ufw_state, commands: str) -> str:
    result = netns.run_ufw(lab.node, ufw_state, commands)
    assert result.returncode == 0, result.stderr
    return result.stdout


def added_rules(lab, ufw_state) -> list[str]:
    return ufw_query(lab, ufw_state, "ufw show added").splitlines()[1:]


def reaches(lab) -> dict[str, set[str]]:
    by_port = {port: name for name, port in PROBED.items()}
    return {peer: {by_port[p] for p in ports} for peer, ports in lab.reachable(list(PROBED.values())).items()}


@pytest.mark.netns
def test_each_peer_reaches_exactly_its_ports(lab, ufw_state, lab_cfg):
    converge(lab, ufw_state, lab_cfg)
    assert reaches(lab) == REACHES
    # ufw echoes the rules exactly as rendered: the script's stale-rule check relies on it.
    assert added_rules(lab, ufw_state) == [f"ufw {rule.command}" for rule in fw.firewall_rules(lab_cfg, lab_cfg.head)]


@pytest.mark.netns
def test_rerun_changes_nothing_and_never_opens_the_host(lab, ufw_state, lab_cfg):
    converge(lab, ufw_state, lab_cfg)
    state = "ufw status verbose; iptables -S ufw-user-input; ip6tables -S ufw6-user-input"
    before = ufw_query(lab, ufw_state, state)
    with lab.watching("outsider", RAY.gcs) as connected:
        output = converge(lab, ufw_state, lab_cfg)
    assert ufw_query(lab, ufw_state, state) == before
    assert "Status: active" in before and "deleted" not in output
    assert connected == [0]


@pytest.mark.netns
def test_rules_gone_from_config_are_gone_from_the_host(lab, ufw_state, lab_cfg, raw):
    converge(lab, ufw_state, lab_cfg)
    # A rule added by hand (open to the world) is drift the next run must remove too.
    ufw_query(lab, ufw_state, "ufw allow 22/tcp")
    assert "ufw allow 22/tcp" in added_rules(lab, ufw_state)

    shrunk = lab_config(raw, LAB_ADMIN_CIDRS[:1])
    with lab.watching("outsider", RAY.gcs) as connected:
        converge(lab, ufw_state, shrunk)
    assert reaches(lab) == {**REACHES, "admin2": set()}
    assert added_rules(lab, ufw_state) == [f"ufw {rule.command}" for rule in fw.firewall_rules(shrunk, shrunk.head)]
    assert connected == [0]


@pytest.mark.netns
def test_the_guard_undoes_a_rule_added_by_hand(lab, ufw_state, lab_cfg):
    """Seed 002's fix (`ufw allow 6379`, for everyone) lasts until the guard's timer runs its script."""
    converge(lab, ufw_state, lab_cfg)
    rendered = added_rules(lab, ufw_state)
    ufw_query(lab, ufw_state, f"ufw allow {RAY.gcs}/tcp")
    assert reaches(lab)["outsider"] == {"gcs"}
    guarded = fw.guard_files(fw.ufw_script(fw.firewall_rules(lab_cfg, lab_cfg.head)))[fw.GUARD_SCRIPT]
    result = netns.run_ufw(lab.node, ufw_state, guarded)
    assert result.returncode == 0, result.stdout + result.stderr
    assert added_rules(lab, ufw_state) == rendered
    assert reaches(lab) == REACHES
