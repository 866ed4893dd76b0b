"""The program's day-2 wiring under Pulumi's mocks: the resource options the engine's
ordering depends on (tests/test_engine_rules.py runs them through the engine's rules),
the SSH the program sets up, and what a run leaves on the machine that runs it."""
import json

import pytest

from scripts.ops.program_mocks import run_program
from test_program import AO, COMMAND, CONTAINER, DOCKER_PROVIDER, HC, IMAGE, LOCAL_COMMAND, NIGHT, NOON, VM, VOLUME



def test_ssh_connections_pin_the_generated_host_key_and_name_no_file(night, prod_config):
    for placed in prod_config.placed_nodes:
        name, ip = placed.node.name, str(placed.node.ip)
        host_key = night.one("tls:index/privateKey:PrivateKey", f"{name}-host-key")
        ufw = night.one(COMMAND, f"{name}-ufw")
        connection = ufw.inputs["connection"]
        assert connection["hostKey"].startswith("ssh-ed25519 ") and connection["host"] == ip
        # A VM that is still booting is dialled for minutes, not pulumi-command's default ~11 s.
        assert connection["dialErrorLimit"] * connection["perDialTimeout"] >= 600
        provider = night.one(DOCKER_PROVIDER, f"{name}-docker")
        assert provider.inputs["host"] == f"ssh://rayops@{ip}"
        opts = provider.inputs["sshOpts"]
        opts = json.loads(opts) if isinstance(opts, str) else opts
        settings = dict(o.split("=", 1) for o in opts[1::2])
        assert opts[0::2] == ["-o"] * len(settings)  # options only: no -i identity file
        assert settings["StrictHostKeyChecking"] == "yes"
        assert settings["KnownHostsCommand"] == f"/bin/echo {ip} {connection['hostKey'].split()[0]} {connection['hostKey'].split()[1]}"
        assert settings["UserKnownHostsFile"] == settings["GlobalKnownHostsFile"] == "/dev/null"
        assert int(settings["ConnectTimeout"]) > 0 and int(settings["ServerAliveInterval"]) > 0
        assert host_key.inputs["algorithm"] == "ED25519"


def test_everything_on_a_vm_goes_with_it_but_the_drain(night, prod_config):
    """Fixed names (VM, containers, volumes) need delete-before-replace; what runs on a VM is
    `deleted_with` it (replaced with it, never deleted over SSH when the VM goes anyway); the
    drain is not, so it still runs; a replaced worker container drains first."""
    for placed in prod_config.placed_nodes:
        name = placed.node.name
        vm = night.one(VM, name)
        assert vm.delete_before_replace
        provider = night.one(DOCKER_PROVIDER, f"{name}-docker")
        on_vm = [r for r in night.registrations if r.provider == f"{provider.urn}::{provider.name}-id"]
        on_vm += [provider] + [r for r in night.of_type(COMMAND) if r.name.startswith(f"{name}-") and not r.name.endswith("drain-on-delete")]
        assert {r.type for r in on_vm} >= {CONTAINER, IMAGE, COMMAND, DOCKER_PROVIDER}, name
        assert {r.name: r.deleted_with for r in on_vm} == {r.name: vm.urn for r in on_vm}
        assert all(r.delete_before_replace for r in on_vm if r.type in (CONTAINER, VOLUME)), name
        if not placed.node.head:
            drain_on_delete = night.one(LOCAL_COMMAND, f"{name}-drain-on-delete")
            assert drain_on_delete.delete_before_replace and drain_on_delete.deleted_with == ""
            assert drain_on_delete.inputs["triggers"] == [f"{name}-ray-id"]  # the container's id
            assert drain_on_delete.property_dependencies["triggers"] == [night.one(CONTAINER, f"{name}-ray").urn]


def test_worker_containers_take_the_head_container_as_an_input(night, prod_config):
    head = night.one(CONTAINER, f"{prod_config.head.node.name}-ray")
    for placed in prod_config.placed_nodes:
        container = night.one(CONTAINER, f"{placed.node.name}-ray")
        labels = {label["label"]: label["value"] for label in container.inputs.get("labels", [])}
        if placed.node.head:
            assert "ray-cluster.head-container" not in labels
        else:
            assert labels["ray-cluster.head-container"] == f"{head.name}-id"
            assert container.property_dependencies["labels"] == [head.urn]


def test_vm_fields_set_at_clone_are_never_diffed(night):
    for vm in night.of_type(VM):
        assert set(vm.ignore_changes) >= {"clone", "extraConfig"}
        # Every ignored path names an input the VM really has (a typo would ignore nothing).
        for path in vm.ignore_changes:
            top = path.split("[")[0].split(".")[0]
            assert top in vm.inputs, path


def test_health_check_durations_are_written_as_the_docker_provider_reads_them(night):
    for container in night.of_type(CONTAINER):
        for key in ("interval", "timeout", "startPeriod"):
            value = container.inputs["healthcheck"][key]
            seconds = int(value[:-1]) if value[:-1].isdigit() else None
            # Go's Duration.String(): whole minutes carry an "m"; "60s" would read back as "1m0s".
            assert seconds is None or seconds < 60, (container.name, key, value)


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
def test_a_run_writes_nothing_under_home(raw, tmp_path, preview):
    home = tmp_path / "home"
    home.mkdir()
    raw["at"] = NIGHT
    run = run_program(raw, home, preview=preview)
    assert run.of_type(VM)  # the program did run
    assert [str(p.relative_to(home)) for p in home.rglob("*")] == []


def test_docker_settings_in_the_environment_are_refused_before_any_resource(raw, tmp_path, monkeypatch):
    from scripts.ops import program_mocks

    registered = []
    original = program_mocks.RecordingMonitor.RegisterResource
    monkeypatch.setattr(
        program_mocks.RecordingMonitor, "RegisterResource",
        lambda self, request: registered.append(request.type) or original(self, request),
    )
    monkeypatch.setenv("DOCKER_CONTEXT", "someone-elses")
    raw["at"] = NIGHT
    with pytest.raises(Exception, match="DOCKER_CONTEXT set in the environment would override every node's Docker host"):
        run_program(raw, tmp_path)
    assert [t for t in registered if t != "pulumi:pulumi:Stack"] == []


def test_the_schedulers_instant_comes_from_the_environment_and_wins(raw, tmp_path, monkeypatch):
    raw["at"] = NOON  # a pin someone left in the stack file
    monkeypatch.setenv("RAY_CLUSTER_AT", NIGHT)
    run = run_program(raw, tmp_path)
    assert sorted(r.name for r in run.of_type(VM)) == sorted(AO + HC)


def test_every_node_keeps_its_authorized_keys_equal_to_the_config(raw, tmp_path, prod_config):
    from components.render import cloud_init

    new_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRotatedKeyRotatedKeyRotatedKeyRotated new@ray-cluster"
    raw["at"] = NIGHT
    raw["ssh"]["additionalPublicKeys"] = [new_key]
    run = run_program(raw, tmp_path)
    for name in AO + HC:
        command = run.one(COMMAND, f"{name}-authorized-keys")
        assert command.inputs["stdin"] == f"{prod_config.ssh.public_key}\n{new_key}\n"
        assert command.inputs["create"] == cloud_init.AUTHORIZED_KEYS_UPDATE
        assert command.deleted_with == run.one(VM, name).urn


def test_the_authorized_keys_update_replaces_the_file_owner_only(tmp_path, prod_config):
    from components.render import cloud_init

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAAold old@key\n")
    text = cloud_init.authorized_keys(prod_config)
    import subprocess

    subprocess.run(["sh", "-c", cloud_init.AUTHORIZED_KEYS_UPDATE], input=text, text=True, check=True, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    written = home / ".ssh" / "authorized_keys"
    assert written.read_text() == text and written.stat().st_mode & 0o077 == 0
    assert not (home / ".ssh" / "authorized_keys.new").exists()
