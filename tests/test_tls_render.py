"""What ships for Ray's TLS, rendered: the environment, the certificate profiles, the
script that writes a node's files (run for real, as root, in a private mount namespace),
and the dashboard proxy's nginx config."""
import os
import re
from pathlib import Path
import shutil
import subprocess

import pytest

from components.model.ports import RAY
from components.render import dashboard_proxy, ray_start, tls
from components.render.containers import node_containers
from scripts.ops import ray_state

PEMS = {
    tls.CA_CERT: "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
    tls.NODE_CERT: "-----BEGIN CERTIFICATE-----\nnode\n-----END CERTIFICATE-----\n",
    tls.NODE_KEY: "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n",
}


def test_every_node_turns_tls_on_with_files_from_the_read_only_mount(prod_config):
    for placed in prod_config.placed_nodes:
        env = ray_start.ray_env(ray_start.node_settings(prod_config, placed))
        assert env["RAY_USE_TLS"] == "1"
        assert {env[k] for k in ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")} == {
            f"{tls.CONTAINER_TLS_DIR}/{name}" for name in PEMS
        }
        (ray,) = [c for c in node_containers(prod_config, placed) if c.name == ray_start.CONTAINER_NAME]
        assert [(b.source, b.read_only) for b in ray.binds if b.target == tls.CONTAINER_TLS_DIR] == [(tls.HOST_TLS_DIR, True)]


def test_a_node_certificate_names_every_address_a_peer_dials_and_serves_both_ways():
    profile = tls.node_profile("ray-hc-1", "10.20.0.21")
    assert profile.ip_addresses == ("10.20.0.21", "127.0.0.1")
    assert profile.dns_names == ("ray-hc-1", "localhost")
    assert {"server_auth", "client_auth"} <= set(profile.allowed_uses)
    operator = tls.operator_profile()
    assert "client_auth" in operator.allowed_uses and "server_auth" not in operator.allowed_uses
    assert operator.ip_addresses == operator.dns_names == ()


def test_the_files_script_leaves_the_key_readable_by_the_ray_user_only(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a private mount namespace)")
    script = tls.tls_files_script(PEMS[tls.CA_CERT], PEMS[tls.NODE_CERT], PEMS[tls.NODE_KEY], owner="1000:100")
    # /etc/ray-cluster becomes a private tmpfs: the machine's own /etc is never touched.
    report = "stat -c '%n %a %u:%g' /etc/ray-cluster/tls /etc/ray-cluster/tls/*; cat /etc/ray-cluster/tls/node.key"
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mkdir -p /etc/ray-cluster && mount -t tmpfs tmpfs /etc/ray-cluster && sh -s && ' + report],
        input=script, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "/etc/ray-cluster/tls 700 1000:100",
        "/etc/ray-cluster/tls/ca.crt 400 1000:100",
        "/etc/ray-cluster/tls/node.crt 400 1000:100",
        "/etc/ray-cluster/tls/node.key 400 1000:100",
    ]
    assert "\n".join(lines[4:]) + "\n" == PEMS[tls.NODE_KEY]
    assert "umask 077" in script.splitlines()[0]  # no moment where a temp copy of the key is world-readable


def test_the_proxy_serves_tls_only_at_the_heads_ip_and_loopback_in_front_of_the_loopback_dashboard(prod_config):
    conf = dashboard_proxy.nginx_conf(dashboard_proxy.proxy_settings(prod_config))
    listens = re.findall(r"^\s*listen (\S+)(.*);$", conf, re.MULTILINE)
    assert listens == [(f"{prod_config.head.node.ip}:{RAY.dashboard_https}", " ssl"), (f"127.0.0.1:{RAY.dashboard_https}", " ssl")]
    assert re.findall(r"proxy_pass (\S+);", conf) == [f"http://127.0.0.1:{RAY.dashboard}"]
    assert f"ssl_certificate {tls.CONTAINER_TLS_DIR}/{tls.NODE_CERT};" in conf
    assert f"ssl_certificate_key {tls.CONTAINER_TLS_DIR}/{tls.NODE_KEY};" in conf
    (proxy,) = [c for c in node_containers(prod_config, prod_config.head) if c.name == dashboard_proxy.CONTAINER_NAME]
    assert proxy.image == prod_config.image(prod_config.ray.dashboard_proxy_image)
    assert not [c for p in prod_config.placed_nodes if not p.node.head for c in node_containers(prod_config, p) if c.name == proxy.name]


@pytest.mark.parametrize("variable", ["RAY_USE_TLS", "RAY_TLS_CA_CERT", "RAY_TLS_SERVER_KEY"])
def test_a_tier_cannot_turn_tls_off_or_swap_its_certificates(raw, variable):
    from components.model import config

    raw["tiers"]["heavy-compute"]["rayEnv"] = {variable: "0"}
    with pytest.raises(config.ConfigError) as refused:
        config.load(raw)
    assert "ray-cluster:tiers.heavy-compute.rayEnv" in str(refused.value) and variable in str(refused.value)
    assert "TLS" in str(refused.value)


def test_trusting_names_the_stack_outputs_ca_only_for_the_block(monkeypatch):
    monkeypatch.delenv("RAY_TLS_CA_CERT", raising=False)
    with ray_state.trusting("-----BEGIN CERTIFICATE-----\nthe CA\n-----END CERTIFICATE-----\n"):
        ca_file = Path(os.environ["RAY_TLS_CA_CERT"])
        assert ca_file.read_text().splitlines()[1] == "the CA"
    assert "RAY_TLS_CA_CERT" not in os.environ and not ca_file.exists()
    monkeypatch.setenv("RAY_TLS_CA_CERT", "/the/operators/ca.crt")  # named by the operator: kept
    with ray_state.trusting("-----BEGIN CERTIFICATE-----\nanother\n-----END CERTIFICATE-----\n"):
        assert os.environ["RAY_TLS_CA_CERT"] == "/the/operators/ca.crt"
