"""Least privilege on the VMs: cAdvisor unprivileged, Grafana's password rotation that
really rotates, anonymous Grafana only when configured, monitoring images by digest.

The rotation step is the rendered shell run by the real `sh`, with `sudo`, `docker`
and `sleep` on PATH replaced by recorders (no Docker engine here); the wiring is
checked under Pulumi's mocks.
"""
import os
import subprocess
from pathlib import Path


from components.model import config
from components.render import containers, image_mirror
from components.render import monitoring_config as mc
from conftest import prod_raw
from scripts.ops.program_mocks import TEST_SECRETS, run_program

NIGHT = "2026-11-22T22:00:00+01:00"
COMMAND = "command:remote:Command"
CONTAINER = "docker:index/container:Container"


def every_container(cfg):
    return [(p.node.name, spec) for p in cfg.placed_nodes for spec in containers.node_containers(cfg, p)]


# --- cAdvisor and friends: no privileged container -----------------------------------------------


def test_no_container_is_privileged_or_gets_a_host_device(prod_config):
    for node, spec in every_container(prod_config):
        assert not spec.privileged and not spec.devices, (node, spec.name)


def test_cadvisor_mounts_only_the_documented_set_read_only(prod_config):
    spec = containers.cadvisor_container(prod_config)
    assert {(b.source, b.target) for b in spec.binds} == {
        ("/", "/rootfs"), ("/var/run", "/var/run"), ("/sys", "/sys"), ("/var/lib/docker", "/var/lib/docker"),
    }
    assert all(b.read_only for b in spec.binds) and not spec.pid_host
    # Process metrics are what would need --privileged and --pid=host: never asked for.
    assert not any(arg.startswith(("--enable_metrics", "--disable_metrics")) for arg in spec.command)



def test_the_program_runs_cadvisor_unprivileged_on_every_node(night, prod_config):
    cadvisors = [c for c in night.of_type(CONTAINER) if c.name.endswith("-cadvisor")]
    assert len(cadvisors) == len(prod_config.placed_nodes)
    for container in cadvisors:
        assert not container.inputs.get("privileged") and not container.inputs.get("devices"), container.name
        assert all(v["readOnly"] for v in container.inputs["volumes"]), container.name


# --- Grafana: anonymous viewing is a config choice, off by default ---------------------------------


def test_grafana_asks_everyone_to_log_in_by_default(prod_config):
    env = mc.grafana_env(prod_config)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_anonymous_viewing_when_configured_is_viewer_only(raw):
    raw["monitoring"]["grafanaAnonymousViewing"] = True
    env = mc.grafana_env(config.load(raw))
    assert (env["GF_AUTH_ANONYMOUS_ENABLED"], env["GF_AUTH_ANONYMOUS_ORG_ROLE"]) == ("true", "Viewer")


# --- Grafana: rotating the admin password --------------------------------------------------------

RECORDER = """#!/bin/sh
# Records one call: argv (one word a line) and, for `docker exec -i`, what came on stdin.
log={log}
n=$(ls "$log" | wc -l)
printf '%s\\n' "$(basename "$0")" "$@" > "$log/$n.argv"
[ "$(basename "$0")" = docker ] && case " $* " in *" exec -i "*) cat > "$log/$n.stdin" ;; esac
if [ "$(basename "$0")" = docker ] && [ "$2" = grafana ] && [ "$3" = wget ]; then
    left=$(cat {state}); [ "$left" -le 0 ] && exit 0
    echo $((left - 1)) > {state}; exit 1
fi
[ "$(basename "$0")" = sudo ] && exec "$@"
exit 0
"""


def rotate(tmp_path: Path, password: str, unhealthy_probes: int):
    """Runs the rendered rotation as the Command would (its stdin: the password); returns
    (exit status, stderr, [(argv, stdin or None)] of every docker call)."""
    bin_dir, log, state = tmp_path / "bin", tmp_path / "log", tmp_path / "unhealthy"
    bin_dir.mkdir(), log.mkdir()
    state.write_text(str(unhealthy_probes))
    for tool in ("sudo", "docker", "sleep"):
        (bin_dir / tool).write_text(RECORDER.format(log=log, state=state))
        (bin_dir / tool).chmod(0o755)
    done = subprocess.run(
        ["sh", "-c", mc.grafana_password_rotation()], input=password + "\n", capture_output=True, text=True,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=60,
    )
    calls = []
    for argv in sorted(log.glob("*.argv"), key=lambda p: int(p.stem)):
        words = argv.read_text().splitlines()
        stdin = argv.with_suffix(".stdin")
        if words[0] == "docker":
            calls.append((words[1:], stdin.read_text() if stdin.exists() else None))
    return done.returncode, done.stderr, calls


def test_rotation_waits_for_grafana_then_resets_the_password_from_stdin(tmp_path):
    password = "new-grafana-password-42"
    status, stderr, calls = rotate(tmp_path, password, unhealthy_probes=3)
    assert status == 0, stderr
    probes, (reset, stdin) = calls[:-1], calls[-1]
    assert len(probes) == 4 and all(argv[:3] == ["exec", "grafana", "wget"] for argv, _ in probes)
    assert reset == ["exec", "-i", "grafana", "grafana", "cli", "admin", "reset-admin-password", "--password-from-stdin"]
    assert stdin == password + "\n"
    assert not any(password in " ".join(argv) for argv, _ in calls), "the password on a command line"


def test_rotation_fails_when_grafana_never_answers(tmp_path):
    status, stderr, calls = rotate(tmp_path, "whatever-password", unhealthy_probes=10**6)
    assert status != 0 and "grafana never answered" in stderr
    assert len(calls) == mc.GRAFANA_READY_TRIES and not any("reset-admin-password" in argv for argv, _ in calls)


def test_a_new_password_reruns_the_reset_with_it(tmp_path, night):
    """pulumi-command replaces a Command whose triggers change (DESIGN.md), running its create again."""
    host = config.load(prod_raw()).monitoring_host.node.name
    raw = prod_raw()
    raw["at"] = NIGHT
    rotated = run_program(raw, tmp_path, secrets={**TEST_SECRETS, "grafanaAdminPassword": "rotated-password"})
    before, after = (run.one(COMMAND, f"{host}-grafana-password-reset") for run in (night, rotated))
    grafana = night.one(CONTAINER, f"{host}-grafana")
    assert before.inputs["create"] == mc.grafana_password_rotation()
    assert before.inputs["stdin"] == TEST_SECRETS["grafanaAdminPassword"] and "stdin" in before.secret_inputs
    assert after.inputs["stdin"] == "rotated-password" and "stdin" in after.secret_inputs
    assert before.inputs["triggers"] == [TEST_SECRETS["grafanaAdminPassword"], f"{host}-grafana-id"]
    assert after.inputs["triggers"][0] == "rotated-password" and "triggers" in after.secret_inputs
    assert grafana.urn in before.dependencies, "runs once the container is there"
    # The container's own variable, read only by a new database, is the same secret.
    env = dict(e.split("=", 1) for e in grafana.inputs["envs"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == before.inputs["stdin"]


# --- images by digest ------------------------------------------------------------------------------


def test_a_monitoring_image_pinned_by_digest_is_pulled_by_it(raw):
    """The monitoring host pulls the pinned digest from upstream (Docker verifies it) and pushes
    that image into the LAN mirror; the nodes pull the mirror's copy (render/image_mirror.py)."""
    digest = "sha256:" + "ab" * 32
    raw["monitoring"]["images"] = {"cadvisor": f"gcr.io/cadvisor/cadvisor:v0.52.1@{digest}"}
    cfg = config.load(raw)
    copy = image_mirror.copy_script(cfg)
    mirror = f"{cfg.monitoring_host.node.ip}:5000"
    assert f"docker tag gcr.io/cadvisor/cadvisor:v0.52.1@{digest} {mirror}/gcr.io/cadvisor/cadvisor:v0.52.1" in copy
    cadvisors = {spec.image for _, spec in every_container(cfg) if spec.name == "cadvisor"}
    assert cadvisors == {f"{mirror}/gcr.io/cadvisor/cadvisor:v0.52.1"}
