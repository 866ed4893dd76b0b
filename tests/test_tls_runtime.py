"""Ray's TLS for real: a head (always-on) and a heavy-compute node on 127.0.0.1,
started from the rendered prod commands and environment (RAY_USE_TLS and the
certificate paths), each with a certificate issued from the profile the
program issues it from (scripts/ops/local_tls.py).

The operator tools run as an operator runs them with the stack outputs: the
token and the operators' client-only certificate. Then strangers try: no TLS
at all, and TLS with a certificate from another CA, both with the right token.
"""
import dataclasses
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from components.render import ray_start, tls
from scripts.ops.local_cluster import LocalCluster, localize
from scripts.ops.local_tls import LocalCa

ROOT = Path(__file__).resolve().parent.parent
HEAD_OFFSET = 7000  # the shipped ports moved by this (the next node's by 10 more)
WORKER_PORTS = (44000, 44999)
NODES = ("ray-ao-1", "ray-hc-1")
CPUS_PER_NODE = 2
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster(prod_config):
    rendered = [ray_start.node_settings(prod_config, p) for p in prod_config.placed_nodes if p.node.name in NODES]
    root = Path(tempfile.mkdtemp(prefix="tls", dir="/tmp"))  # short: Ray's socket paths are limited
    try:
        local = localize(rendered, root, HEAD_OFFSET, 10, WORKER_PORTS)
        with LocalCluster([dataclasses.replace(s, num_cpus=CPUS_PER_NODE) for s in local]) as running:
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stranger_tls(tmp_path_factory):
    """A client certificate and CA that are not the cluster's (another cluster's, say)."""
    directory = tmp_path_factory.mktemp("stranger")
    return LocalCa(directory / "ca").issue(tls.operator_profile(), directory / "client")


def tool(name: str, *argv: str, env: dict) -> subprocess.CompletedProcess:
    """`python -m scripts.<tool>` with nothing of Ray's in the environment but `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "REQUESTS_CA_BUNDLE"}
    return subprocess.run(
        [sys.executable, "-m", name, *argv], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=240
    )


def client_address(cluster) -> str:
    return f"ray://127.0.0.1:{cluster.head.ports.client}"


def test_the_rendered_environment_turns_mutual_tls_on(cluster):
    for node in cluster.nodes.values():
        env = ray_start.ray_env(node.settings)
        assert env["RAY_USE_TLS"] == "1"
        for variable in ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT"):
            assert Path(env[variable]).parent == Path(node.settings.tls_dir) and Path(env[variable]).is_file()
        assert Path(env["RAY_TLS_SERVER_KEY"]).stat().st_mode & 0o077 == 0  # owner-only, as on the VMs


def test_smoke_test_passes_over_tls_with_the_operator_certificate(cluster):
    result = tool("scripts.smoke_test", "--address", client_address(cluster), "--tasks", "10", "--json", env=cluster.operator_env())
    assert result.returncode == 0, result.stderr
    results = {r["tier"]: r for r in json.loads(result.stdout)}
    assert results.keys() == {"always-on", "heavy-compute"}
    assert all(r["ok"] and r["tasks"] == 10 and r["nodesUsed"] == 1 for r in results.values())


def test_monitor_reads_the_cluster_over_tls_with_the_operator_certificate(cluster):
    result = tool("scripts.monitor_tasks", "--address", cluster.gcs_address, "--json", env=cluster.operator_env())
    assert result.returncode == 0, result.stderr
    assert {tier: c["nodes"] for tier, c in json.loads(result.stdout).items()} == {"always-on": 1, "heavy-compute": 1}


def grpc_ports(s) -> dict[str, int]:
    """Every gRPC server a node runs at a fixed port (the runtime-env agent speaks HTTP)."""
    ports = {name: getattr(s.ports, name) for name in ("node_manager", "object_manager", "dashboard_agent_grpc")}
    if s.is_head:
        ports |= {"gcs": s.ports.gcs, "client": s.ports.client}
    return ports


def tls_exchange(port: int, cafile: str, cert: tuple[str, str] | None) -> tuple[str, bytes]:
    """A TLS handshake to 127.0.0.1:port verified against `cafile`, then HTTP/2's opening
    bytes: (the server certificate's common name, the first bytes it answers)."""
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["h2"])
    if cert:
        context.load_cert_chain(*cert)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            subject = dict(pair for rdn in conn.getpeercert()["subject"] for pair in rdn)
            conn.sendall(HTTP2_PREFACE)
            return subject["commonName"], conn.recv(9)  # the server's SETTINGS frame header, if it accepted us


def refusal(port: int, cafile: str, cert: tuple[str, str] | None) -> str:
    """How the server at `port` refused us (TLS 1.3: an alert, or a close, on the first read); '' if it did not."""
    try:
        _, answer = tls_exchange(port, cafile, cert)
    except (ssl.SSLError, ConnectionResetError) as error:
        return str(error)
    return "" if answer else "closed without a word"


def test_every_grpc_port_serves_tls_with_its_nodes_certificate_to_cluster_clients(cluster):
    operator = (cluster.operator_tls["RAY_TLS_SERVER_CERT"], cluster.operator_tls["RAY_TLS_SERVER_KEY"])
    for name, node in cluster.nodes.items():
        for port_name, port in grpc_ports(node.settings).items():
            common_name, answer = tls_exchange(port, cluster.operator_tls["RAY_TLS_CA_CERT"], operator)
            assert common_name == name, port_name
            assert answer[3:4] == b"\x04", f"{name} {port_name}: no HTTP/2 SETTINGS after the handshake"


def test_every_grpc_port_refuses_a_client_without_a_certificate_from_the_cluster_ca(cluster, stranger_tls):
    foreign = (stranger_tls["RAY_TLS_SERVER_CERT"], stranger_tls["RAY_TLS_SERVER_KEY"])
    ca = cluster.operator_tls["RAY_TLS_CA_CERT"]
    for name, node in cluster.nodes.items():
        for port_name, port in grpc_ports(node.settings).items():
            for cert in (None, foreign):
                assert refusal(port, ca, cert), f"{name} {port_name} accepted a client with {cert or 'no certificate'}"


def test_ray_clients_without_the_cluster_ca_are_refused_even_with_the_token(cluster, stranger_tls):
    plain = {"RAY_AUTH_TOKEN": cluster.token}
    foreign = {"RAY_AUTH_TOKEN": cluster.token, **stranger_tls}
    for env in (plain, foreign):
        smoke = tool("scripts.smoke_test", "--address", client_address(cluster), "--tasks", "2", env=env)
        assert smoke.returncode == 2 and "cannot reach the cluster" in smoke.stderr, smoke.stderr
        monitor = tool("scripts.monitor_tasks", "--address", cluster.gcs_address, env={**env, "RAY_gcs_server_port_wait_time_s": "2"})
        assert monitor.returncode == 1 and "cannot read the cluster" in monitor.stderr, monitor.stderr
