"""Files delivered as files: a CopyToRemote per file into a staging directory, one command
installing them (components/render/remote_files.py StagedFiles, components/resources/staged_files.py).

Mocks tests check the wiring in the prod program: which copies, their remote paths and
asset text (the renderers' files), what they wait for, deleted_with, and that each install
command keeps the type, name and parent of the command that delivered those files before.
Real-shell tests run the very `create` and `delete` a command carries, with the files staged
as CopyToRemote stages them.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
from pathlib import Path

import pulumi
import pytest
from pulumi_command import remote

from components.render import dashboard_proxy, drain, firewall_rules, image_mirror, log_shipping
from components.render import monitoring_config as mc
from components.render.remote_files import STAGING_ROOT, StagedFiles
from components.resources.staged_files import install_staged_files
from scripts.ops import engine_rules as er
from scripts.ops.program_mocks import TEST_SECRETS, run_component

import test_engine_rules as engine

COMMAND = "command:remote:Command"
COPY = "command:remote:CopyToRemote"
NIGHT = "2026-11-22T22:00:00+01:00"
MONITOR = "ray-ao-2"
HEAD = "ray-ao-1"
PROXY_CONF = f"{dashboard_proxy.HOST_CONF_DIR}/{dashboard_proxy.NGINX_CONF}"
CONNECTION = remote.ConnectionArgs(host="192.0.2.10", user="ops", private_key="key", host_key="ssh-ed25519 AAAAtest")


def expected_deliveries(cfg) -> dict[str, tuple[str, dict[str, str]]]:
    """Install command name -> (the component type it belongs to, host path -> text), from the renderers."""
    at = dt.datetime.fromisoformat(NIGHT)
    deliveries = {
        f"{MONITOR}-monitoring-config": ("Monitoring", mc.config_files(cfg)),
        f"{MONITOR}-scrape-targets": ("Monitoring", mc.schedule_files(cfg, at)),
        f"{MONITOR}-log-archive": ("RayCluster", log_shipping.receiver_files(cfg)),
        f"{MONITOR}-image-mirror-config": ("ImageMirror", {image_mirror.CONFIG_FILE: image_mirror.config_yml(cfg)}),
        f"{HEAD}-dashboard-proxy-config": ("DashboardProxy", {PROXY_CONF: dashboard_proxy.nginx_conf(dashboard_proxy.proxy_settings(cfg))}),
    }
    for placed in cfg.placed_nodes:
        name = placed.node.name
        ufw = firewall_rules.ufw_script(firewall_rules.firewall_rules(cfg, placed))
        deliveries[f"{name}-ufw-guard"] = ("Firewall", firewall_rules.guard_files(ufw))
        deliveries[f"{name}-log-shipping"] = ("RayCluster", log_shipping.node_files(cfg))
        deliveries[f"{name}-docker-daemon-config"] = ("Vm", {image_mirror.DAEMON_JSON: image_mirror.daemon_json(cfg)})
        if not placed.node.head:
            files = drain.drain_files(drain.drain_settings(cfg, placed))
            deliveries[f"{name}-drain-program"] = ("RayNode", {f"{drain.DRAIN_DIR}/{p}": t for p, t in files.items()})
    return deliveries


def test_every_file_is_staged_by_a_copy_and_installed_by_its_command(night, prod_config):
    copies_seen = set()
    for command, (component, files) in expected_deliveries(prod_config).items():
        install = night.one(COMMAND, command)
        node = command[: len(MONITOR)]
        vm = night.one("vsphere:index/virtualMachine:VirtualMachine", node)
        # The same resource as before (type, name, parent): an existing stack updates it in place.
        assert f"ray-cluster:index:{component}$command:remote:Command::{command}" in install.urn
        assert "stdin" not in install.inputs and install.delete_before_replace
        # Replaced only where a reader must restart with its files (nginx: its container's replace_with).
        assert install.inputs.get("triggers") == (list(files.values()) if component == "DashboardProxy" else None)
        assert install.inputs["create"].startswith("sudo sh -c ") and install.inputs["delete"].startswith("sudo sh -c ")
        assert install.deleted_with == vm.urn
        copies = night.staged_copies(command)
        # One copy per rendered file with content, its text the renderer's, staged under the command's
        # own directory; the install makes the empty ones (package markers).
        assert {c.name: c.inputs["source"]["text"] for c in copies} == {f"{command}{p}": t for p, t in files.items() if t}
        assert all(path in install.inputs["create"] and path in install.inputs["delete"] for path in files)
        for copy in copies:
            assert copy.inputs["remotePath"] == f"{STAGING_ROOT}/{command}{copy.name[len(command):]}"
            assert copy.inputs["remotePath"] in install.inputs["create"]
            assert copy.parent == install.parent and copy.deleted_with == vm.urn
            assert copy.inputs["connection"] == install.inputs["connection"]
            assert not copy.inputs.get("triggers") and not copy.secret_inputs - {"connection"}
            # Copied once cloud-init made the SSH user (the firewall step waits for it), before the install.
            assert night.one(COMMAND, f"{node}-ufw").urn in copy.dependencies
            assert set(install.dependencies) == set(copy.dependencies) | {c.urn for c in copies}
        copies_seen |= {c.urn for c in copies}
    dashboards = night.one(COPY, f"{MONITOR}-grafana-dashboards")
    assert {c.urn for c in night.of_type(COPY)} == copies_seen | {dashboards.urn}, "no copy outside a delivery"


def test_no_secret_is_ever_staged(night):
    texts = "".join(c.inputs["source"].get("text", "") for c in night.of_type(COPY))
    for secret in TEST_SECRETS.values():
        assert secret.strip() not in texts
    # The Alertmanager config holds the receivers' secrets: a secret stdin, never a staged copy.
    alertmanager = night.one(COMMAND, f"{MONITOR}-alertmanager-config")
    assert "stdin" in alertmanager.secret_inputs and not night.staged_copies(f"{MONITOR}-alertmanager-config")


def test_what_waits_for_the_installed_files(night, prod_config):
    prometheus = night.one("docker:index/container:Container", f"{MONITOR}-prometheus")
    assert night.one(COMMAND, f"{MONITOR}-monitoring-config").urn in prometheus.dependencies
    mirror = night.one("docker:index/container:Container", f"{MONITOR}-image-mirror")
    assert night.one(COMMAND, f"{MONITOR}-image-mirror-config").urn in mirror.dependencies
    for placed in prod_config.placed_nodes:
        name = placed.node.name
        assert night.one(COMMAND, f"{name}-ufw").urn in night.one(COMMAND, f"{name}-ufw-guard").dependencies
        if not placed.node.head:  # the drain runs before its files are removed (dependents are deleted first)
            drain_on_delete = night.one("command:local:Command", f"{name}-drain-on-delete")
            assert night.one(COMMAND, f"{name}-drain-program").urn in drain_on_delete.dependencies


# ---- under the engine's rules (scripts/ops/engine_rules.py, the prod graph of tests/test_engine_rules.py) ----


def test_a_changed_config_file_is_copied_and_installed_in_place_restarting_no_container(prod_config):
    """CopyToRemote.Update copies again when the text changed; the install command, whose `create` names
    the hashes, re-runs in place (Prometheus re-reads its config): no replace, no container touched."""
    url = json.dumps({"monitoring.remoteWrite": {"url": "https://metrics.example.invalid/api/v1/write"}})
    plan = er.up(engine.state_after_up(), engine.new(changes=url))
    config = f"{prod_config.monitoring_host.node.name}-monitoring-config"
    assert {(s.op, s.kind, s.name) for s in plan.changed()} == {
        ("update", "CopyToRemote", f"{config}{mc.PROMETHEUS_CONFIG.host}/{mc.PROMETHEUS_YML}"),
        ("update", "Command", config),
    }


def test_a_new_nginx_config_replaces_the_proxy_with_its_files_removed_before_they_are_installed():
    """The proxy's config command is replaced (its trigger) and deleted first (delete-before-replace:
    otherwise the old command's delete would remove the new file); the container goes first with it
    (replace_with) and comes back after."""
    program = engine.new()
    config = f"{HEAD}-dashboard-proxy-config"
    for r in program:
        if r.name == config and r.type.endswith(":Command"):
            r.inputs["triggers"] = ["a new nginx.conf"]
    plan = er.up(engine.state_after_up(), program)
    proxy = ("Container", f"{HEAD}-dashboard-proxy")
    assert [(s.op, s.kind, s.name) for s in plan.changed()] == [
        ("delete-replaced", *proxy), ("delete-replaced", "Command", config),
        ("create-replacement", "Command", config), ("create-replacement", *proxy),
    ]
    assert plan.step("delete-replaced", "Command", config).calls_provider


# ---- the commands, run by a real shell on files staged as SFTP stages them ----


@pytest.fixture
def host(tmp_path):
    """A home to stage in, a root for the host paths, and `sudo` that just runs its command."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "sudo").chmod(0o755)
    (tmp_path / "home").mkdir()
    return tmp_path


def stage(copies, home: Path) -> None:
    """What each CopyToRemote does (copyTextContent): parents made, the text written at remotePath."""
    for copy in copies:
        target = home / copy.inputs["remotePath"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(copy.inputs["source"]["text"])


def sh(command: str, host: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{host / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", command], cwd=host / "home", env=env, capture_output=True, text=True, timeout=30)


def delivered(host: Path, **hooks) -> tuple[StagedFiles, dict]:
    files = {f"{host}/etc/thing/a.conf": "one\n", f"{host}/opt/x/pkg/__init__.py": "", f"{host}/opt/x/pkg/b.py": "print('b')\n"}
    staged = StagedFiles("n1-things", files, **hooks)

    def build():
        vm = pulumi.CustomResource("test:index:Vm", "vm", {})
        install_staged_files(staged, CONNECTION, vm, vm, parent=vm)

    run = run_component(build)
    stage(run.of_type(COPY), host / "home")
    return staged, run.one(COMMAND, staged.name).inputs


def test_create_installs_every_staged_file_and_runs_again_unchanged(host):
    staged, command = delivered(host, then=f"echo installed >> {host}/log")
    for _ in range(2):  # a re-run (an update) converges to the same files
        result = sh(command["create"], host)
        assert result.returncode == 0, result.stderr
        for path, text in staged.files.items():
            assert Path(path).read_text() == text
            assert stat.S_IMODE(Path(path).stat().st_mode) == 0o644
    assert (host / "log").read_text() == "installed\ninstalled\n"
    assert not list(host.rglob("*.tmp")), "no temporary file left behind"


def test_create_refuses_a_staged_copy_that_is_not_what_was_rendered(host):
    staged, command = delivered(host, then=f"echo installed >> {host}/log")
    assert sh(command["create"], host).returncode == 0
    tampered = host / "home" / staged.staged(f"{host}/etc/thing/a.conf")
    tampered.write_text("edited by hand\n")
    result = sh(command["create"], host)
    assert result.returncode != 0 and "FAILED" in result.stdout
    assert Path(f"{host}/etc/thing/a.conf").read_text() == "one\n" and (host / "log").read_text() == "installed\n"


def test_delete_removes_the_files_and_their_staging_directory(host):
    staged, command = delivered(host, before_removal=f"echo stop >> {host}/log", after_removal=f"echo reload >> {host}/log")
    assert sh(command["create"], host).returncode == 0
    result = sh(command["delete"], host)
    assert result.returncode == 0, result.stderr
    assert not any(Path(path).exists() for path in staged.files)
    assert not (host / "home" / staged.stage_dir).exists() and (host / "home" / STAGING_ROOT).is_dir()
    assert (host / "log").read_text() == "stop\nreload\n"


def test_a_relative_host_path_is_refused():
    with pytest.raises(ValueError, match="must be absolute"):
        StagedFiles("n1-things", {"etc/a.conf": "x"})


def test_the_drain_files_delivered_locally_as_on_a_vm(prod_config, tmp_path):
    """scripts/ops/local_drain.py: the drain tests' and rehearsal's files, by the same install script."""
    from scripts.ops import local_drain

    files = drain.drain_files(drain.drain_settings(prod_config, prod_config.placed("ray-hc-1")))
    root = local_drain.deliver(files, tmp_path / "drain")
    assert {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()} == files
