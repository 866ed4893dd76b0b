"""The CrossGuard pack in policy/: each guardrail passes what the program registers
and catches its violation.

The checks are called directly with the inputs of a real mocks run of the program
(and mutated copies of them). The pack itself is started exactly as the Pulumi CLI
starts a Python policy pack (`python -m pulumi.policy <engine> policy`) and driven
over its gRPC Analyzer interface on 127.0.0.1, as the engine would.
"""
import copy

import pytest
import yaml
from google.protobuf import empty_pb2
from pulumi.runtime.proto import analyzer_pb2
from pulumi.runtime.rpc import UNKNOWN

from components.model.versions import pinned_ray_client
from components.model.ports import MONITORING, RAY
from conftest import ROOT, prod_raw
from policy import checks
from scripts.ops.policy_pack import analyze, analyze_stack, running_pack
from scripts.ops.program_mocks import run_program

NIGHT = "2026-11-22T22:00:00+01:00"  # every tier live
RAY_IMAGE = f"rayproject/ray:{pinned_ray_client()}-py311"
RESOURCE_POLICIES = {
    "pinned-images", "supervised-containers", "no-published-ports", "firewall-default-deny", "dashboards-admin-only",
    "sources-within-networks",
}
STACK_POLICIES = {"every-vm-firewalled"}


def night_run(tmp_path_factory, **changes):
    raw = prod_raw()
    raw["at"] = NIGHT
    raw.update(changes)
    return run_program(raw, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    return night_run(tmp_path_factory)


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """Monitoring away from the head, whose dashboard then reaches Grafana across hosts."""
    return night_run(tmp_path_factory, monitoring={"host": "ray-ao-2"})


@pytest.fixture(scope="module")
def sources(prod_config):
    return checks.dashboard_sources(prod_config)


def resources(run, type_token):
    found = run.of_type(type_token)
    assert found, f"the program registers no {type_token}"
    return found


def firewalls(run):
    return [r for r in resources(run, checks.REMOTE_COMMAND) if r.name.endswith("-ufw")]


def commands_by_name(run, without=()):
    """Every remote Command's inputs by name, as the stack policy sees them (less `without`)."""
    return {r.name: r.inputs for r in resources(run, checks.REMOTE_COMMAND) if r.name not in without}


def copies_by_path(run):
    """Every CopyToRemote's inputs by remotePath, as the stack policy sees them."""
    return {r.inputs["remotePath"]: r.inputs for r in resources(run, checks.COPY_TO_REMOTE)}


def with_rule(script: str, line: str) -> str:
    """The script with `line` added just before ufw is enabled."""
    assert "\nufw --force enable" in script
    return script.replace("\nufw --force enable", f"\n{line}\nufw --force enable")


# --- the compliant program ---------------------------------------------------


@pytest.mark.parametrize("placement", ["prod", "elsewhere"])
def test_program_passes_every_check(request, placement, sources):
    prod = request.getfixturevalue(placement)
    for image in resources(prod, checks.REMOTE_IMAGE):
        assert checks.remote_image_violations(image.inputs) == [], image.name
    for container in resources(prod, checks.CONTAINER):
        assert checks.container_image_violations(container.inputs) == [], container.name
        assert checks.container_supervision_violations(container.inputs) == [], container.name
        assert checks.container_publishing_violations(container.inputs) == [], container.name
    for command in resources(prod, checks.REMOTE_COMMAND):
        assert checks.firewall_violations(command.inputs) == [], command.name
        assert checks.dashboard_exposure_violations(command.inputs, sources) == [], command.name
        assert checks.source_violations(command.inputs, sources) == [], command.name
    commands, copies = commands_by_name(prod), copies_by_path(prod)
    for vm in resources(prod, checks.VIRTUAL_MACHINE):
        assert checks.vm_firewall_violations(vm.name, commands, copies) == [], vm.name


def test_every_node_firewall_is_recognised_and_default_deny(prod):
    """The shipped script is read as a firewall: deny by default, enabled, rules from named networks."""
    for command in firewalls(prod):
        intent = checks.ufw_intent(command.inputs["stdin"])
        assert intent is not None and intent.incoming_default == "deny" and intent.enabled
        assert intent.allows and not any(rule.from_anywhere for rule in intent.allows)
    drains = [r for r in resources(prod, "command:local:Command") if r.name.endswith("-drain-on-delete")]
    assert drains and all(checks.ufw_intent(checks.command_script(r.inputs)) is None for r in drains)


# --- (a) pinned images -------------------------------------------------------


@pytest.mark.parametrize(
    "ref,problem",
    [
        ("rayproject/ray:latest", "not pinned"),
        ("rayproject/ray", "not pinned"),
        ("registry.dc1.example.internal:5000/rayproject/ray", "not pinned"),
        ("rayproject/ray:2.60", "not pinned"),
        ("rayproject/ray:2.59.0-py311", f"pins the Ray client {pinned_ray_client()}"),
        ("registry.dc1.example.internal/mirror/ray:2.59.0", f"pins the Ray client {pinned_ray_client()}"),
        ("prom/prometheus:latest", "not pinned"),
    ],
)
def test_unpinned_or_mismatched_image_is_caught(prod, ref, problem):
    image = copy.deepcopy(resources(prod, checks.REMOTE_IMAGE)[0].inputs)
    image["name"] = ref
    (message,) = checks.remote_image_violations(image)
    assert problem in message


@pytest.mark.parametrize(
    "ref",
    [RAY_IMAGE, f"{RAY_IMAGE}@sha256:{'a' * 64}", "prom/prometheus:v2.53.4", "gcr.io/cadvisor/cadvisor:v0.52.1"],
)
def test_exact_tags_pass(ref):
    assert checks.image_violations(ref) == []


def test_container_by_unpinned_reference_is_caught(prod):
    container = copy.deepcopy(resources(prod, checks.CONTAINER)[0].inputs)
    assert container["image"].startswith("sha256:")  # the RemoteImage's ID: passes
    container["image"] = "grafana/grafana:latest"
    assert checks.container_image_violations(container)


# --- (b) supervised containers -------------------------------------------------


@pytest.mark.parametrize(
    "change,problem",
    [
        (lambda c: c.pop("healthcheck"), "no health check"),
        (lambda c: c["healthcheck"].update(tests=[]), "no health check"),
        (lambda c: c["healthcheck"].update(tests=["NONE"]), "no health check"),
        (lambda c: c.pop("restart"), "restart policy 'no'"),
        (lambda c: c.update(restart="no"), "restart policy 'no'"),
    ],
    ids=["no-healthcheck", "empty-tests", "healthcheck-NONE", "restart-unset", "restart-no"],
)
def test_unsupervised_container_is_caught(prod, change, problem):
    container = copy.deepcopy(resources(prod, checks.CONTAINER)[0].inputs)
    change(container)
    (message,) = checks.container_supervision_violations(container)
    assert problem in message


# --- (c) no published ports ----------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [{"ports": [{"internal": RAY.dashboard, "external": RAY.dashboard}]}, {"publishAllPorts": True}],
    ids=["ports", "publish-all"],
)
def test_published_ports_are_caught(prod, change):
    container = {**copy.deepcopy(resources(prod, checks.CONTAINER)[0].inputs), **change}
    (message,) = checks.container_publishing_violations(container)
    assert "bypass UFW" in message


# --- (d) the firewall ----------------------------------------------------------


def head_firewall(prod):
    return copy.deepcopy(prod.one(checks.REMOTE_COMMAND, "ray-ao-1-ufw").inputs)


@pytest.mark.parametrize(
    "mutate,problem",
    [
        (lambda s: s.replace("|| ufw default deny incoming", "|| true"), "must run `ufw default deny incoming`"),
        (lambda s: with_rule(s, "ufw default allow incoming"), "leaves incoming traffic at allow"),
        (lambda s: s.replace("ufw --force enable", "true"), "never ends with ufw enabled"),
        (lambda s: s + "ufw disable\n", "never ends with ufw enabled"),
        (lambda s: with_rule(s, f"ufw allow {RAY.gcs}/tcp"), "gcs"),
        (lambda s: with_rule(s, f"ufw allow from any to any port {RAY.client} proto tcp"), "client"),
        (lambda s: with_rule(s, "ufw allow from 0.0.0.0/0 to any port 12000:12010 proto tcp"), "workers"),
        (lambda s: with_rule(s, f"ufw insert 1 allow proto tcp to any port {RAY.dashboard_agent_http}"), "dashboard_agent_http"),
        (lambda s: with_rule(s, "ufw allow proto tcp from any"), "node_manager"),
    ],
    ids=["no-default-deny", "default-allow", "never-enabled", "disabled", "gcs-simple", "client-any",
         "workers-zero-net", "insert", "every-port"],
)
def test_firewall_violation_is_caught(prod, mutate, problem):
    command = head_firewall(prod)
    command["stdin"] = mutate(command["stdin"])
    assert any(problem in message for message in checks.firewall_violations(command))


def test_firewall_ignores_rules_that_open_nothing_to_everyone(prod):
    command = head_firewall(prod)
    for line in (
        f"ufw allow from 10.20.0.0/24 to any port {RAY.gcs} proto tcp",  # a named network
        f"ufw allow out {RAY.gcs}/tcp",  # outgoing
        f"ufw allow from 10.30.0.0/24 port {RAY.gcs} to any port 443 proto tcp",  # a source port, to a non-Ray port
        f"ufw deny {RAY.gcs}/tcp",
    ):
        assert checks.firewall_violations({**command, "stdin": with_rule(command["stdin"], line)}) == [], line


# --- (e) dashboards --------------------------------------------------------------


@pytest.mark.parametrize(
    "line,opened",
    [
        (f"ufw allow {MONITORING.grafana}/tcp", "Grafana"),
        (f"ufw allow from 192.168.0.0/16 to any port {MONITORING.prometheus} proto tcp", "Prometheus"),
        (f"ufw allow from 10.0.0.0/8 to any port {RAY.dashboard_https} proto tcp", "Ray dashboard"),
        ("ufw allow from 172.16.5.5", "Ray dashboard, Grafana, Prometheus"),
        # The UIs are for people: the cluster network as a whole, or part of it, may not reach them.
        (f"ufw allow from 10.20.0.0/24 to any port {MONITORING.grafana}", "Grafana"),
        (f"ufw allow from 10.20.0.0/24 to any port {MONITORING.prometheus} proto tcp", "Prometheus"),
        (f"ufw allow from 10.20.0.8/29 to any port {MONITORING.grafana} proto tcp", "Grafana"),
        ("ufw allow from 10.20.0.0/24", "Grafana, Prometheus"),
        (f"ufw allow from 192.168.1.7 to any port {MONITORING.grafana} proto tcp", "Grafana"),  # a host elsewhere
    ],
    ids=["grafana-any", "prometheus-other-net", "ray-dashboard-other-net", "every-port-other-host",
         "grafana-cluster", "prometheus-cluster", "grafana-cluster-part", "every-port-cluster", "grafana-other-host"],
)
def test_dashboard_beyond_its_sources_is_caught(prod, sources, line, opened):
    command = head_firewall(prod)
    command["stdin"] = with_rule(command["stdin"], line)
    (message,) = checks.dashboard_exposure_violations(command, sources)
    assert f"opens {opened} to" in message


def test_dashboards_from_their_sources_pass(prod, sources):
    command = head_firewall(prod)
    for line in (
        f"ufw allow from 10.30.0.128/25 to any port {MONITORING.grafana} proto tcp",  # part of an admin network
        f"ufw allow from 10.20.0.12 to any port {MONITORING.prometheus} proto tcp",  # a cluster host
        f"ufw allow from 10.20.0.11/32 to any port {MONITORING.grafana} proto tcp",  # the same, as a /32
        f"ufw allow from 10.20.0.0/24 to any port {RAY.dashboard_https} proto tcp",  # Ray's workers and jobs, through the TLS proxy
    ):
        assert checks.dashboard_exposure_violations({**command, "stdin": with_rule(command["stdin"], line)}, sources) == [], line


def test_program_opens_the_uis_to_exactly_the_admins_and_the_head(elsewhere, prod_config):
    """The shape the policy accepts is the one the program renders: no more, no less."""
    monitor = checks.ufw_intent(elsewhere.one(checks.REMOTE_COMMAND, "ray-ao-2-ufw").inputs["stdin"])
    for port in (MONITORING.grafana, MONITORING.prometheus):
        opened_to = {rule.source for rule in monitor.allows if rule.opens(port, port)}
        assert opened_to == {*map(str, prod_config.network.admin_cidrs), str(prod_config.head.node.ip)}


# --- (f) every VM firewalled --------------------------------------------------------


def test_every_vm_has_its_firewall(prod):
    vms = resources(prod, checks.VIRTUAL_MACHINE)
    assert {checks.firewall_name(vm.name) for vm in vms} == {r.name for r in firewalls(prod)}


GUARD = ".ray-cluster/staged/ray-hc-2-ufw-guard/etc/ray-cluster/ufw.sh"  # where ray-hc-2's guard is staged


@pytest.mark.parametrize(
    "change,problem",
    [
        (lambda commands, copies: commands.pop("ray-hc-2-ufw"), "no `ray-hc-2-ufw` command converges its ufw"),
        (lambda commands, copies: commands["ray-hc-2-ufw"].update(stdin="echo no firewall\n"), "never changes ufw"),
        (
            lambda commands, copies: commands["ray-hc-2-ufw"].update(stdin=commands["ray-hc-2-ufw"]["stdin"] + "ufw disable\n"),
            "is not default-deny: the ufw script never ends with ufw enabled",
        ),
        (lambda commands, copies: copies.pop(GUARD), f"has no firewall guard: nothing stages {GUARD}"),
    ],
    ids=["missing", "not-ufw", "disabled", "no-guard"],
)
def test_vm_without_a_working_firewall_is_caught(prod, change, problem):
    commands, copies = copy.deepcopy(commands_by_name(prod)), copy.deepcopy(copies_by_path(prod))
    change(commands, copies)
    for vm in resources(prod, checks.VIRTUAL_MACHINE):
        violations = checks.vm_firewall_violations(vm.name, commands, copies)
        if vm.name == "ray-hc-2":
            assert violations and all(m.startswith("VM ray-hc-2") for m in violations)
            assert any(problem in m for m in violations), violations
        else:
            assert violations == [], vm.name


# --- the pack, as the engine runs it ---------------------------------------------


def test_pack_runs_in_the_programs_virtualenv():
    """The pack imports the program's modules: it must use the venv scripts/install.sh fills."""
    pack = yaml.safe_load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())["runtime"]
    program = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]
    assert pack["name"] == program["name"] == "python"
    assert (ROOT / "policy" / pack["options"]["virtualenv"]).resolve() == (ROOT / program["options"]["virtualenv"]).resolve()


@pytest.fixture(scope="module")
def analyzer():
    with running_pack() as pack:
        yield pack


def test_pack_registers_every_policy_as_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "ray-cluster-guardrails"
    assert {p.name: analyzer_pb2.EnforcementLevel.Name(p.enforcementLevel) for p in info.policies} == {
        name: "MANDATORY" for name in RESOURCE_POLICIES | STACK_POLICIES
    }


def test_pack_passes_the_whole_program(analyzer, prod, elsewhere):
    for run in (prod, elsewhere):
        for registration in run.registrations:
            assert analyze(analyzer, registration) == [], f"{registration.type} {registration.name}"
        assert analyze_stack(analyzer, run.registrations) == []


def test_pack_blocks_each_violation(analyzer, prod):
    container = resources(prod, checks.CONTAINER)[0]
    firewall = prod.one(checks.REMOTE_COMMAND, "ray-ao-1-ufw")
    cases = {
        "pinned-images": (resources(prod, checks.REMOTE_IMAGE)[0], {"name": "rayproject/ray:latest"}),
        "supervised-containers": (container, {"restart": "no"}),
        "no-published-ports": (container, {"publishAllPorts": True}),
        "firewall-default-deny": (firewall, {"stdin": firewall.inputs["stdin"] + "ufw disable\n"}),
        "dashboards-admin-only": (
            firewall,
            {"stdin": with_rule(firewall.inputs["stdin"], f"ufw allow from 10.20.0.0/24 to any port {MONITORING.grafana}")},
        ),
        "sources-within-networks": (
            firewall,
            {"stdin": with_rule(firewall.inputs["stdin"], "ufw allow from 192.168.0.0/16 to any port 22 proto tcp")},
        ),
    }
    assert set(cases) == RESOURCE_POLICIES
    for policy, (registration, changes) in cases.items():
        assert {(name, level) for name, level, _ in analyze(analyzer, registration, **changes)} == {(policy, "MANDATORY")}, policy


def test_pack_blocks_a_vm_without_its_firewall(analyzer, prod):
    vm = prod.one(checks.VIRTUAL_MACHINE, "ray-hc-2")
    stack = [r for r in prod.registrations if r.name != "ray-hc-2-ufw"]
    ((policy, level, urn, message),) = analyze_stack(analyzer, stack)
    assert (policy, level, urn) == ("every-vm-firewalled", "MANDATORY", vm.urn)
    assert "VM ray-hc-2 has no firewall" in message


def test_unknown_image_during_preview_does_not_block(analyzer, prod):
    """A new container's image ID is unknown at preview: the image check waits, the others still run."""
    container = resources(prod, checks.CONTAINER)[0]
    (diagnostic,) = analyze(analyzer, container, image=UNKNOWN)
    assert diagnostic[:2] == ("pinned-images", "ADVISORY") and "can't be known during preview" in diagnostic[2]
    assert [d[0] for d in analyze(analyzer, container, image=UNKNOWN, restart="no")] == ["pinned-images", "supervised-containers"]
