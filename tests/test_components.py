"""Each component on its own under Pulumi's mocks, from a small args object of its own:
no stack config, no cluster around it."""
from __future__ import annotations

import dataclasses

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from components.render import firewall_rules
from components.render.containers import Bind, ContainerSpec, HealthCheck
from components.render.remote_files import StagedFiles
from components.resources.firewall import Firewall, FirewallArgs
from components.resources.monitoring import NodeExporters, NodeExportersArgs
from components.resources.node import OnNode
from components.resources.ray_node import HEAD_CONTAINER_LABEL, DrainArgs, RayNode, RayNodeArgs
from scripts.ops.program_mocks import image_id, run_component

CONTAINER = "docker:index/container:Container"
COMMAND = "command:remote:Command"
LOCAL_COMMAND = "command:local:Command"
SPEC = ContainerSpec(
    name="ray-node",
    image="example.invalid/ray:1.2.3",
    command=("sh", "-c", "ray start --block"),
    health=HealthCheck(("CMD", "true"), "15s", "5s", 4, "60s"),
    secret_env=("RAY_AUTH_TOKEN",),
    binds=(Bind("/var/lib/x", "/x", read_only=False),),
)
CONNECTION = remote.ConnectionArgs(host="192.0.2.10", user="ops", private_key="key", host_key="ssh-ed25519 AAAAtest")


def on_node(name: str) -> OnNode:
    vm = pulumi.CustomResource("test:index:Vm", f"{name}-vm", {})
    provider = docker.Provider(f"{name}-docker", host=f"ssh://ops@{name}")
    return OnNode(name, vm, CONNECTION, provider, pulumi.CustomResource("test:index:Ready", f"{name}-ready", {}))


def tls_files(name: str) -> pulumi.CustomResource:
    return pulumi.CustomResource("test:index:Files", f"{name}-tls-files", {})


def test_a_worker_ray_node_from_its_args_alone():
    def build():
        head = docker.Container("head-ray", image="x", name="ray-node")
        files = StagedFiles("w1-drain-program", {"/opt/drain/settings.json": "{}"})
        drain = DrainArgs(files, "drain-it", "ops", "192.0.2.10", pulumi.Output.from_input("ssh-ed25519 AAAAtest"))
        RayNode(RayNodeArgs(on_node("w1"), SPEC, pulumi.Output.secret("token"), tls_files("w1"), head_container=head, drain=drain))

    run = run_component(build)
    container = run.one(CONTAINER, "w1-ray")
    assert container.inputs["name"] == "ray-node" and container.deleted_with == run.one("test:index:Vm", "w1-vm").urn
    assert {label["label"]: label["value"] for label in container.inputs["labels"]} == {HEAD_CONTAINER_LABEL: "head-ray-id"}
    assert "envs" in container.secret_inputs
    # Ray reads its certificates at start: it waits for them, and new ones replace the container.
    files = run.one("test:index:Files", "w1-tls-files").urn
    assert files in container.dependencies and container.replace_with == [files]
    delivered = run.one(COMMAND, "w1-drain-program")
    (staged,) = run.staged_copies("w1-drain-program")
    assert staged.inputs["source"]["text"] == "{}" and staged.inputs["remotePath"] in delivered.inputs["create"]
    assert delivered.deleted_with == staged.deleted_with == run.one("test:index:Vm", "w1-vm").urn
    drain_on_delete = run.one(LOCAL_COMMAND, "w1-drain-on-delete")
    assert "ops@192.0.2.10 sh -s" in drain_on_delete.inputs["delete"] and "drain-it" in drain_on_delete.inputs["delete"]


def test_the_head_has_no_drain_and_no_head_label():
    run = run_component(lambda: RayNode(RayNodeArgs(on_node("h"), SPEC, pulumi.Output.secret("token"), tls_files("h"))))
    assert not run.of_type(LOCAL_COMMAND) and not run.of_type(COMMAND)
    assert not run.one(CONTAINER, "h-ray").inputs.get("labels")


def test_a_firewall_and_exporters_from_their_args_alone():
    def build():
        on = on_node("n")
        Firewall(FirewallArgs("n", "ufw --force enable\n", CONNECTION, on.vm))
        NodeExporters(NodeExportersArgs(on, (dataclasses.replace(SPEC, name="node-exporter", secret_env=()),)))

    run = run_component(build)
    assert run.one(COMMAND, "n-ufw").inputs["stdin"] == "ufw --force enable\n"
    assert run.one(COMMAND, "n-ufw-guard").deleted_with == run.one("test:index:Vm", "n-vm").urn
    staged = {c.inputs["source"]["text"] for c in run.staged_copies("n-ufw-guard")}
    assert "ufw --force enable\n" in staged and len(staged) == len(firewall_rules.guard_files(""))
    exporter = run.one(CONTAINER, "n-node-exporter")  # one container per spec, named after the node
    assert exporter.inputs["image"] == image_id("example.invalid/ray:1.2.3") and exporter.deleted_with


def test_two_clusters_in_one_stack_register_no_name_twice(prod_config):
    """Every child's name starts with its component's: cluster-level children with the cluster's."""
    import datetime as dt

    from components.model import config
    from components.resources.cluster import RayCluster
    from components.resources.stack_config import ClusterSecrets
    from conftest import prod_raw

    raw = prod_raw()
    for tier in raw["tiers"].values():
        for node in tier["nodes"]:
            node["name"], node["ip"] = node["name"].replace("ray-", "lab-"), node["ip"].replace(".20.0.", ".20.0.1")
    other = config.load(raw)
    secrets = ClusterSecrets(
        ssh_private_key=pulumi.Output.secret("key"), ray_token=None, grafana_admin_password=None, registry_password=None
    )
    at = dt.datetime.fromisoformat("2026-11-22T22:00:00+01:00")

    def build():
        RayCluster("prod", prod_config, secrets, at)
        RayCluster("lab", other, secrets, at)

    urns = [r.urn for r in run_component(build).registrations]
    assert len(urns) == len(set(urns)) > 200
