"""The data centre's own settings: an HTTP proxy, a registry mirror with credentials, extra ports
and extra `ray start` flags and environment per tier, and the SSH key pair checked.

Each is rendered and read by its real consumer: cloud-init's schema and apt module for the proxy,
real ufw with real packets for the ports, Ray's own `ray start` option parser for the flags, the
policy pack's firewall check for a port open to the world; the wiring under Pulumi's mocks.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import re
import subprocess

import pulumi
import pytest
import yaml

import netns
from conftest import require_tool
from components.model import config
from components.model.extras import PINNED_RAY_ENV, PINNED_RAY_FLAGS
from components.render import cloud_init, containers, ray_start
from components.render import firewall_rules as fw
from policy import checks
from scripts.ops.program_mocks import TEST_SECRETS, run_program
from test_firewall import LAB_ADMIN_CIDRS, lab_config

HOST_PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedHostKey host\n"
PROXY = {"http": "http://proxy.dc1.example.internal:3128", "noProxy": [".dc1.example.internal"]}
MIRROR = {"mirror": "harbor.dc1.example.internal/hub", "username": "robot$ray"}
NIGHT = "2026-11-22T22:00:00+01:00"


# --- the proxy, for apt and for Docker's pulls ----------------------------------------------------


def test_the_proxy_reaches_apt_and_docker_and_passes_cloud_init(raw, tmp_path):
    require_tool("cloud-init", "Debian's cloud-init")
    raw["proxy"] = PROXY
    cfg = config.load(raw)
    user_data = tmp_path / "user-data"
    user_data.write_text(cloud_init.user_data(cfg, cfg.head, HOST_PRIVATE, HOST_PUBLIC))
    schema = subprocess.run(["cloud-init", "schema", "-c", str(user_data)], capture_output=True, text=True)
    assert schema.returncode == 0 and "Valid cloud-config" in schema.stdout, schema.stdout + schema.stderr

    # cloud-init's own apt module writes the proxy file; apt itself reads it back.
    apt_conf = tmp_path / "90cloud-init-aptproxy"
    subprocess.run(["/usr/bin/python3", "-c", (
        "import sys, yaml\n"
        "from cloudinit.config import cc_apt_configure as apt\n"
        "cfg = apt.convert_to_v3_apt_format(yaml.safe_load(open(sys.argv[1])))['apt']\n"
        "apt.apply_apt_config(cfg, sys.argv[2], sys.argv[2] + '.conf')\n"
    ), str(user_data), str(apt_conf)], check=True)
    dump = subprocess.run(["apt-config", "-c", str(apt_conf), "dump"], capture_output=True, text=True, check=True).stdout
    assert f'Acquire::http::Proxy "{PROXY["http"]}";' in dump.splitlines()
    assert f'Acquire::https::Proxy "{PROXY["http"]}";' in dump.splitlines()

    (drop_in,) = yaml.safe_load(user_data.read_text())["write_files"]
    assert drop_in["path"] == "/etc/systemd/system/docker.service.d/http-proxy.conf"
    assert drop_in["content"].splitlines() == [
        "[Service]",
        'Environment="HTTP_PROXY=http://proxy.dc1.example.internal:3128" "HTTPS_PROXY=http://proxy.dc1.example.internal:3128" '
        '"NO_PROXY=localhost,127.0.0.1,10.20.0.0/24,.dc1.example.internal"',
    ]


def test_without_a_proxy_the_user_data_is_unchanged(prod_config):
    # A new key in user-data reboots every VM (extra_config): stacks without a proxy must not see one.
    document = yaml.safe_load(cloud_init.user_data(prod_config, prod_config.head, HOST_PRIVATE, HOST_PUBLIC))
    assert not {"apt", "write_files"} & set(document)


# --- the registry mirror and its credentials ------------------------------------------------------


def test_every_image_is_pulled_through_the_mirror_with_its_credentials(raw, tmp_path):
    raw["registry"], raw["at"] = MIRROR, NIGHT
    run = run_program(raw, tmp_path, secrets={**TEST_SECRETS, "registryPassword": "robot-secret"})
    images = run.of_type("docker:index/remoteImage:RemoteImage")
    # The monitoring host pulls through the data centre's mirror; every node pulls the program's LAN
    # mirror's copy of those (tests/test_image_mirror.py), never a public registry.
    lan = "10.20.0.12:5000/"  # the monitoring host: ray-ao-2, the first always-on node that is not the head
    assert images and all(i.inputs["name"].startswith(("harbor.dc1.example.internal/hub/", lan)) for i in images)
    assert {i.inputs["name"] for i in images if "/ray:" in i.inputs["name"]} == {
        "harbor.dc1.example.internal/hub/rayproject/ray:2.60.0-py311", lan + "rayproject/ray:2.60.0-py311"
    }
    providers = run.of_type("pulumi:providers:docker")
    assert len(providers) == 6
    for provider in providers:
        # A provider's nested inputs reach the engine as JSON text.
        assert json.loads(provider.inputs["registryAuth"]) == [
            {"address": "harbor.dc1.example.internal", "username": "robot$ray", "password": "robot-secret"}
        ]
        assert "registryAuth" in provider.secret_inputs
    assert not [i.inputs["name"] for i in images if checks.image_violations(i.inputs["name"])]


def test_a_mirror_user_without_its_password_stops_the_program(raw, tmp_path):
    raw["registry"] = MIRROR
    with pytest.raises(pulumi.RunError) as caught:
        run_program(raw, tmp_path)
    assert "ray-cluster:registryPassword: registry.username is set: set the password with" in str(caught.value)


# --- extra ports per tier ---------------------------------------------------------------------------


def with_extra_ports(raw: dict, tier: str, ports: list[dict]) -> dict:
    raw = copy.deepcopy(raw)
    raw["tiers"][tier]["extraPorts"] = ports
    return raw


SERVE, CUSTOM = 8000, 9443  # (8443 is the dashboard's TLS proxy)


def test_extra_ports_open_on_their_tier_only(raw):
    cfg = config.load(with_extra_ports(raw, "heavy-compute", [{"port": SERVE, "toPort": SERVE + 2, "from": ["admins"]}]))
    for placed in cfg.placed_nodes:
        extra = [r for r in fw.firewall_rules(cfg, placed) if r.covers(SERVE)]
        expected = [f"allow from 10.30.0.0/24 to any port {SERVE}:{SERVE + 2} proto tcp"] if placed.tier_name == "heavy-compute" else []
        assert [r.spec for r in extra] == expected, placed.node.name


@pytest.fixture
def extra_lab(raw, tmp_path):
    """The head's namespace with extra ports: Serve from the admins, a custom port from one outside network."""
    netns.require_namespaces()
    cfg = lab_config(with_extra_ports(raw, "always-on", [
        {"port": SERVE, "from": ["admins"]},
        {"port": CUSTOM, "from": ["10.99.0.0/24"]},
    ]), LAB_ADMIN_CIDRS)
    peers = {"cluster": str(ipaddress.ip_network(cfg.network.cidr)[50]),
             "admin": str(ipaddress.ip_network(LAB_ADMIN_CIDRS[0])[5]), "outsider": "10.99.0.5", "stranger": "10.98.0.5"}
    with netns.running_lab(str(cfg.head.node.ip), peers) as lab:
        lab.listen([SERVE, CUSTOM])
        yield cfg, lab, netns.ufw_state_copy(tmp_path)


def test_extra_ports_reach_exactly_their_sources_through_real_ufw(extra_lab):
    cfg, lab, state = extra_lab
    result = netns.run_ufw(lab.node, state, fw.ufw_script(fw.firewall_rules(cfg, cfg.head)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert lab.reachable([SERVE, CUSTOM]) == {
        "cluster": set(), "admin": {SERVE}, "outsider": {CUSTOM}, "stranger": set(),
    }


def test_a_port_open_to_the_world_is_refused_by_config_and_by_the_policy(raw, tmp_path):
    with pytest.raises(config.ConfigError, match=r"extraPorts\[0\]\.from\[0\]: 0\.0\.0\.0/0 would open the port to the world"):
        config.load(with_extra_ports(raw, "always-on", [{"port": SERVE, "from": ["0.0.0.0/0"]}]))
    run = run_program({**with_extra_ports(raw, "always-on", [{"port": SERVE, "from": ["cluster"]}]), "at": NIGHT}, tmp_path)
    command = run.one(checks.REMOTE_COMMAND, "ray-ao-1-ufw").inputs
    assert f"ufw allow from 10.20.0.0/24 to any port {SERVE} proto tcp comment 'ray-cluster always-on extra'" in command["stdin"]
    assert checks.firewall_violations(command) == []
    world = command["stdin"].replace("from 10.20.0.0/24 to any port 8000", "from any to any port 8000")
    assert checks.firewall_violations({**command, "stdin": world}) == [
        f"`ufw allow from any to any port {SERVE} proto tcp comment 'ray-cluster always-on extra'` opens a port to anyone: "
        "name the networks allowed (a tier's extraPorts take cluster, admins or a network in `from`)"
    ]


# --- extra ray start flags and environment per tier --------------------------------------------------


def flags(argv: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}


def test_the_pinned_lists_cover_everything_the_program_sets(prod_config):
    for placed in prod_config.placed_nodes:
        spec = containers.ray_container(prod_config, placed)
        assert flags(ray_start.ray_start_args(ray_start.node_settings(prod_config, placed))) <= PINNED_RAY_FLAGS
        assert set(spec.env) | set(spec.secret_env) <= PINNED_RAY_ENV, placed.node.name


def test_extra_flags_and_env_reach_their_tier_and_rays_own_parser_takes_them(raw):
    from ray.scripts.scripts import start  # Ray's `ray start` command (click)

    raw["tiers"]["heavy-compute"].update(rayStartArgs=["--num-gpus=0", "--system-config={\"object_spilling_threshold\": 0.9}"],
                                         rayEnv={"OMP_NUM_THREADS": "8"})
    cfg = config.load(raw)
    for placed in cfg.placed_nodes:
        settings = ray_start.node_settings(cfg, placed)
        argv, env = ray_start.ray_start_args(settings), ray_start.ray_env(settings)
        heavy = placed.tier_name == "heavy-compute"
        assert ("--num-gpus=0" in argv, env.get("OMP_NUM_THREADS")) == ((True, "8") if heavy else (False, None))
        params = start.make_context("ray start", argv[2:]).params  # parses and type-checks, starts nothing
        assert params["num_gpus"] == (0 if heavy else None) and params["node_ip_address"] == str(placed.node.ip)


@pytest.mark.parametrize("field,value,rule", [
    ("rayStartArgs", ["--port=7000"], "--port is set by the program"),
    ("rayStartArgs", ["--object-manager-port=7000"], "--object-manager-port is set by the program"),
    ("rayStartArgs", ["--node-ip-address=10.20.0.99"], "--node-ip-address is set by the program"),
    ("rayStartArgs", ["--labels=tier=always-on"], "--labels is set by the program"),
    ("rayStartArgs", ["num-gpus=1"], "'num-gpus=1' is not a ray start flag"),
    ("rayEnv", {"RAY_AUTH_MODE": "disabled"}, "RAY_AUTH_MODE is set by the program"),
    ("rayEnv", {"RAY_AUTH_TOKEN": "guess"}, "RAY_AUTH_TOKEN is set by the program"),
    ("rayEnv", {"RAY_GCS_SERVER_PORT": "7000"}, "RAY_GCS_SERVER_PORT is set by the program"),
    ("rayEnv", {"RAY_REDIS_ADDRESS": "10.0.0.1:6379"}, "RAY_REDIS_ADDRESS is set by the program"),
    ("rayEnv", {"OMP NUM": "1"}, "'OMP NUM' is not an environment variable name"),
])
def test_what_is_pinned_stays_pinned(raw, field, value, rule):
    raw["tiers"]["heavy-compute"][field] = value
    with pytest.raises(config.ConfigError) as caught:
        config.load(raw)
    assert [p.key for p in caught.value.problems] == [f"tiers.heavy-compute.{field}"]
    assert rule in caught.value.problems[0].rule


# --- the SSH key pair -------------------------------------------------------------------------------


def test_a_private_key_that_is_not_the_public_keys_half_stops_the_update(raw, tmp_path):
    other = "-----BEGIN OPENSSH PRIVATE KEY-----\nsomeone-elses-key\n-----END OPENSSH PRIVATE KEY-----\n"
    with pytest.raises(pulumi.RunError) as caught:
        run_program(raw, tmp_path, secrets={**TEST_SECRETS, "sshPrivateKey": other})
    assert re.match(r"ray-cluster:sshPrivateKey is not the private half of ray-cluster:ssh\.publicKey", str(caught.value))
    assert "someone-elses-key" not in str(caught.value)


def test_no_vm_is_registered_before_the_key_pair_is_checked(raw, tmp_path, monkeypatch):
    from scripts.ops import program_mocks

    registered, register = [], program_mocks.RecordingMonitor.RegisterResource
    monkeypatch.setattr(program_mocks.RecordingMonitor, "RegisterResource",
                        lambda self, request: registered.append(request.type) or register(self, request))
    other = "-----BEGIN OPENSSH PRIVATE KEY-----\nsomeone-elses-key\n-----END OPENSSH PRIVATE KEY-----\n"
    with pytest.raises(pulumi.RunError):
        run_program(raw, tmp_path, secrets={**TEST_SECRETS, "sshPrivateKey": other})
    assert "vsphere:index/virtualMachine:VirtualMachine" not in registered
    assert "ray-cluster:index:Vm" not in registered
