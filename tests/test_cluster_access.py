"""scripts/with_cluster_access.py for real, without Ray: the stack outputs (from a throwaway
CA, scripts/ops/local_tls.py) reach a command as Ray's TLS and token settings, in files only
the owner reads, outside $HOME, gone however the command ends; signals meant for the command
reach it once; a stack without the outputs is refused, naming them.

Every run gets its own HOME and TMPDIR: an empty TMPDIR afterwards is the proof that the
credentials' directory is gone, an empty HOME that nothing was written there.
"""
from __future__ import annotations

import contextlib
import json
import os
import pty
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from components.model.errors import CONFIG_ERROR_EXIT
from components.render import tls
from scripts.ops.local_tls import LocalCa

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = [sys.executable, "-m", "scripts.with_cluster_access", "--stack", "prod"]
RAY_VARIABLES = ("RAY_USE_TLS", "RAY_TLS_CA_CERT", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_AUTH_MODE",
                 "RAY_AUTH_TOKEN", "REQUESTS_CA_BUNDLE", "RAY_ADDRESS", "RAY_CLUSTER_CLIENT_ADDRESS")
# The command: what it was given, written to argv[1] (as JSON), then, with "wait", it counts the
# SIGINTs and SIGTERMs it receives in argv[1].signals and exits 3 half a second after the first
# (or after a minute without one).
PROBE = """
import json, os, signal, sys, time
seen = {name: os.environ.get(name) for name in %r}
files = {name: {"text": open(path).read(), "mode": os.stat(path).st_mode & 0o777,
                "dir_mode": os.stat(os.path.dirname(path)).st_mode & 0o777}
         for name, path in seen.items() if name.startswith("RAY_TLS_")}
counted = sys.argv[1] + ".signals"
def count(signo, frame):
    with open(counted, "a") as out:
        out.write(signal.Signals(signo).name + "\\n")
if sys.argv[2:] == ["wait"]:
    signal.signal(signal.SIGINT, count)
    signal.signal(signal.SIGTERM, count)
with open(sys.argv[1] + ".tmp", "w") as out:
    json.dump({"env": seen, "files": files}, out)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
if sys.argv[2:] == ["wait"]:
    give_up = time.monotonic() + 60
    while not os.path.exists(counted) and time.monotonic() < give_up:
        time.sleep(0.02)
    time.sleep(0.5)
    sys.exit(3)
""" % (RAY_VARIABLES,)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict:
    """What `pulumi stack output --json --show-secrets` prints for a deployed stack (the parts used here)."""
    directory = tmp_path_factory.mktemp("stack")
    operator = LocalCa(directory / "ca", stack="prod").issue(tls.operator_profile(), directory / "operator")
    return {
        "dashboardUrl": "https://10.20.0.11:8443",
        "rayClientAddress": "ray://10.20.0.11:10001",
        "rayToken": secrets.token_hex(32),
        "rayTlsCaCert": Path(operator["RAY_TLS_CA_CERT"]).read_text(),
        "rayTlsOperatorCert": Path(operator["RAY_TLS_SERVER_CERT"]).read_text(),
        "rayTlsOperatorKey": Path(operator["RAY_TLS_SERVER_KEY"]).read_text(),
    }


class Machine:
    """An operator's machine for one test: its own HOME and TMPDIR, no Ray settings of its own."""

    def __init__(self, root: Path, outputs: dict):
        self.root, self.home, self.tmp = root, root / "home", root / "tmp"
        self.home.mkdir()
        self.tmp.mkdir()
        self.outputs_file = root / "outputs.json"
        self.outputs_file.write_text(json.dumps(outputs))
        self.report = root / "report.json"
        inherited = {k: v for k, v in os.environ.items() if k not in RAY_VARIABLES and k != "XDG_RUNTIME_DIR"}
        self.env = {**inherited, "HOME": str(self.home), "TMPDIR": str(self.tmp), "PYTHONPATH": str(ROOT)}
        self.started: list[int] = []  # wrappers a test started (and may leave running when it fails)

    def wrapper(self, *command: str) -> list[str]:
        return [*WRAPPER, "--outputs-command", f"cat {self.outputs_file}", "--", *command]

    def probe(self, *extra: str) -> list[str]:
        return [sys.executable, "-c", PROBE, str(self.report), *extra]

    def run(self, argv: list[str], **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=ROOT, env={**self.env, **env}, capture_output=True, text=True, timeout=60)

    def seen(self) -> dict:
        return json.loads(self.report.read_text())

    def signals_seen(self) -> list[str]:
        return Path(f"{self.report}.signals").read_text().split()

    def wait_for_report(self) -> None:
        deadline = time.monotonic() + 30
        while not self.report.exists():
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)

    def assert_left_nothing(self) -> None:
        assert list(self.tmp.iterdir()) == [], "the credentials' directory outlived the command"
        assert list(self.home.iterdir()) == []


@pytest.fixture
def machine(tmp_path, outputs) -> Iterator[Machine]:
    machine = Machine(tmp_path, outputs)
    yield machine
    for pid in machine.started:  # each leads a process group of its own: it and its command
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_the_command_gets_the_stacks_credentials_in_owner_only_files(machine, outputs, tmp_path):
    bin_dir = tmp_path / "bin"  # a stand-in `pulumi` that prints the outputs and notes how it was asked
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "pulumi-args"}\ncat {machine.outputs_file}\n')
    (bin_dir / "pulumi").chmod(0o755)
    done = machine.run([*WRAPPER, "--", *machine.probe()], PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pulumi-args").read_text().split() == ["stack", "output", "--json", "--show-secrets", "--stack", "prod"]
    env, files = machine.seen()["env"], machine.seen()["files"]
    assert env["RAY_USE_TLS"] == "1" and env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN"] == outputs["rayToken"]
    assert env["RAY_ADDRESS"] == outputs["dashboardUrl"]
    assert env["RAY_CLUSTER_CLIENT_ADDRESS"] == outputs["rayClientAddress"]  # the smoke test's default
    assert env["REQUESTS_CA_BUNDLE"] == env["RAY_TLS_CA_CERT"]
    assert {name: f["text"] for name, f in files.items()} == {
        "RAY_TLS_CA_CERT": outputs["rayTlsCaCert"],
        "RAY_TLS_SERVER_CERT": outputs["rayTlsOperatorCert"],
        "RAY_TLS_SERVER_KEY": outputs["rayTlsOperatorKey"],
    }
    assert files["RAY_TLS_SERVER_KEY"]["mode"] == 0o600 and files["RAY_TLS_SERVER_KEY"]["dir_mode"] == 0o700
    assert all(f["mode"] & 0o077 == 0 for f in files.values())
    assert Path(env["RAY_TLS_CA_CERT"]).parent.parent == machine.tmp
    machine.assert_left_nothing()
    assert outputs["rayToken"] not in done.stdout + done.stderr
    assert outputs["rayTlsOperatorKey"].splitlines()[1] not in done.stdout + done.stderr


def test_a_ray_address_already_set_is_kept(machine):
    assert machine.run(machine.wrapper(*machine.probe()), RAY_ADDRESS="ray://elsewhere:10001").returncode == 0
    assert machine.seen()["env"]["RAY_ADDRESS"] == "ray://elsewhere:10001"


def test_the_session_runtime_directory_is_preferred_and_home_is_never_used(machine, tmp_path):
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    assert machine.run(machine.wrapper(*machine.probe()), XDG_RUNTIME_DIR=str(runtime)).returncode == 0
    assert Path(machine.seen()["env"]["RAY_TLS_CA_CERT"]).parent.parent == runtime
    assert list(runtime.iterdir()) == []
    # A TMPDIR under HOME, and no runtime directory: refused before anything is written.
    under_home = machine.home / "tmp"
    under_home.mkdir()
    refused = machine.run(machine.wrapper("true"), TMPDIR=str(under_home))
    assert refused.returncode == CONFIG_ERROR_EXIT and "outside $HOME" in refused.stderr
    assert list(under_home.iterdir()) == []


def test_a_service_account_whose_home_is_the_root_still_gets_a_directory(machine):
    assert machine.run(machine.wrapper(*machine.probe()), HOME="/").returncode == 0
    assert Path(machine.seen()["env"]["RAY_TLS_CA_CERT"]).parent.parent == machine.tmp
    machine.assert_left_nothing()


def test_a_failing_commands_status_passes_through_and_its_directory_goes(machine):
    failed = machine.run(machine.wrapper("sh", "-c", 'test -s "$RAY_TLS_SERVER_KEY" && exit 7'))
    assert failed.returncode == 7
    machine.assert_left_nothing()


def test_a_command_that_cannot_start_is_reported_and_leaves_nothing(machine):
    missing = machine.run(machine.wrapper("no-such-command-here"))
    assert missing.returncode == 127 and "cannot run no-such-command-here" in missing.stderr
    machine.assert_left_nothing()


def start(machine: Machine, *command: str) -> subprocess.Popen:
    wrapper = subprocess.Popen(machine.wrapper(*command), cwd=ROOT, env=machine.env, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    machine.started.append(wrapper.pid)
    machine.wait_for_report()
    return wrapper


def test_sigterm_to_the_wrapper_reaches_the_command_once_and_the_directory_goes(machine):
    wrapper = start(machine, *machine.probe("wait"))
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 3  # the command's own status, after it handled the signal
    assert machine.signals_seen() == ["SIGTERM"]
    machine.assert_left_nothing()


def test_a_command_killed_by_sigterm_kills_the_wrapper_alike_and_the_directory_goes(machine):
    wrapper = start(machine, "sh", "-c", f"{shlex.join(machine.probe())} && exec sleep 60")
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == -signal.SIGTERM
    assert "Traceback" not in wrapper.stderr.read()
    machine.assert_left_nothing()


def at_a_terminal(machine: Machine, command: list[str]) -> tuple[int, str]:
    """Run the wrapper as the foreground job of a terminal, press Ctrl-C once the command
    runs; the wrapper's wait status and everything the terminal showed."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: session leader with the terminal as its controlling tty
        os.chdir(ROOT)
        os.execve(sys.executable, machine.wrapper(*command), machine.env)
    machine.started.append(pid)
    shown = b""
    try:
        machine.wait_for_report()
        os.write(terminal, b"\x03")  # the terminal's INTR: the kernel signals the foreground process group
        deadline = time.monotonic() + 30
        while not (waited := os.waitpid(pid, os.WNOHANG))[0]:
            assert time.monotonic() < deadline, "the wrapper did not end after Ctrl-C"
            shown += read_available(terminal)
            time.sleep(0.05)
        return waited[1], (shown + read_available(terminal)).decode(errors="replace")
    finally:
        os.close(terminal)


def read_available(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536)
    except (BlockingIOError, OSError):  # OSError: EIO once the terminal's last reader is gone
        return b""


def test_ctrl_c_at_a_terminal_reaches_the_command_once(machine):
    status, shown = at_a_terminal(machine, machine.probe("wait"))
    assert os.waitstatus_to_exitcode(status) == 3, shown
    assert machine.signals_seen() == ["SIGINT"]  # from the terminal, not once more from the wrapper
    machine.assert_left_nothing()


def test_a_command_ended_by_ctrl_c_ends_the_wrapper_by_sigint_without_a_traceback(machine):
    status, shown = at_a_terminal(machine, ["sh", "-c", f"{shlex.join(machine.probe())} && exec sleep 60"])
    assert os.waitstatus_to_exitcode(status) == -signal.SIGINT, shown
    assert "Traceback" not in shown
    machine.assert_left_nothing()


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda o: {k: v for k, v in o.items() if not k.startswith("rayTls")},  # deployed before Ray's TLS
         "the stack has no output rayTlsCaCert, rayTlsOperatorCert, rayTlsOperatorKey"),
        (lambda o: {k: v for k, v in o.items() if k != "rayToken"}, "the stack has no output rayToken"),
        (lambda o: {**o, "rayTlsOperatorKey": "[secret]"}, "the stack output rayTlsOperatorKey is masked"),
    ],
    ids=["before-tls", "no-token", "masked"],
)
def test_outputs_the_command_needs_are_named_when_missing_and_it_never_runs(machine, outputs, change, named):
    machine.outputs_file.write_text(json.dumps(change(outputs)))
    refused = machine.run(machine.wrapper(*machine.probe()))
    assert refused.returncode == CONFIG_ERROR_EXIT
    assert f"with_cluster_access: stack prod: {named}" in refused.stderr
    assert not machine.report.exists()
    machine.assert_left_nothing()


def test_a_stack_pulumi_cannot_read_exits_2_with_pulumis_reason(machine, tmp_path):
    failing = tmp_path / "failing-pulumi"
    failing.write_text("#!/bin/sh\necho \"error: no stack named 'prod' found\" >&2\nexit 255\n")
    failing.chmod(0o755)
    refused = machine.run([*WRAPPER, "--outputs-command", str(failing), "--", "true"])
    assert refused.returncode == CONFIG_ERROR_EXIT
    assert "cannot read the stack outputs: error: no stack named 'prod' found" in refused.stderr
