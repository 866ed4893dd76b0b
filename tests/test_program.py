"""The program's wiring under Pulumi's mocks: which resources, inputs, dependencies."""
import base64
import json

import pytest
import yaml

from components.model.ports import MONITORING
from components.model.versions import pinned_version
from scripts.ops.program_mocks import TEMPLATE, TEST_SECRETS, image_id, run_program

VM = "vsphere:index/virtualMachine:VirtualMachine"
CONTAINER = "docker:index/container:Container"
COMMAND = "command:remote:Command"
LOCAL_COMMAND = "command:local:Command"
COPY = "command:remote:CopyToRemote"
IMAGE = "docker:index/remoteImage:RemoteImage"
DOCKER_PROVIDER = "pulumi:providers:docker"
VOLUME = "docker:index/volume:Volume"

NIGHT = "2026-11-22T22:00:00+01:00"  # 22:00 in Europe/Berlin (CET)
NOON = "2026-11-22T12:00:00+01:00"
IN_DRAIN_LEAD = "2026-11-23T05:50:00+01:00"
AO = ["ray-ao-1", "ray-ao-2", "ray-ao-3"]
HC = ["ray-hc-1", "ray-hc-2", "ray-hc-3"]
MONITOR = "ray-ao-2"  # the prod stack's default monitoring host: not the head


def run_at(raw, tmp_path, at, override=None):
    raw["at"] = at
    if override is not None:
        raw["tiers"]["heavy-compute"]["override"] = override
    return run_program(raw, tmp_path)


def vm_shapes(run):
    return sorted(
        (r.name, r.inputs["numCpus"], r.inputs["memory"], r.inputs["disks"][0]["size"]) for r in run.of_type(VM)
    )


def test_night_has_six_vms_sized_by_tier(raw, tmp_path):
    run = run_at(raw, tmp_path, NIGHT)
    assert vm_shapes(run) == sorted(
        [(n, 32, 110 * 1024, 400) for n in AO] + [(n, 80, 350 * 1024, 1000) for n in HC]
    )


@pytest.mark.parametrize(
    "at,override",
    [(NOON, None), (IN_DRAIN_LEAD, None), (NIGHT, "off")],
    ids=["noon", "inside-drain-lead", "night-override-off"],
)
def test_heavy_tier_out_leaves_always_on_untouched(raw, tmp_path, at, override):
    night = run_at(prod_copy(raw), tmp_path, NIGHT)
    day = run_at(raw, tmp_path, at, override)
    assert sorted(r.name for r in day.of_type(VM)) == AO
    # Nothing about the always-on tier changes: same resources, same inputs, same edges,
    # except the monitoring host's files of scrape targets (which list the live nodes) and
    # the command that installs them.
    day_view, night_view = always_on_view(day), always_on_view(night)
    assert day_view.keys() == night_view.keys()
    changed = {key for key in day_view if day_view[key] != night_view[key]}
    targets = f"{MONITOR}-scrape-targets"
    changed_copies = changed - {(COMMAND, targets)}
    assert (COMMAND, targets) in changed and changed_copies
    assert changed_copies <= {(COPY, c.name) for c in day.staged_copies(targets)}


@pytest.mark.parametrize("at", [NOON, IN_DRAIN_LEAD, NIGHT])
def test_override_on_keeps_six_vms_at_any_instant(raw, tmp_path, at):
    assert len(run_at(raw, tmp_path, at, "on").of_type(VM)) == 6


def prod_copy(raw):
    return json.loads(json.dumps(raw))


def always_on_view(run):
    """The always-on nodes' resources, minus cluster-wide monitoring inventory."""
    return {
        (r.type, r.name): (r.inputs, sorted(r.dependencies), r.parent, r.provider)
        for r in run.registrations
        if any(r.name.startswith(node) for node in AO)
    }


def test_same_config_evaluates_to_identical_inputs(raw, tmp_path):
    """No perpetual diff: two evaluations register the same resources with the same inputs."""
    first = run_at(prod_copy(raw), tmp_path, NIGHT)
    second = run_at(raw, tmp_path, "2026-11-23T03:10:00+01:00")  # a later instant, same tiers
    def view(run):
        return {(r.type, r.name): (r.inputs, sorted(r.dependencies)) for r in run.registrations}

    assert view(first) == view(second)


@pytest.mark.parametrize("key,value,named", [
    ("adminCidrs", ["0.0.0.0/0"], "ray-cluster:network.adminCidrs[0]"),
    ("cidr", "0.0.0.0/0", "ray-cluster:network.cidr"),  # else the firewall fails only after the VMs
])
def test_bad_config_registers_nothing(raw, tmp_path, key, value, named):
    raw["network"][key] = value
    raw["at"] = NIGHT
    with pytest.raises(Exception) as caught:
        run_program(raw, tmp_path)
    assert named in str(caught.value)
    # The harness's monitor is fresh per run: nothing at all may have been registered.
    from pulumi.runtime import settings

    assert settings.SETTINGS.monitor.registrations == []


def test_plain_text_secret_is_refused(raw, tmp_path):
    raw["at"] = NIGHT
    raw["rayToken"] = "typed-without---secret"
    with pytest.raises(Exception, match=r"ray-cluster:rayToken: is a secret"):
        run_program(raw, tmp_path, secrets={"sshPrivateKey": TEST_SECRETS["sshPrivateKey"]})


@pytest.fixture
def night(raw, tmp_path):
    return run_at(raw, tmp_path, NIGHT)


def test_vms_cloned_from_template_with_its_hardware(night):
    for vm in night.of_type(VM):
        assert vm.inputs["clone"]["templateUuid"] == TEMPLATE["id"]
        assert (vm.inputs["guestId"], vm.inputs["scsiType"], vm.inputs["firmware"]) == ("ubuntu64Guest", "pvscsi", "efi")
        assert vm.inputs["networkInterfaces"][0]["adapterType"] == "vmxnet3"
        assert vm.inputs["resourcePoolId"] == "resgroup-1"
        assert vm.inputs["folder"] == "ray-cluster"


def test_disk_never_smaller_than_template(raw, tmp_path):
    raw["tiers"]["always-on"]["diskGb"] = 20  # template disk is 40 GB
    run = run_at(raw, tmp_path, NOON)
    assert {vm.inputs["disks"][0]["size"] for vm in run.of_type(VM)} == {TEMPLATE["disks"][0]["size"]}


def test_vm_guestinfo_carries_static_ip_and_pinned_host_key(night, prod_config):
    keys = {r.name.removesuffix("-host-key"): r for r in night.of_type("tls:index/privateKey:PrivateKey")}
    for vm in night.of_type(VM):
        extra = vm.inputs["extraConfig"]
        assert "extraConfig" in vm.secret_inputs
        assert extra["guestinfo.metadata.encoding"] == extra["guestinfo.userdata.encoding"] == "base64"
        metadata = yaml.safe_load(base64.b64decode(extra["guestinfo.metadata"]))
        node = prod_config.placed(vm.name).node
        assert metadata["local-hostname"] == vm.name
        assert metadata["network"]["ethernets"]["primary"]["addresses"] == [f"{node.ip}/24"]
        user_data = yaml.safe_load(base64.b64decode(extra["guestinfo.userdata"]))
        assert keys[vm.name].inputs["algorithm"] == "ED25519"
        assert user_data["ssh_keys"]["ed25519_public"].startswith("ssh-ed25519 ")
        assert any(d.endswith(f"::{vm.name}-host-key") for d in vm.dependencies)


def test_vm_tagged_with_its_tier(night):
    tags = {r.urn: r.inputs["name"] for r in night.of_type("vsphere:index/tag:Tag")}
    category = night.of_type("vsphere:index/tagCategory:TagCategory")[0]
    assert category.inputs["cardinality"] == "SINGLE"
    for vm in night.of_type(VM):
        (tag_urn,) = [d for d in vm.dependencies if d in tags]
        assert tags[tag_urn] == ("always-on" if vm.name in AO else "heavy-compute")


def test_components_parent_their_children(night):
    components = {r.urn: r for r in night.registrations if r.type.startswith("ray-cluster:index:")}
    assert {r.type for r in components.values()} >= {
        "ray-cluster:index:RayCluster", "ray-cluster:index:Vm", "ray-cluster:index:Firewall", "ray-cluster:index:RayNode"
    }
    for r in night.registrations:
        if r.type != "ray-cluster:index:RayCluster":
            assert r.parent in components, f"{r.type} {r.name} is not parented by a component"


def test_no_secret_in_plain_inputs(night):
    secret_values = list(TEST_SECRETS.values())
    for r in night.registrations:
        for key, value in r.inputs.items():
            if key not in r.secret_inputs:
                text = json.dumps(value, default=str)
                assert not any(s.strip() in text for s in secret_values), f"{r.type} {r.name}.{key} leaks a secret"


def test_outputs(night):
    assert night.outputs["headIp"] == "10.20.0.11"
    assert night.outputs["dashboardUrl"] == "https://10.20.0.11:8443"  # the TLS proxy
    assert night.outputs["rayAddress"] == "10.20.0.11:6379"
    assert [(n["name"], n["tier"]) for n in night.outputs["nodes"]] == [(n, "always-on") for n in AO] + [
        (n, "heavy-compute") for n in HC
    ]
    assert night.outputs["liveTiers"] == ["always-on", "heavy-compute"]


# ---- Ray on every VM (firewall, containers, token) ----


def closure(run, urn):
    """Everything `urn` waits for (dependencies, provider, parent), transitively."""
    seen, todo = set(), [urn]
    while todo:
        r = run.by_urn(todo.pop())
        for edge in r.dependencies + [provider_urn(r), r.parent]:
            if edge and edge not in seen and any(x.urn == edge for x in run.registrations):
                seen.add(edge)
                todo.append(edge)
    return seen


def provider_urn(r):
    return r.provider.rsplit("::", 1)[0]


def test_every_live_vm_has_firewall_then_ray(night, prod_config):
    from components.render import firewall_rules

    head_container = night.one(CONTAINER, "ray-ao-1-ray")
    for placed in prod_config.placed_nodes:
        name = placed.node.name
        vm = night.one(VM, name)
        ufw = night.one(COMMAND, f"{name}-ufw")
        assert ufw.inputs["stdin"] == firewall_rules.ufw_script(firewall_rules.firewall_rules(prod_config, placed))
        assert vm.urn in ufw.dependencies
        guard = night.one(COMMAND, f"{name}-ufw-guard")
        staged = {c.inputs["remotePath"]: c.inputs["source"]["text"] for c in night.staged_copies(guard.name)}
        assert ufw.inputs["stdin"] in staged.values(), "the timer re-applies what the firewall step applied"
        assert ufw.urn in guard.dependencies
        assert f"flock {firewall_rules.GUARD_LOCK} " in ufw.inputs["create"], "never at the same time as the timer"
        container = night.one(CONTAINER, f"{name}-ray")
        assert ufw.urn in container.dependencies, "Ray must start only after the firewall"
        assert (head_container.urn in container.dependencies) == (not placed.node.head), "workers wait for the head"
        provider = night.by_urn(provider_urn(container))
        assert provider.name == f"{name}-docker" and ufw.urn in provider.dependencies


def test_ray_containers_properties(night, prod_config):
    from components.render import ray_start

    tokens = set()
    for placed in prod_config.placed_nodes:
        c = night.one(CONTAINER, f"{placed.node.name}-ray")
        image = night.one(IMAGE, f"{placed.node.name}-ray-image")
        # From the LAN mirror on the monitoring host (tests/test_image_mirror.py).
        assert image.inputs["name"] == f"{prod_config.monitoring_host.node.ip}:{MONITORING.image_mirror}/rayproject/ray:2.60.0-py311"
        assert c.inputs["image"] == image_id(image.inputs["name"])
        assert c.inputs["networkMode"] == "host" and not c.inputs.get("ports")
        assert c.inputs["restart"] == "unless-stopped"
        settings = ray_start.node_settings(prod_config, placed)
        assert c.inputs["command"] == ["sh", "-c", ray_start.entrypoint_script(settings)]
        script = c.inputs["command"][2]
        assert f"--node-ip-address={placed.node.ip}" in script or f"--node-ip-address {placed.node.ip}" in script
        assert f"tier={placed.tier_name}" in script and f"tier:{placed.tier_name}" in script
        assert c.inputs["shmSize"] * 2**20 >= settings.object_store_bytes
        assert c.inputs["healthcheck"]["tests"] == ray_start.health_check_command(settings)
        assert c.inputs["stopTimeout"] > prod_config.ray.drain_grace_minutes * 60
        env = dict(e.split("=", 1) for e in c.inputs["envs"])
        assert env["RAY_AUTH_MODE"] == "token" and "envs" in c.secret_inputs
        tokens.add(env["RAY_AUTH_TOKEN"])
        assert ("RAY_GRAFANA_HOST" in env) == placed.node.head
        assert c.inputs["volumes"][0]["hostPath"] == ray_start.HOST_DATA_DIR
    assert tokens == {TEST_SECRETS["rayToken"]}, "one token, the secret, on every node"


def test_generated_token_when_none_configured(raw, tmp_path):
    raw["at"] = NIGHT
    secrets = {"sshPrivateKey": TEST_SECRETS["sshPrivateKey"]}
    run = run_program(raw, tmp_path, secrets=secrets)
    (password,) = [r for r in run.of_type("random:index/randomPassword:RandomPassword") if r.name == "ray-ray-token"]
    envs = {tuple(e for e in c.inputs["envs"] if e.startswith("RAY_AUTH_TOKEN=")) for c in run.of_type(CONTAINER) if c.name.endswith("-ray")}
    assert len(envs) == 1 and list(envs)[0][0].startswith("RAY_AUTH_TOKEN=generated-")
    assert password.inputs["length"] >= 32


def test_drain_on_delete_for_every_worker_before_container_and_vm(night, prod_config):
    from components.render import drain

    for placed in prod_config.placed_nodes:
        name = placed.node.name
        drains = [r for r in night.of_type(LOCAL_COMMAND) if r.name == f"{name}-drain-on-delete"]
        if placed.node.head:
            assert drains == [], "the head is never drained"
            continue
        (d,) = drains
        host_key = night.one(COMMAND, f"{name}-ufw").inputs["connection"]["hostKey"]
        delete = d.inputs["delete"]
        # It SSHes to this node, pinning this node's generated key, and runs the node's drain there.
        assert f"rayops@{placed.node.ip} sh -s <<'RAY_DRAIN_ON_NODE'\n" in delete
        assert f"KnownHostsCommand=/bin/echo {placed.node.ip} {' '.join(host_key.split()[:2])}" in delete
        assert drain.drain_command(placed).rstrip() in delete
        assert len(delete) < 4000  # the program and its settings are not in it: they are files on the node
        # The program and this node's settings arrive as files first, and stay until the drain is done.
        program = night.one(COMMAND, f"{name}-drain-program")
        settings = drain.drain_files(drain.drain_settings(prod_config, placed))["settings.json"]
        (staged,) = [c for c in night.staged_copies(program.name) if c.inputs["remotePath"].endswith("/settings.json")]
        assert staged.inputs["source"]["text"] == settings
        assert program.urn in closure(night, d.urn)
        waits_for = closure(night, d.urn)
        # Pulumi deletes dependents first: the drain goes before the container and the VM.
        assert night.one(CONTAINER, f"{name}-ray").urn in waits_for
        assert night.one(VM, name).urn in waits_for


# ---- Monitoring ----


def test_monitoring_containers(night, prod_config):
    host = prod_config.monitoring_host.node.name
    monitoring = [c for c in night.of_type(CONTAINER) if not c.name.endswith(("-ray", "-redis", "-dashboard-proxy"))]
    names = sorted(c.name for c in monitoring)
    expected = sorted(
        [f"{n}-node-exporter" for n in AO + HC] + [f"{n}-cadvisor" for n in AO + HC]
        + [f"{host}-prometheus", f"{host}-grafana", f"{host}-alertmanager", f"{host}-image-mirror"]
    )
    assert names == expected
    for c in monitoring:
        assert c.inputs["networkMode"] == "host" and not c.inputs.get("ports")
        assert c.inputs["healthcheck"]["tests"][0] == "CMD" and c.inputs["restart"] == "unless-stopped"
        image = night.by_urn(next(d for d in c.dependencies if "remoteImage" in d))
        assert c.inputs["image"] == image_id(image.inputs["name"])
        assert pinned_version(image.inputs["name"]) is not None
    volumes = {r.inputs["name"] for r in night.of_type("docker:index/volume:Volume")}
    # The only named volume: the stateful containers keep their data on the data disk (test_program_resilience.py).
    assert volumes == {"image-mirror"}
    grafana = night.one(CONTAINER, f"{host}-grafana")
    env = dict(e.split("=", 1) for e in grafana.inputs["envs"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == TEST_SECRETS["grafanaAdminPassword"] and "envs" in grafana.secret_inputs
    assert env["GF_SECURITY_ALLOW_EMBEDDING"] == "true" and env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    prometheus = night.one(CONTAINER, f"{host}-prometheus")
    assert "--storage.tsdb.retention.time=30d" in prometheus.inputs["command"]
    config_cmd = night.one(COMMAND, f"{host}-monitoring-config")
    assert config_cmd.urn in prometheus.dependencies and config_cmd.urn in grafana.dependencies


def test_grafana_dashboards_are_copied_as_files_by_their_own_resource(night, prod_config):
    from pathlib import Path, PurePosixPath

    from components.render import monitoring_config as mc
    from scripts.ops.program_mocks import ROOT

    host = prod_config.monitoring_host.node.name
    copy = night.one("command:remote:CopyToRemote", f"{host}-grafana-dashboards")
    source = ROOT / copy.inputs["source"]["path"]  # relative to the project directory, where Pulumi runs the program
    assert not Path(copy.inputs["source"]["path"]).is_absolute()
    assert sorted(p.name for p in source.glob("*.json")) == sorted(mc.dashboards())
    # SFTP copies a directory (no trailing slash) into remote_path/<its name>: where Grafana's mount is.
    assert str(PurePosixPath(copy.inputs["remotePath"]) / source.name) == mc.GRAFANA_DASHBOARDS.host
    owned = night.one(COMMAND, f"{host}-grafana-dashboards-dir")
    assert owned.urn in copy.dependencies and f"-o {prod_config.ssh.user} {mc.GRAFANA_DASHBOARDS.host}" in owned.inputs["create"]
    assert copy.urn in night.one(CONTAINER, f"{host}-grafana").dependencies
    # No dashboard travels in a command's stdin any more.
    stdins = [c.inputs.get("stdin") or "" for c in night.of_type(COMMAND)]
    assert max(map(len, stdins)) < 100_000


def test_grafana_password_generated_when_not_given(raw, tmp_path):
    raw["at"] = NOON
    run = run_program(raw, tmp_path, secrets={"sshPrivateKey": TEST_SECRETS["sshPrivateKey"]})
    grafana = run.one(CONTAINER, f"{MONITOR}-grafana")
    env = dict(e.split("=", 1) for e in grafana.inputs["envs"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("generated-")
    assert env["GF_SECURITY_ADMIN_PASSWORD"] not in ("admin", "admin123")


def test_scrape_targets_follow_the_schedule(raw, tmp_path, prod_config):
    import datetime as dt

    from components.render import monitoring_config as mc

    day = run_at(raw, tmp_path, NOON)
    install = day.one(COMMAND, f"{MONITOR}-scrape-targets")
    staged = {c.name.removeprefix(install.name): c.inputs["source"]["text"] for c in day.staged_copies(install.name)}
    at = dt.datetime.fromisoformat(NOON)
    files = {f"{mc.PROMETHEUS_CONFIG.host}/{k}": v for k, v in mc.scrape_targets(prod_config, at).items()}
    files[f"{mc.NODE_EXPORTER_TEXTFILE.host}/{mc.EXPECTED_NODES_FILE}"] = mc.expected_nodes_metrics(prod_config, at)
    assert staged == files
    assert install.inputs["create"].rstrip("'\n").endswith("docker kill --signal HUP prometheus >/dev/null 2>&1 || true")
    assert "10.20.0.21" not in "".join(mc.scrape_targets(prod_config, at).values())
