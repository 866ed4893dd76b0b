"""Run the Pulumi program under mocks and record what it registers.

`run_program(raw)` evaluates `__main__.py` with the given `ray-cluster:*` config
(plus test secrets) and returns every registration: type, name, inputs, parent,
provider, dependencies, and which inputs arrived as secrets.
"""
from __future__ import annotations

import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "__main__.py"

# The prod stack's ssh.publicKey: TEST_SECRETS' private key is its private half.
TEST_SSH_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk1y8cG9b0ZbC0Jp8m4t6FvYk2mY3o7lq0m2Zc1vXyQ"


def fake_private_key(public_key: str) -> str:
    """A stand-in OpenSSH private key; the fake pulumi-tls derives `public_key` from it (any other
    text derives a public key of its own)."""
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{public_key}\n-----END OPENSSH PRIVATE KEY-----\n"


def derived_public_key(private_key: str) -> str:
    """What the fake pulumi-tls `getPublicKey` answers for a private key."""
    body = private_key.strip().splitlines()[1:-1]
    if len(body) == 1 and body[0].startswith("ssh-"):
        return body[0]
    return f"ssh-ed25519 AAAA{hashlib.sha256(private_key.encode()).hexdigest()}"


TEST_SECRETS = {
    "sshPrivateKey": fake_private_key(TEST_SSH_PUBLIC_KEY),
    "rayToken": "test-ray-token-0123456789abcdef",
    "grafanaAdminPassword": "test-grafana-password",
}

TEMPLATE = {
    "id": "4217a6b4-template-uuid",
    "guestId": "ubuntu64Guest",
    "scsiType": "pvscsi",
    "firmware": "efi",
    "disks": [{"size": 40, "thinProvisioned": True, "eagerlyScrub": False, "label": "Hard disk 1", "unitNumber": 0}],
    "networkInterfaceTypes": ["vmxnet3"],
}


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    inputs: dict
    parent: str
    provider: str
    dependencies: list[str]
    secret_inputs: set[str] = field(default_factory=set)
    delete_before_replace: bool = False
    replace_with: list[str] = field(default_factory=list)
    custom: bool = True
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    deleted_with: str = ""
    ignore_changes: list[str] = field(default_factory=list)
    replace_on_changes: list[str] = field(default_factory=list)
    retain_on_delete: bool = False
    alias_names: list[str] = field(default_factory=list)  # earlier names, same parent and type


def _secret_keys(struct) -> set[str]:
    keys = set()
    for key, value in struct.fields.items():
        if value.WhichOneof("kind") == "struct_value":
            sig = value.struct_value.fields.get(rpc._special_sig_key)
            if sig is not None and sig.string_value == rpc._special_secret_sig:
                keys.add(key)
    return keys


def _unwrap_secrets(value):
    """Inputs as plain values (which ones were secret is recorded separately); an archive or a
    text asset as the engine sees it, its signature and its path or text."""
    if isinstance(value, pulumi.FileArchive):
        return {rpc._special_sig_key: rpc._special_archive_sig, "path": value.path}
    if isinstance(value, pulumi.StringAsset):
        return {rpc._special_sig_key: rpc._special_asset_sig, "text": value.text}
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return _unwrap_secrets(value["value"])
        return {k: _unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(v) for v in value]
    return value


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    inputs=_unwrap_secrets(rpc.deserialize_properties(request.object)),
                    parent=request.parent,
                    provider=request.provider,
                    dependencies=list(request.dependencies),
                    secret_inputs=_secret_keys(request.object),
                    delete_before_replace=request.deleteBeforeReplace,
                    replace_with=list(request.replace_with),
                    custom=request.custom,
                    property_dependencies={
                        key: list(deps.urns) for key, deps in request.propertyDependencies.items() if deps.urns
                    },
                    deleted_with=request.deletedWith,
                    ignore_changes=list(request.ignoreChanges),
                    replace_on_changes=list(request.replaceOnChanges),
                    alias_names=[a.spec.name for a in request.aliases if a.spec.name],
                    retain_on_delete=request.retainOnDelete,
                )
            )
        return response


def image_id(reference: str) -> str:
    """The id the fake Docker provider gives a pulled image."""
    return f"sha256:{hashlib.sha256(reference.encode()).hexdigest()}"


def generated_password(resource_name: str) -> str:
    """What the fake random provider generates for the RandomPassword of that name."""
    return f"generated-{hashlib.sha256(resource_name.encode()).hexdigest()[:32]}"


class ClusterMocks(pulumi.runtime.Mocks):
    """Fake providers: echo inputs, add the computed outputs the program reads."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        digest = hashlib.sha256(args.name.encode()).hexdigest()
        if args.typ == "tls:index/privateKey:PrivateKey":
            outputs["privateKeyOpenssh"] = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{digest}\n-----END OPENSSH PRIVATE KEY-----\n"
            outputs["publicKeyOpenssh"] = f"ssh-ed25519 AAAA{digest[:40]}\n"
            outputs["privateKeyPem"] = f"-----BEGIN PRIVATE KEY-----\n{digest}\n-----END PRIVATE KEY-----\n"
        elif args.typ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
            outputs["certPem"] = f"-----BEGIN CERTIFICATE-----\n{args.name} {digest}\n-----END CERTIFICATE-----\n"
        elif args.typ == "tls:index/certRequest:CertRequest":
            outputs["certRequestPem"] = f"-----BEGIN CERTIFICATE REQUEST-----\n{digest}\n-----END CERTIFICATE REQUEST-----\n"
        elif args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = image_id(args.inputs["name"])
        elif args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = generated_password(args.name)
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "vsphere:index/getVirtualMachine:getVirtualMachine":
            return dict(TEMPLATE)
        if args.token == "tls:index/getPublicKey:getPublicKey":
            return {"publicKeyOpenssh": derived_public_key(args.args["privateKeyOpenssh"]) + "\n", "algorithm": "ED25519"}
        if args.token == "vsphere:index/getComputeCluster:getComputeCluster":
            return {"id": "domain-c1", "resourcePoolId": "resgroup-1"}
        return {"id": f"{args.token.rsplit(':', 1)[-1]}-{args.args.get('name')}"}


@dataclass
class ProgramRun:
    registrations: list[Registration]
    outputs: dict[str, Any]

    def of_type(self, type_token: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_token]

    def staged_copies(self, command: str) -> list[Registration]:
        """The CopyToRemote resources the install command `command` waits for."""
        depends_on = set(self.one("command:remote:Command", command).dependencies)
        return [r for r in self.of_type("command:remote:CopyToRemote") if r.urn in depends_on]

    def one(self, type_token: str, name: str) -> Registration:
        (match,) = [r for r in self.registrations if r.type == type_token and r.name == name]
        return match

    def by_urn(self, urn: str) -> Registration:
        (match,) = [r for r in self.registrations if r.urn == urn]
        return match


def run_program(
    raw: dict, tmp_path: Path, secrets: Optional[dict] = None, stack: str = "prod", preview: bool = False
) -> ProgramRun:
    """Evaluate __main__.py under mocks with `raw` as the stack's ray-cluster config.

    HOME is `tmp_path` while the program runs: nothing it might write lands in a real home.
    """
    secrets = TEST_SECRETS if secrets is None else secrets
    monitor = RecordingMonitor(ClusterMocks())
    settings.set_root_resource(None)  # a fresh stack per run
    pulumi.runtime.set_mocks(ClusterMocks(), project="ray-cluster", stack=stack, preview=preview, monitor=monitor)
    flat = {f"ray-cluster:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    flat.update({f"ray-cluster:{k}": v for k, v in secrets.items()})
    pulumi.runtime.set_all_config(flat, [f"ray-cluster:{k}" for k in secrets])

    outputs: dict[str, Any] = {}
    original_export = pulumi.export
    pulumi.export = lambda key, value: outputs.__setitem__(key, value)  # capture exports, resolved below
    try:
        import os

        home = os.environ.get("HOME")
        os.environ["HOME"] = str(tmp_path)
        try:
            pulumi.runtime.test(lambda: runpy.run_path(str(MAIN), run_name="__main__"))()
        finally:
            if home is not None:
                os.environ["HOME"] = home
    finally:
        pulumi.export = original_export
    return ProgramRun(monitor.registrations, outputs)


def run_component(build: Callable[[], Any], stack: str = "test") -> ProgramRun:
    """Run `build()` (which creates one component) under the same mocks, and record what it registers."""
    monitor = RecordingMonitor(ClusterMocks())
    settings.set_root_resource(None)
    pulumi.runtime.set_mocks(ClusterMocks(), project="ray-cluster", stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.test(build)()
    return ProgramRun(monitor.registrations, {})
