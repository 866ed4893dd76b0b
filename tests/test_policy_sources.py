"""The policy pack against source sets: networks that together are the world, and any port
opened beyond the stack's cluster and admin networks (or an extra port's own `from`).

Same harness as tests/test_policy.py: the checks with the inputs of a mocks run of the
program, the pack over its gRPC Analyzer interface.
"""
import pytest

from components.model import config
from components.model.ports import RAY
from conftest import prod_raw
from policy import checks
from scripts.ops.policy_pack import analyze
from test_policy import analyzer, head_firewall, prod, sources, with_rule  # noqa: F401  (fixtures: analyzer, prod, sources)


WORLD_IN_HALVES = ("0.0.0.0/1", "128.0.0.0/1")


@pytest.mark.parametrize(
    "networks,covered",
    [
        (WORLD_IN_HALVES, "4294967296 addresses (0.0.0.0/0)"),
        (("0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/2"), "3221225472 addresses (0.0.0.0/1, 128.0.0.0/2)"),
        (("10.0.0.0/8", "11.0.0.0/8"), "33554432 addresses (10.0.0.0/7)"),
    ],
    ids=["two-halves", "three-quarters", "two-slash-8s"],
)
def test_rules_that_together_open_ray_to_the_world_are_caught(prod, networks, covered):
    command = head_firewall(prod)
    for network in networks:
        command["stdin"] = with_rule(command["stdin"], f"ufw allow from {network} to any port {RAY.gcs} proto tcp")
    (message,) = [m for m in checks.firewall_violations(command) if "together" in m]
    assert f"open Ray's gcs port to networks that together cover {covered}, more than a /8" in message


def test_rules_together_no_wider_than_a_slash_8_pass_the_world_check(prod):
    command = head_firewall(prod)
    for network in ("10.0.0.0/9", "10.128.0.0/9", "10.20.0.0/24"):
        command["stdin"] = with_rule(command["stdin"], f"ufw allow from {network} to any port {RAY.gcs} proto tcp")
    assert checks.firewall_violations(command) == []


@pytest.mark.parametrize(
    "line",
    [
        *(f"ufw allow from {network} to any port {RAY.gcs} proto tcp" for network in WORLD_IN_HALVES),
        "ufw allow from 192.168.0.0/16 to any port 22 proto tcp",
        "ufw allow from 10.20.0.0/23 to any port 22 proto tcp",  # the cluster network and its neighbour
    ],
    ids=["lower-half", "upper-half", "elsewhere", "wider-than-the-cluster"],
)
def test_a_source_outside_the_stacks_networks_is_caught(prod, sources, line):
    command = head_firewall(prod)
    command["stdin"] = with_rule(command["stdin"], line)
    (message,) = checks.source_violations(command, sources)
    assert "outside the networks the cluster needs: ray-cluster:network.cidr (10.20.0.0/24) and ray-cluster:network.adminCidrs (10.30.0.0/24)" in message


def test_a_network_an_extra_port_names_may_reach_that_port_only(prod):
    raw = prod_raw()
    raw["tiers"]["always-on"]["extraPorts"] = [{"port": 8453, "toPort": 8454, "from": ["10.99.0.0/24"]}]
    sources = checks.dashboard_sources(config.load(raw))
    command = head_firewall(prod)
    allowed = with_rule(command["stdin"], "ufw allow from 10.99.0.0/24 to any port 8453:8454 proto tcp")
    assert checks.source_violations({**command, "stdin": allowed}, sources) == []
    for line in ("ufw allow from 10.99.0.0/24 to any port 22 proto tcp", "ufw allow from 10.99.0.0/16 to any port 8453 proto tcp"):
        (message,) = checks.source_violations({**command, "stdin": with_rule(command["stdin"], line)}, sources)
        assert "or for an extra port the networks in its tier's extraPorts `from`" in message, line


def test_pack_blocks_the_world_in_two_halves(analyzer, prod):
    firewall = prod.one(checks.REMOTE_COMMAND, "ray-ao-1-ufw")
    stdin = firewall.inputs["stdin"]
    for network in WORLD_IN_HALVES:
        stdin = with_rule(stdin, f"ufw allow from {network} to any port {RAY.gcs} proto tcp")
    found = analyze(analyzer, firewall, stdin=stdin)
    assert {(name, level) for name, level, _ in found} == {("firewall-default-deny", "MANDATORY"), ("sources-within-networks", "MANDATORY")}
    assert any("together cover 4294967296 addresses (0.0.0.0/0)" in message for _, _, message in found)
    assert sum("ray-cluster:network.adminCidrs" in message for _, _, message in found) == 2  # one per half
