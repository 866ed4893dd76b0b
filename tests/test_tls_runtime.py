"""Ray's TLS for real: a head (always-on) and a heavy-compute node on 127.0.0.1,
started from the rendered prod commands and environment (RAY_USE_TLS and the
certificate paths), each with a certificate issued from the profile the
program issues it from (scripts/ops/local_tls.py).

The operator tools run as an operator runs them with the stack outputs: the
token and the operators' client-only certificate. Then strangers try: no TLS
at all, and TLS with a certificate from another CA, both with the right token.
"""
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from components.render import dashboard_proxy, ray_start, tls
from conftest import require_tool
from scripts.ops.local_cluster import rendered_cluster
from scripts.ops.local_proxy import running_proxy
from scripts.ops.local_tls import LocalCa
from tls_probe import SETTINGS_FRAME, listening_addresses, refusal, tls_exchange

ROOT = Path(__file__).resolve().parent.parent
HEAD_OFFSET = 7000  # the shipped ports moved by this (the next node's by 10 more)
WORKER_PORTS = (44000, 44999)
NODES = ("ray-ao-1", "ray-hc-1")
RAY_CLI = "ray.scripts.scripts"  # the `ray` command, as a module
CPUS_PER_NODE = 2

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster(prod_config):
    with rendered_cluster(prod_config, NODES, HEAD_OFFSET, WORKER_PORTS, CPUS_PER_NODE) as running:
        yield running


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


def test_every_grpc_port_serves_tls_with_its_nodes_certificate_to_cluster_clients(cluster):
    operator = (cluster.operator_tls["RAY_TLS_SERVER_CERT"], cluster.operator_tls["RAY_TLS_SERVER_KEY"])
    for name, node in cluster.nodes.items():
        for port_name, port in grpc_ports(node.settings).items():
            common_name, answer = tls_exchange(port, cluster.operator_tls["RAY_TLS_CA_CERT"], operator)
            assert common_name == name, port_name
            assert answer[3:4] == SETTINGS_FRAME, f"{name} {port_name}: no HTTP/2 SETTINGS after the handshake"


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


# ---- The dashboard and Jobs API, through the rendered TLS proxy (Debian's nginx) ----


@pytest.fixture(scope="module")
def proxy(cluster):
    require_tool("nginx", "nginx-light")
    require_tool("curl", "curl")  # the proxy's health check, as the nginx image runs it
    with running_proxy(cluster) as settings:  # up once its rendered health check passes
        yield settings


def https(proxy, path: str, cafile: str | None, token: str | None = None) -> int:
    context = ssl.create_default_context(cafile=cafile)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{dashboard_proxy.https_url(proxy, '127.0.0.1')}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_dashboard_itself_answers_on_loopback_only(cluster):
    assert listening_addresses(cluster.head.ports.dashboard) == {"127.0.0.1"}


def test_the_jobs_api_answers_over_https_with_the_token_and_the_cluster_ca(cluster, proxy):
    ca = cluster.operator_tls["RAY_TLS_CA_CERT"]
    assert https(proxy, "/api/jobs/", ca, cluster.token) == 200
    assert https(proxy, "/api/jobs/", ca) in (401, 403)  # the token still guards it behind the proxy
    with pytest.raises(urllib.error.URLError) as unverified:  # the system's CAs do not vouch for the cluster
        https(proxy, "/api/jobs/", None, cluster.token)
    assert isinstance(unverified.value.reason, ssl.SSLCertVerificationError)
    plain = urllib.request.Request(f"http://127.0.0.1:{proxy.https_port}/api/jobs/")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(plain, timeout=10)
    assert refused.value.code == 400  # nginx: plain HTTP sent to the HTTPS port


def test_operator_tools_read_the_cluster_through_the_proxy(cluster, proxy):
    url = dashboard_proxy.https_url(proxy, "127.0.0.1")
    monitor = tool("scripts.monitor_tasks", "--address", url, "--json", env=cluster.operator_env())
    assert monitor.returncode == 0, monitor.stderr
    assert set(json.loads(monitor.stdout)) == {"always-on", "heavy-compute"}
    # As `scheduler status` probes: the token, and the CA from the stack output rayTlsCaCert.
    probe = (
        "import sys; from scripts.ops.ray_state import alive_nodes, trusting\n"
        "with trusting(sys.argv[2]): print(sorted(n.name for n in alive_nodes(sys.argv[1])))"
    )
    ca_output = Path(cluster.operator_tls["RAY_TLS_CA_CERT"]).read_text()
    scheduler_probe = subprocess.run(
        [sys.executable, "-c", probe, url, ca_output], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "RAY_AUTH_TOKEN": cluster.token},
    )
    assert scheduler_probe.returncode == 0, scheduler_probe.stderr
    assert scheduler_probe.stdout.strip() == str(sorted(NODES))
    without_ca = tool("scripts.monitor_tasks", "--address", url, env={"RAY_AUTH_TOKEN": cluster.token})
    assert without_ca.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in without_ca.stderr, without_ca.stderr


def test_with_cluster_access_gives_the_tools_and_ray_job_the_cluster_from_the_stack_outputs_alone(cluster, proxy, tmp_path):
    """As README says an operator runs them: scripts/with_cluster_access.py reads the outputs, the
    tools and Ray's own CLI find the dashboard (RAY_ADDRESS) and trust its proxy (REQUESTS_CA_BUNDLE)."""
    outputs = tmp_path / "outputs.json"
    operator = {name: Path(cluster.operator_tls[variable]).read_text() for name, variable in (
        ("rayTlsCaCert", "RAY_TLS_CA_CERT"), ("rayTlsOperatorCert", "RAY_TLS_SERVER_CERT"), ("rayTlsOperatorKey", "RAY_TLS_SERVER_KEY"))}
    outputs.write_text(json.dumps({
        "dashboardUrl": dashboard_proxy.https_url(proxy, "127.0.0.1"), "rayClientAddress": client_address(cluster),
        "rayToken": cluster.token, **operator,
    }))
    with_access = ("scripts.with_cluster_access", "--stack", "local", "--outputs-command", f"cat {outputs}", "--")
    monitor = tool(*with_access, sys.executable, "-m", "scripts.monitor_tasks", "--json", env={})
    assert monitor.returncode == 0, monitor.stderr
    assert {tier: c["nodes"] for tier, c in json.loads(monitor.stdout).items()} == {"always-on": 1, "heavy-compute": 1}
    smoke = tool(*with_access, sys.executable, "-m", "scripts.smoke_test", "--tasks", "4", "--json", env={})  # no --address
    assert smoke.returncode == 0, smoke.stderr
    assert {r["tier"] for r in json.loads(smoke.stdout) if r["ok"]} == {"always-on", "heavy-compute"}
    jobs = tool(*with_access, sys.executable, "-m", RAY_CLI, "job", "list", env={})  # `ray job list`
    assert jobs.returncode == 0, jobs.stderr
    without = tool(RAY_CLI, "job", "list", "--address", dashboard_proxy.https_url(proxy, "127.0.0.1"), env={"RAY_AUTH_TOKEN": cluster.token})
    assert without.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in without.stdout + without.stderr
