"""Every validation rule: a bad stack gets an error naming the key and the rule."""
import re
from pathlib import Path

import pytest
import yaml

from components.model import config, fields, stack

ROOT = Path(__file__).resolve().parent.parent


def problems(raw) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        config.load(raw)
    return [f"{p.key}: {p.rule}" for p in caught.value.problems]


def test_prod_stack_is_valid(prod_config):
    assert [p.node.name for p in prod_config.placed_nodes] == [
        "ray-ao-1", "ray-ao-2", "ray-ao-3", "ray-hc-1", "ray-hc-2", "ray-hc-3"
    ]
    assert prod_config.head.node.name == "ray-ao-1"
    assert prod_config.redis_host.node.name == "ray-ao-1"


@pytest.mark.parametrize("mutate,expected", [
    (lambda r: None, "ray-ao-2"),  # the first always-on node that is not the head
    (lambda r: r["monitoring"].update(host="ray-ao-1"), "ray-ao-1"),  # configured: as configured
    (lambda r: r["tiers"]["always-on"].update(nodes=r["tiers"]["always-on"]["nodes"][:1]), "ray-ao-1"),  # the head alone
    (lambda r: r["tiers"]["always-on"]["nodes"].reverse(), "ray-ao-3"),
], ids=["default", "configured", "head-alone", "order"])
def test_monitoring_runs_off_the_head_unless_told_or_alone(raw, mutate, expected):
    mutate(raw)
    assert config.load(raw).monitoring_host.node.name == expected


def test_the_committed_stack_pins_no_instant():
    # `ray-cluster:at` belongs to the scheduler's runs and to tests: committed, it would freeze the schedule.
    document = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    assert f"{config.NAMESPACE}:at" not in document["config"]


def _heavy_nodes(raw):
    return raw["tiers"]["heavy-compute"]["nodes"]


# Each rule once: a rule whose exact message tests/test_config_corpus.py checks for the same
# one-line change (a root ssh user, an unpinned image, ...) is not repeated here.
BAD_STACKS = [
    ("duplicate node name", lambda r: _heavy_nodes(r)[0].update(name="ray-ao-2"),
     "tiers.heavy-compute.nodes[ray-ao-2].name", "duplicate node name 'ray-ao-2' (also in tiers.always-on)"),
    ("duplicate ip", lambda r: _heavy_nodes(r)[1].update(ip="10.20.0.12"),
     "tiers.heavy-compute.nodes[ray-hc-2].ip", "duplicate IP 10.20.0.12"),
    ("ip outside cidr", lambda r: _heavy_nodes(r)[2].update(ip="10.99.0.5"),
     "tiers.heavy-compute.nodes[ray-hc-3].ip", "outside network.cidr 10.20.0.0/24"),
    ("ip is gateway", lambda r: _heavy_nodes(r)[2].update(ip="10.20.0.1"),
     "tiers.heavy-compute.nodes[ray-hc-3].ip", "is the gateway"),
    ("ip is broadcast", lambda r: _heavy_nodes(r)[2].update(ip="10.20.0.255"),
     "tiers.heavy-compute.nodes[ray-hc-3].ip", "network or broadcast address"),
    ("malformed ip", lambda r: _heavy_nodes(r)[2].update(ip="10.20.0.300"),
     "tiers.heavy-compute.nodes[ray-hc-3].ip", "IPv4"),
    ("no head", lambda r: r["tiers"]["always-on"]["nodes"][0].pop("head"),
     "tiers", "exactly one node must have head: true, found 0"),
    ("two heads", lambda r: r["tiers"]["always-on"]["nodes"][1].update(head=True),
     "tiers", "found 2"),
    ("head outside always-on", lambda r: (r["tiers"]["always-on"]["nodes"][0].pop("head"), _heavy_nodes(r)[0].update(head=True)),
     "tiers.heavy-compute.nodes[ray-hc-1].head", "the head must be in an always-on tier"),
    ("head tier overridden off", lambda r: r["tiers"]["always-on"].update(override="off"),
     "tiers.always-on.nodes[ray-ao-1].head", "the head must be in an always-on tier"),
    ("zero vcpu", lambda r: r["tiers"]["heavy-compute"].update(vcpu=0),
     "tiers.heavy-compute.vcpu", "greater than 0"),
    ("negative memory", lambda r: r["tiers"]["heavy-compute"].update(memoryGb=-1),
     "tiers.heavy-compute.memoryGb", "greater than 0"),
    ("no nodes", lambda r: r["tiers"]["heavy-compute"].update(nodes=[]),
     "tiers.heavy-compute.nodes", "at least 1"),
    ("unknown timezone", lambda r: r["tiers"]["heavy-compute"]["schedule"].update(timezone="Mars/Olympus"),
     "tiers.heavy-compute.schedule.timezone", "unknown timezone 'Mars/Olympus'"),
    ("bring-up before the last night ends", lambda r: r["tiers"]["heavy-compute"]["schedule"].update(bringUpLeadMinutes=12 * 60 + 1),
     "tiers.heavy-compute.schedule.bringUpLeadMinutes", "must not reach back past the previous window's end 06:00"),
    ("negative bring-up lead", lambda r: r["tiers"]["heavy-compute"]["schedule"].update(bringUpLeadMinutes=-5),
     "tiers.heavy-compute.schedule.bringUpLeadMinutes", "greater than or equal to 0"),
    ("unknown schedule word", lambda r: r["tiers"]["heavy-compute"].update(schedule="nightly"),
     "tiers.heavy-compute.schedule", "'nightly' is not a schedule: write always"),
    ("bad override", lambda r: r["tiers"]["heavy-compute"].update(override="maybe"),
     "tiers.heavy-compute.override", "'maybe' is not an override: write \"on\" or \"off\" (quoted)"),
    ("untagged image", lambda r: r["ray"].update(image="rayproject/ray"),
     "ray.image", "pinned to an exact version"),
    ("image not matching client", lambda r: r["ray"].update(image="rayproject/ray:2.9.3-py310"),
     "ray.image", "must equal the pinned Ray client"),
    ("unpinned monitoring image", lambda r: r["monitoring"].update(images={"grafana": "grafana/grafana:latest"}),
     "monitoring.images.grafana", "pinned to an exact version"),
    ("monitoring image by digest only", lambda r: r["monitoring"].update(images={"grafana": f"grafana/grafana@sha256:{'a' * 64}"}),
     "monitoring.images.grafana", "pinned to an exact version"),
    ("monitoring image with a malformed digest", lambda r: r["monitoring"].update(images={"cadvisor": "gcr.io/cadvisor/cadvisor:v0.52.1@sha256:abc"}),
     "monitoring.images.cadvisor", "'sha256:abc' is not an image digest"),
    ("world-wide cluster network", lambda r: r["network"].update(cidr="0.0.0.0/0"),
     "network.cidr", "wider than /8: the Ray dashboard may be opened to all of network.cidr"),
    ("admin networks that together are the world", lambda r: r["network"].update(adminCidrs=["0.0.0.0/1", "128.0.0.0/1"]),
     "network.adminCidrs", "together cover 4294967296 addresses (0.0.0.0/0), more than a /8"),
    ("admin networks that together are most of the world", lambda r: r["network"].update(adminCidrs=["10.30.0.0/24", "64.0.0.0/2", "128.0.0.0/2"]),
     "network.adminCidrs", "together cover 2147483904 addresses (10.30.0.0/24, 64.0.0.0/2, 128.0.0.0/2)"),
    ("gateway is the network address", lambda r: r["network"].update(gateway="10.20.0.0"),
     "network.gateway", "network or broadcast address"),
    ("ip is a dns server", lambda r: _heavy_nodes(r)[2].update(ip="10.20.0.2"),
     "tiers.heavy-compute.nodes[ray-hc-3].ip", "is a DNS server"),
    ("unquoted window time", lambda r: r["tiers"]["heavy-compute"]["schedule"].update(start=1080),
     "tiers.heavy-compute.schedule.start", 'quote it in the stack file, like "18:00"'),
    ("gateway outside cidr", lambda r: r["network"].update(gateway="192.168.1.1"),
     "network.gateway", "outside network.cidr"),
    ("no dns", lambda r: r["network"].update(dnsServers=[]),
     "network.dnsServers", "at least 1"),
    ("bad public key", lambda r: r["ssh"].update(publicKey="not a key"),
     "ssh.publicKey", "is not an OpenSSH public key"),
    ("bad node name", lambda r: _heavy_nodes(r)[0].update(name="Heavy_1"),
     "tiers.heavy-compute.nodes[Heavy_1].name", "is not a host name"),
    ("bad tier name", lambda r: r["tiers"].update({"Heavy": r["tiers"].pop("heavy-compute")}),
     "tiers.Heavy", "lowercase letters"),
    ("monitoring host unknown", lambda r: r["monitoring"].update(host="nope"),
     "monitoring.host", "not a node of any tier"),
    ("redis host on heavy tier", lambda r: r.update(redis={"host": "ray-hc-1"}),
     "redis.host", "must be in an always-on tier"),
    ("unpinned redis image", lambda r: r.update(redis={"image": "redis:latest"}),
     "redis.image", "pinned to an exact version"),
    ("head outage zero", lambda r: r.update(redis={"headOutageMinutes": 0}),
     "redis.headOutageMinutes", "greater than 0"),
    ("receiver without a kind", lambda r: r.update(alerting={"receivers": [{"name": "team"}]}),
     "alerting.receivers[team]", "needs one of email, webhook, slack"),
    ("duplicate receiver", lambda r: r.update(alerting={"receivers": [{"name": "team", "webhook": {}}] * 2}),
     "alerting.receivers[team].name", "duplicate receiver name 'team'"),
    ("route to an unknown receiver", lambda r: r.update(alerting={"warning": "team"}),
     "alerting.warning", "'team' is not the name of one of alerting.receivers"),
    ("receiver named like the fallback", lambda r: r.update(alerting={"receivers": [{"name": "nobody", "webhook": {}}]}),
     "alerting.receivers[nobody].name", "reserved"),
    ("bad email", lambda r: r.update(alerting={"receivers": [{"name": "team", "email": {"to": "team", "from": "a@b", "smarthost": "smtp:25"}}]}),
     "alerting.receivers[team].email.to", "should match pattern"),
    ("remote write not a url", lambda r: r["monitoring"].update(remoteWrite={"url": "metrics.example"}),
     "monitoring.remoteWrite.url", "should match pattern"),
    ("at malformed", lambda r: r.update(at="tonight"),
     "at", "not an ISO 8601 instant"),
    ("no placement", lambda r: r["vsphere"].pop("computeCluster"),
     "vsphere", "set computeCluster or resourcePool"),
]


@pytest.mark.parametrize("mutate,key,rule", [case[1:] for case in BAD_STACKS], ids=[c[0] for c in BAD_STACKS])
def test_bad_stack_names_key_and_rule(raw, mutate, key, rule):
    mutate(raw)
    found = problems(raw)
    assert any(p.startswith(f"{key}: ") and rule in p for p in found), found


def test_error_message_is_prefixed_with_the_namespace(raw):
    raw["ssh"]["user"] = "root"
    with pytest.raises(config.ConfigError, match=r"ray-cluster:ssh\.user: must not be root"):
        config.load(raw)


def test_a_yaml_boolean_where_a_word_is_expected_is_refused_with_the_quoting_hint(raw):
    raw["tiers"]["heavy-compute"]["override"] = False  # what a YAML reader makes of an unquoted false
    assert problems(raw) == [f"tiers.heavy-compute.override: false is {fields.YAML_BOOLEAN_HINT}"]


def test_several_problems_are_reported_together(raw):
    _heavy_nodes(raw)[0]["ip"] = "10.99.0.5"
    raw["network"]["adminCidrs"] = ["0.0.0.0/0"]
    keys = [p.split(":")[0] for p in problems(raw)]
    assert "tiers.heavy-compute.nodes[ray-hc-1].ip" in keys and "network.adminCidrs[0]" in keys


def test_rules_across_keys_run_even_when_the_schema_failed(raw):
    _heavy_nodes(raw)[2]["ip"] = "10.20.0.22"  # a duplicate: a rule across nodes
    raw["tiers"]["heavy-compute"]["vcpu"] = 0  # a schema problem in the same tier
    raw["ray"]["drainGraceMinutes"] = "ten"  # and one in another section
    assert problems(raw) == [
        "ray.drainGraceMinutes: must be a whole number (got 'ten')",
        "tiers.heavy-compute.vcpu: must be greater than 0",
        "tiers.heavy-compute.nodes[ray-hc-3].ip: duplicate IP 10.20.0.22 (also tiers.heavy-compute.nodes[ray-hc-2])",
    ]


def test_a_node_that_failed_its_schema_does_not_fake_a_missing_head(raw):
    raw["tiers"]["always-on"]["nodes"][0]["ip"] = "10.20.0.300"  # the head's own entry is invalid
    assert problems(raw) == ["tiers.always-on.nodes[ray-ao-1].ip: '10.20.0.300' is not an IPv4 address like 10.20.0.11"]


def test_the_vsphere_provider_keys_are_the_providers():
    import pulumi_vsphere.config.vars as provider_vars

    settings = [name for name, value in vars(provider_vars._ExportableConfig).items() if isinstance(value, property)]
    camel = sorted(re.sub(r"_(\w)", lambda m: m.group(1).upper(), name) for name in settings)
    assert sorted(stack.VSPHERE_PROVIDER_KEYS) == camel


def test_a_copy_with_other_tiers_does_not_keep_the_cached_nodes(prod_config):
    assert prod_config.placed_nodes and prod_config.head  # cached on the original
    overridden = prod_config.model_copy(update={"tiers": {
        name: tier.model_copy(update={"override": "on"}) for name, tier in prod_config.tiers.items()
    }})
    assert {p.tier.override for p in overridden.placed_nodes} == {"on"}
    assert overridden.head.tier.override == overridden.monitoring_host.tier.override == "on"


def test_admin_networks_up_to_a_slash_8_together_pass(raw):
    # Overlaps count once: a /8 and networks inside it are still a /8.
    raw["network"]["adminCidrs"] = ["10.0.0.0/9", "10.128.0.0/9", "10.30.0.0/24"]
    assert config.load(raw).network.admin_cidrs[0].prefixlen == 9
    raw["network"]["adminCidrs"].append("11.0.0.0/32")
    assert any(p.startswith("network.adminCidrs: ") and "together cover 16777217 addresses" in p for p in problems(raw))


def test_a_monitoring_image_may_pin_its_digest_after_the_tag(raw):
    pinned = f"grafana/grafana:12.0.2@sha256:{'0123456789abcdef' * 4}"
    raw["monitoring"]["images"] = {"grafana": pinned}
    assert config.load(raw).monitoring.images.grafana == pinned


def test_an_extra_port_from_the_world_in_pieces_is_refused(raw):
    raw["tiers"]["always-on"]["extraPorts"] = [{"port": 8000, "from": ["admins", "0.0.0.0/1", "128.0.0.0/1"]}]
    assert any(
        p.startswith("tiers.always-on.extraPorts[0]: ") and "the networks in `from` together cover 4294967296 addresses (0.0.0.0/0)" in p
        for p in problems(raw)
    ), problems(raw)
