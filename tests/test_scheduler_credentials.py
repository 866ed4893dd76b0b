"""The scheduler's secrets as systemd credentials: files only its user reads, found by path.

The unit and the crontab are checked as text (and the unit by `systemd-analyze
verify`); the Ray side for real: a token-auth Ray cluster on 127.0.0.1, and the
scheduler's own Ray client (`ray_state`) given the token only as a file path
(RAY_AUTH_TOKEN_PATH), as the unit gives it. No systemd runs services here, so
the decryption itself (`LoadCredentialEncrypted=`) is systemd's, not tested.
"""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from components.render import ray_start
from conftest import ROOT, require_tool
from scripts.ops import credentials, scheduling
from scripts.ops.local_cluster import LocalCluster, localize

SERVICE = ROOT / "scripts/systemd/ray-cluster-scheduler.service"
TIMER = ROOT / "scripts/systemd/ray-cluster-scheduler.timer"
CRONTAB = ROOT / "scripts/cron/ray-cluster.crontab"
SECRET_VARIABLES = {"RAY_AUTH_TOKEN", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_ACCESS_TOKEN"}


def directives(text: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", text, re.MULTILINE)


def test_the_unit_loads_every_secret_as_an_encrypted_credential_and_passes_paths_only():
    service = SERVICE.read_text()
    assert directives(service, "EnvironmentFile") == []
    loaded = dict(line.split(":", 1) for line in directives(service, "LoadCredentialEncrypted"))
    assert set(loaded) == set(credentials.BY_PATH)
    assert all(path.startswith("/etc/credstore.encrypted/") for path in loaded.values())
    environment = dict(line.split("=", 1) for line in directives(service, "Environment"))
    # Each tool reads its secret from the credential's file in $CREDENTIALS_DIRECTORY (%d).
    assert {environment[var] for var in credentials.BY_PATH.values()} == {f"%d/{name}" for name in credentials.BY_PATH}
    assert environment["RAY_AUTH_MODE"] == "token" and not SECRET_VARIABLES & set(environment)


def test_the_unit_is_valid_for_systemd(tmp_path):
    require_tool("systemd-analyze", "systemd (with netplan.io)")
    # The unit as shipped, but with an ExecStart that exists here (verify checks it is executable).
    service = tmp_path / SERVICE.name
    service.write_text(SERVICE.read_text().replace("/opt/ray-cluster/venv/bin/python", sys.executable))
    (tmp_path / TIMER.name).write_text(TIMER.read_text())
    verified = subprocess.run(["systemd-analyze", "verify", str(service), str(tmp_path / TIMER.name)], capture_output=True, text=True)
    assert verified.returncode == 0 and verified.stdout + verified.stderr == "", verified.stdout + verified.stderr
    # ... and verify does read these settings: a misspelt one is reported.
    service.write_text(re.sub("^LoadCredentialEncrypted=", "LoadCredentialEncryptd=", service.read_text(), count=1, flags=re.MULTILINE))
    misspelt = subprocess.run(["systemd-analyze", "verify", str(service)], capture_output=True, text=True)
    assert "Unknown key 'LoadCredentialEncryptd'" in misspelt.stderr


def test_the_crontab_passes_paths_to_owner_only_files_never_values():
    crontab = CRONTAB.read_text()
    variables = dict(re.findall(r"^([A-Z_]+)=(\S+)$", crontab, re.MULTILINE))
    assert not SECRET_VARIABLES & set(variables) and "scheduler.env" not in crontab
    folder = "/etc/ray-cluster/credentials"
    assert {variables[var] for var in credentials.BY_PATH.values()} == {f"{folder}/{name}" for name in credentials.BY_PATH}
    assert f"install -d -m 0700 -o ray-cluster {folder}" in crontab and "install -m 0400 -o ray-cluster" in crontab


def test_a_pulumi_access_token_goes_to_the_pulumi_cli_only(tmp_path, monkeypatch):
    (tmp_path / credentials.PULUMI_ACCESS_TOKEN).write_text("pul-0123456789\n")
    assert credentials.pulumi_cli_env({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == {"PULUMI_ACCESS_TOKEN": "pul-0123456789"}
    assert credentials.pulumi_cli_env({"CREDENTIALS_DIRECTORY": str(tmp_path / "none")}) == {}
    assert credentials.pulumi_cli_env({}) == {}
    # The Automation API adds a workspace's env_vars to every Pulumi CLI it runs
    # (pulumi/automation/_local_workspace.py, LocalWorkspace._run_pulumi_cmd_sync); not to this process.
    opened = {}
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setattr(scheduling.auto, "select_stack", lambda name, work_dir, opts: opened.update(name=name, env=opts.env_vars))
    scheduling.open_stack("prod", tmp_path)
    assert opened == {"name": "prod", "env": {"PULUMI_ACCESS_TOKEN": "pul-0123456789"}}
    assert "PULUMI_ACCESS_TOKEN" not in os.environ


# --- Ray reads the token from the credential's file -------------------------------------------------

OFFSET = 7000  # the shipped ports moved by this: apart from the other real-Ray tests'
WORKER_PORTS = (42000, 42199)

ALIVE_NODES = "import json, sys; from scripts.ops import ray_state; print(json.dumps([n.name for n in ray_state.alive_nodes(sys.argv[1])]))"


@pytest.fixture(scope="module")
def head(prod_config):
    rendered = [ray_start.node_settings(prod_config, prod_config.head)]
    root = Path(tempfile.mkdtemp(prefix="cred", dir="/tmp"))  # short: Ray's socket paths are limited
    try:
        (local,) = localize(rendered, root, OFFSET, 10, WORKER_PORTS)
        with LocalCluster([dataclasses.replace(local, num_cpus=1)]) as running:
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


def alive_nodes_with_token_file(head, token_file: Path) -> subprocess.CompletedProcess:
    """The scheduler's Ray client with the environment the unit gives it: mode and a path, no token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    return subprocess.run(
        [sys.executable, "-c", ALIVE_NODES, head.dashboard_url], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def credential(tmp_path: Path, name: str, value: str) -> Path:
    """A file as systemd hands it over: in a directory and a file only its owner reads."""
    directory = tmp_path / "credentials"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / name
    path.write_text(value)
    path.chmod(0o400)
    return path


@pytest.mark.timeout(600)
def test_the_schedulers_ray_client_authenticates_from_the_token_file(head, tmp_path):
    found = alive_nodes_with_token_file(head, credential(tmp_path, "ray-auth-token", head.token))
    assert found.returncode == 0, found.stderr[-3000:]
    assert json.loads(found.stdout.splitlines()[-1]) == [head.head.node_name]


@pytest.mark.timeout(600)
def test_a_wrong_token_file_is_refused(head, tmp_path):
    refused = alive_nodes_with_token_file(head, credential(tmp_path, "ray-auth-token", "0" * 64))
    assert refused.returncode != 0
    assert re.search(r"(?i)unauthenticated|authentication|token", refused.stderr), refused.stderr[-3000:]
