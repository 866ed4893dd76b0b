"""Ray's TLS under Pulumi's mocks: the CA, each node's certificate and its delivery,
which container gets what, the dashboard proxy, and that private keys stay secret."""
import json

import pytest

from components.model.ports import RAY
from components.render import dashboard_proxy
from components.render import tls
from scripts.ops.program_mocks import image_id, run_program

CONTAINER = "docker:index/container:Container"
COMMAND = "command:remote:Command"
KEY = "tls:index/privateKey:PrivateKey"
CSR = "tls:index/certRequest:CertRequest"
SIGNED = "tls:index/locallySignedCert:LocallySignedCert"
SELF_SIGNED = "tls:index/selfSignedCert:SelfSignedCert"
NIGHT = "2026-11-22T22:00:00+01:00"  # every tier live
NOON = "2026-11-22T12:00:00+01:00"  # heavy tier out
NODES = ["ray-ao-1", "ray-ao-2", "ray-ao-3", "ray-hc-1", "ray-hc-2", "ray-hc-3"]
PRIVATE_KEY_MARK = "PRIVATE KEY-----"


def run_at(raw, tmp_path, at):
    raw = json.loads(json.dumps(raw))
    raw["at"] = at
    return run_program(raw, tmp_path)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    from conftest import prod_raw

    return run_at(prod_raw(), tmp_path_factory.mktemp("home"), NIGHT)


def ca_of(run):
    (ca,) = run.of_type(SELF_SIGNED)
    return ca


def outputs_of(run):
    """The mock's output of a resource: what the program read from it."""
    from scripts.ops.program_mocks import ClusterMocks
    import pulumi

    def output(r, key):
        _, outputs = ClusterMocks().new_resource(pulumi.runtime.MockResourceArgs(r.type, r.name, r.inputs, None, None, None, None))
        return outputs[key]

    return output


def test_one_ca_signs_every_node_certificate(night):
    ca = ca_of(night)
    assert ca.inputs["isCaCertificate"] is True
    assert set(ca.inputs["allowedUses"]) == {"cert_signing", "crl_signing", "digital_signature"}
    ca_key = night.by_urn(next(d for d in ca.dependencies if d.endswith("-key")))
    assert (ca_key.inputs["algorithm"], ca_key.inputs["ecdsaCurve"]) == ("ECDSA", "P256")
    output = outputs_of(night)
    signed = {r.name: r for r in night.of_type(SIGNED)}
    assert sorted(signed) == sorted([f"{n}-tls-cert" for n in NODES] + ["ray-operator-tls-cert"])
    for cert in signed.values():
        assert cert.inputs["caCertPem"] == output(ca, "certPem")
        assert cert.inputs["caPrivateKeyPem"] == output(ca_key, "privateKeyPem")
        assert "caPrivateKeyPem" in cert.secret_inputs
        assert 0 < cert.inputs["earlyRenewalHours"] < cert.inputs["validityPeriodHours"]


def test_each_node_certificate_names_its_ip_and_loopback_and_serves_both_ways(night, prod_config):
    for placed in prod_config.placed_nodes:
        name = placed.node.name
        csr = night.one(CSR, f"{name}-tls-csr")
        assert csr.inputs["ipAddresses"] == [str(placed.node.ip), "127.0.0.1"]
        assert csr.inputs["dnsNames"] == [name, "localhost"]
        assert csr.inputs["subject"]["commonName"] == name
        assert any(d.endswith(f"::{name}-tls-key") for d in csr.dependencies)
        uses = set(night.one(SIGNED, f"{name}-tls-cert").inputs["allowedUses"])
        assert {"server_auth", "client_auth"} <= uses  # Ray's gRPC TLS is mutual


def test_node_files_are_written_owner_only_from_secrets_before_ray_starts(night, prod_config):
    output = outputs_of(night)
    ca_pem = output(ca_of(night), "certPem")
    for placed in prod_config.placed_nodes:
        name = placed.node.name
        files = night.one(COMMAND, f"{name}-tls-files")
        cert_pem = output(night.one(SIGNED, f"{name}-tls-cert"), "certPem")
        key_pem = output(night.one(KEY, f"{name}-tls-key"), "privateKeyPem")
        assert "stdin" in files.secret_inputs
        assert files.inputs["stdin"] == tls.tls_files_script(ca_pem, cert_pem, key_pem, owner="1000:100")
        assert files.inputs["triggers"] == [ca_pem, cert_pem]  # a renewed certificate rewrites the files
        firewall, vm = night.one(COMMAND, f"{name}-ufw"), night.one("vsphere:index/virtualMachine:VirtualMachine", name)
        assert firewall.urn in files.dependencies and files.deleted_with == vm.urn  # written anew on a new VM
        ray = night.one(CONTAINER, f"{name}-ray")
        # Ray reads the files at start: it waits for them, and is replaced with them.
        assert files.urn in ray.dependencies and files.urn in ray.replace_with


def test_every_ray_container_runs_mutual_tls_from_the_read_only_mount(night, prod_config):
    for placed in prod_config.placed_nodes:
        ray = night.one(CONTAINER, f"{placed.node.name}-ray")
        env = dict(e.split("=", 1) for e in ray.inputs["envs"])
        assert {k: env[k] for k in tls.tls_env(tls.CONTAINER_TLS_DIR)} == {
            "RAY_USE_TLS": "1",
            "RAY_TLS_SERVER_CERT": "/ray-tls/node.crt",
            "RAY_TLS_SERVER_KEY": "/ray-tls/node.key",
            "RAY_TLS_CA_CERT": "/ray-tls/ca.crt",
        }
        mounts = {v["hostPath"]: v for v in ray.inputs["volumes"] if "hostPath" in v}
        assert mounts[tls.HOST_TLS_DIR] == {"hostPath": tls.HOST_TLS_DIR, "containerPath": tls.CONTAINER_TLS_DIR, "readOnly": True}
        assert ("--dashboard-host=127.0.0.1" in ray.inputs["command"][2]) == placed.node.head


def test_only_the_head_runs_the_dashboard_proxy(night, prod_config):
    proxies = [r for r in night.of_type(CONTAINER) if r.inputs["name"] == dashboard_proxy.CONTAINER_NAME]
    assert [p.name for p in proxies] == ["ray-ao-1-dashboard-proxy"]
    (proxy,) = proxies
    image = night.one("docker:index/remoteImage:RemoteImage", "ray-ao-1-dashboard-proxy-image")
    assert image.inputs["name"] == prod_config.ray.dashboard_proxy_image == "nginx:1.26.3-alpine"
    assert proxy.inputs["image"] == image_id(image.inputs["name"])
    assert proxy.inputs["networkMode"] == "host" and not proxy.inputs.get("ports")
    assert proxy.inputs["restart"] == "unless-stopped"
    health = proxy.inputs["healthcheck"]["tests"]
    assert health[:2] == ["CMD", "curl"] and f"https://127.0.0.1:{RAY.dashboard_https}/api/gcs_healthz" in health
    mounts = {v["hostPath"]: (v["containerPath"], v.get("readOnly")) for v in proxy.inputs["volumes"]}
    assert mounts == {
        dashboard_proxy.HOST_CONF_DIR: (dashboard_proxy.CONTAINER_CONF_DIR, True),
        tls.HOST_TLS_DIR: (tls.CONTAINER_TLS_DIR, True),
    }
    config = night.one(COMMAND, "ray-ao-1-dashboard-proxy-config")
    assert dashboard_proxy.nginx_conf(dashboard_proxy.proxy_settings(prod_config)) in config.inputs["triggers"]
    head_files = night.one(COMMAND, "ray-ao-1-tls-files")
    for needed in (config.urn, head_files.urn):
        assert needed in proxy.dependencies and needed in proxy.replace_with


def resolved(value):
    """A stack output as (value, is it secret); plain values are not secret."""
    import asyncio

    import pulumi

    if not isinstance(value, pulumi.Output):
        return value, False

    async def both():
        return await value.future(), await value.is_secret()

    return asyncio.new_event_loop().run_until_complete(both())


def test_outputs_give_operators_the_ca_and_a_client_only_certificate(night):
    output = outputs_of(night)
    assert night.outputs["dashboardUrl"] == f"https://10.20.0.11:{RAY.dashboard_https}"
    assert resolved(night.outputs["rayTlsCaCert"]) == (output(ca_of(night), "certPem"), False)
    assert resolved(night.outputs["rayTlsOperatorCert"]) == (output(night.one(SIGNED, "ray-operator-tls-cert"), "certPem"), False)
    assert resolved(night.outputs["rayTlsOperatorKey"]) == (output(night.one(KEY, "ray-operator-tls-key"), "privateKeyPem"), True)
    operator = night.one(SIGNED, "ray-operator-tls-cert")
    assert "client_auth" in operator.inputs["allowedUses"] and "server_auth" not in operator.inputs["allowedUses"]
    assert not night.one(CSR, "ray-operator-tls-csr").inputs.get("ipAddresses")


def test_no_private_key_in_any_plain_input(night):
    for r in night.registrations:
        for key, value in r.inputs.items():
            if key not in r.secret_inputs:
                assert PRIVATE_KEY_MARK not in json.dumps(value, default=str), f"{r.type} {r.name}.{key} holds a private key in plain text"


def test_the_ca_and_the_always_on_certificates_do_not_depend_on_the_schedule(raw, tmp_path):
    noon = run_at(raw, tmp_path, NOON)
    night = run_at(raw, tmp_path, NIGHT)
    def view(run):
        return {
            (r.type, r.name): r.inputs for r in run.registrations if r.type.startswith("tls:") and not r.name.startswith("ray-hc-")
        }

    assert view(noon) == view(night)
    assert not [r for r in noon.registrations if r.type.startswith("tls:") and r.name.startswith("ray-hc-")]


# ---- Renewals under the engine's rules (scripts/ops/engine_rules.py) ----


@pytest.fixture(scope="module")
def deployed(night):
    """What Pulumi holds after an up and a refresh of the night's program, and the program again."""
    import copy

    from scripts.ops import engine_rules as er

    program = er.from_registrations(night.registrations)
    return er.refreshed(copy.deepcopy(program)), program


def renewal(deployed, name: str):
    """An up in which the certificate `name` is re-issued (pulumi-tls replaces it once it is
    ready for renewal, inside EARLY_RENEWAL_HOURS of its end)."""
    import copy

    from scripts.ops import engine_rules as er

    old, program = deployed
    (cert,) = [r for r in old if r.name == name and r.type in (SIGNED, SELF_SIGNED)]
    return er.up(old, copy.deepcopy(program), replace=[cert.urn])


def replaced(plan) -> set[tuple[str, str]]:
    return {(s.kind, s.name) for s in plan.changed() if s.op in ("delete-replaced", "create-replacement")}


def test_a_renewed_worker_certificate_drains_and_restarts_that_worker_only(deployed):
    plan = renewal(deployed, "ray-hc-1-tls-cert")
    assert replaced(plan) == {
        ("LocallySignedCert", "ray-hc-1-tls-cert"), ("Command", "ray-hc-1-tls-files"),
        ("Container", "ray-hc-1-ray"), ("Command", "ray-hc-1-drain-on-delete"),
    }
    # The new files are written, and the node drained, before its container goes.
    assert plan.before(("delete-replaced", "Command", "ray-hc-1-drain-on-delete"), ("delete-replaced", "Container", "ray-hc-1-ray"))
    assert plan.before(("create-replacement", "Command", "ray-hc-1-tls-files"), ("create-replacement", "Container", "ray-hc-1-ray"))
    assert plan.step("delete-replaced", "Command", "ray-hc-1-drain-on-delete").calls_provider


def test_a_renewed_ca_restarts_every_node_and_the_proxy_workers_drained_first(deployed, prod_config):
    plan = renewal(deployed, "ray-tls-ca")
    restarted = {name for kind, name in replaced(plan) if kind == "Container"}
    assert restarted == {f"{p.node.name}-ray" for p in prod_config.placed_nodes} | {"ray-ao-1-dashboard-proxy"}
    for placed in prod_config.placed_nodes:
        name = placed.node.name
        assert ("Command", f"{name}-tls-files") in replaced(plan) and ("LocallySignedCert", f"{name}-tls-cert") in replaced(plan)
        if not placed.node.head:
            assert plan.before(("delete-replaced", "Command", f"{name}-drain-on-delete"), ("delete-replaced", "Container", f"{name}-ray"))
    assert ("LocallySignedCert", "ray-operator-tls-cert") in replaced(plan)  # operators fetch the new one from the outputs
