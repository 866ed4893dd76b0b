"""Under Pulumi's mocks: what keeps the cluster going, and telling, when the head fails.

Monitoring off the head, the always-on VMs kept apart by DRS, the head wired to
its Redis with a secret password, and Alertmanager's secret-bearing config. Where
their data lives (a disk that outlives the VM): tests/test_data_disk.py.
"""
import base64
import json
import re

import pytest

from scripts.ops.program_mocks import TEST_SECRETS, run_program

CONTAINER = "docker:index/container:Container"
COMMAND = "command:remote:Command"
VM = "vsphere:index/virtualMachine:VirtualMachine"
ANTI_AFFINITY = "vsphere:index/computeClusterVmAntiAffinityRule:ComputeClusterVmAntiAffinityRule"
NIGHT = "2026-11-22T22:00:00+01:00"
WEBHOOK = "https://hc-ping.example.internal/secret-uuid"


def envs(container) -> dict[str, str]:
    return dict(e.split("=", 1) for e in container.inputs["envs"])


def provider_node(registration) -> str:
    return registration.provider.rsplit("::", 1)[-1].removesuffix("-docker-id")


@pytest.fixture
def night(raw, tmp_path):
    raw["at"] = NIGHT
    return run_program(raw, tmp_path)


def test_the_monitoring_stack_is_not_on_the_head_by_default(night, prod_config):
    head = prod_config.head.node.name
    monitoring = [night.one(CONTAINER, f"ray-ao-2-{name}") for name in ("prometheus", "grafana", "alertmanager")]
    assert {provider_node(c) for c in monitoring} == {"ray-ao-2"} != {head}
    assert not [c for c in night.of_type(CONTAINER) if provider_node(c) == head and c.name.endswith(("prometheus", "grafana", "alertmanager"))]
    assert night.outputs["alertmanagerUrl"] == "http://10.20.0.12:9093"


def test_drs_keeps_the_always_on_vms_on_different_hosts(night, prod_config):
    (rule,) = night.of_type(ANTI_AFFINITY)
    always_on = sorted(p.node.name for p in prod_config.placed_nodes if p.tier.always_on)
    assert sorted(vm_id.removesuffix("-id") for vm_id in rule.inputs["virtualMachineIds"]) == always_on
    assert rule.inputs["computeClusterId"] == "domain-c1"
    assert {night.one(VM, name).urn for name in always_on} <= set(rule.dependencies)
    assert rule.inputs["name"] == "ray-prod-always-on-apart"


def test_no_drs_rule_without_a_compute_cluster(raw, tmp_path):
    raw["at"] = NIGHT
    raw["vsphere"] = {**raw["vsphere"], "resourcePool": "ray-pool"}
    raw["vsphere"].pop("computeCluster")
    assert run_program(raw, tmp_path).of_type(ANTI_AFFINITY) == []


def test_the_head_starts_against_its_redis_with_a_generated_secret_password(night, prod_config):
    redis = night.one(CONTAINER, "ray-ao-1-redis")
    head = night.one(CONTAINER, "ray-ao-1-ray")
    password = envs(redis)["REDISCLI_AUTH"]
    assert password.startswith("generated-") and envs(head)["RAY_REDIS_PASSWORD"] == password
    assert "envs" in redis.secret_inputs and "envs" in head.secret_inputs
    assert password not in json.dumps(head.inputs["command"]) and password not in json.dumps(redis.inputs["command"])
    assert redis.urn in head.dependencies, "the head starts once its Redis runs"
    assert redis.inputs["user"] == "999:999" and redis.inputs["restart"] == "unless-stopped"  # the redis image's user
    for placed in prod_config.placed_nodes:
        if not placed.node.head:
            assert "RAY_REDIS_PASSWORD" not in envs(night.one(CONTAINER, f"{placed.node.name}-ray"))
    assert night.outputs["redisPassword"] is not None


def with_alerting(raw):
    raw["at"] = NIGHT
    raw["alerting"] = {"receivers": [{"name": "deadman", "webhook": {}}], "watchdog": "deadman"}
    return raw


def test_alertmanager_gets_its_receivers_secrets_as_a_secret(raw, tmp_path):
    run = run_program(with_alerting(raw), tmp_path, secrets={**TEST_SECRETS, "alertingSecrets": json.dumps({"deadman": WEBHOOK})})
    config = run.one(COMMAND, "ray-ao-2-alertmanager-config")
    assert "stdin" in config.secret_inputs and "/var/lib/ray-cluster-monitoring/alertmanager/alertmanager.yml" in config.inputs["stdin"]
    written = [base64.b64decode(b).decode() for b in re.findall(r"echo (\S+) \| base64 -d", config.inputs["stdin"])]
    assert any(f"url: {WEBHOOK}" in text for text in written)
    assert config.urn in run.one(CONTAINER, "ray-ao-2-alertmanager").dependencies


def test_a_receiver_without_its_secret_registers_nothing(raw, tmp_path):
    with pytest.raises(Exception, match=r"ray-cluster:alertingSecrets: .*\['deadman'\]"):
        run_program(with_alerting(raw), tmp_path)
    from pulumi.runtime import settings

    assert settings.SETTINGS.monitor.registrations == []
