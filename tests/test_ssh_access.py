"""Our SSH clients against a real sshd (Debian's openssh-server) in a network namespace:
the host key pinned in the options alone, the identity from an ssh-agent alone, nothing
written to HOME, and a node that does not answer given up on within the connect timeout.

The node is an sshd on 127.0.0.1 inside a namespace of its own; across a veth pair,
10.99.0.2 is a second namespace whose firewall drops every packet: a node that does not answer.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns
from components.render import drain
from components.render.drain_over_ssh import drain_over_ssh
from components.render.ssh_client import CONNECT_TIMEOUT_S, ssh_options
from conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]
SILENT_IP = "10.99.0.2"
USER = "root"  # the namespace's sshd runs as this machine's root; VMs use the configured user


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


def keypair(path: Path) -> str:
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path))
    return (path.parent / f"{path.name}.pub").read_text().strip()


class Node:
    """An sshd on 127.0.0.1 in its own network namespace, and an ssh-agent holding the client key."""

    def __init__(self, root: Path):
        token = secrets.token_hex(3)
        self.root, self.ns, self.silent_ns = root, f"sshd-{token}", f"sshd-{token}-silent"
        self.host_key = keypair(root / "host_key")
        self.other_host_key = keypair(root / "other_host_key")
        (root / "authorized_keys").write_text(keypair(root / "client_key") + "\n")
        (root / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
            f"PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"UsePAM no\nStrictModes no\nPidFile {root / 'sshd.pid'}\n"
        )
        self.home = root / "home"
        self.home.mkdir()
        self.agent_socket = root / "agent.sock"
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> "Node":
        run("ip", "netns", "add", self.ns)
        try:
            run("ip", "netns", "add", self.silent_ns)
            run("ip", "-n", self.ns, "link", "set", "lo", "up")
            run("ip", "-n", self.ns, "link", "add", "to-silent", "type", "veth", "peer", "silent", "netns", self.silent_ns)
            for ns, dev, address in ((self.ns, "to-silent", "10.99.0.1/24"), (self.silent_ns, "silent", f"{SILENT_IP}/24")):
                run("ip", "-n", ns, "addr", "add", address, "dev", dev)
                run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "netns", "exec", self.silent_ns, "iptables", "-A", "INPUT", "-j", "DROP")
            Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
            self._start("ip", "netns", "exec", self.ns, "/usr/sbin/sshd", "-D", "-e", "-f", str(self.root / "sshd_config"))
            self._start("ssh-agent", "-D", "-a", str(self.agent_socket))
            self._wait_for(lambda: self.agent_socket.exists() and self.in_ns("sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/22", shell="bash").returncode == 0)
            run("ssh-add", "-q", str(self.root / "client_key"), env={**os.environ, "SSH_AUTH_SOCK": str(self.agent_socket)})
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        for ns in (self.ns, self.silent_ns):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)

    def _start(self, *argv: str) -> None:
        self.processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    @staticmethod
    def _wait_for(ready, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError("sshd or ssh-agent did not start")
            time.sleep(0.1)

    def in_ns(self, *argv: str, agent: bool = True, shell: str = "sh", **kwargs) -> subprocess.CompletedProcess:
        """Run in the node's namespace as an operator would: HOME empty, the agent (or none)."""
        env = {"PATH": os.environ["PATH"], "HOME": str(self.home)}
        if agent:
            env["SSH_AUTH_SOCK"] = str(self.agent_socket)
        if argv[0] == "sh" and shell != "sh":
            argv = (shell, *argv[1:])
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], env=env, capture_output=True, text=True, **kwargs)


@pytest.fixture
def node(tmp_path):
    netns.require_namespaces()
    require_tool("sshd", "openssh-server")
    with Node(tmp_path) as started:
        yield started


@pytest.mark.netns
def test_the_pinned_key_and_the_agent_are_all_ssh_needs(node):
    done = node.in_ns("ssh", *ssh_options("127.0.0.1", node.host_key), f"{USER}@127.0.0.1", "echo on-the-node")
    assert done.returncode == 0 and done.stdout == "on-the-node\n", done.stderr
    assert list(node.home.iterdir()) == []  # no known_hosts, no key, nothing under HOME


@pytest.mark.netns
def test_another_host_key_is_refused(node):
    refused = node.in_ns("ssh", *ssh_options("127.0.0.1", node.other_host_key), f"{USER}@127.0.0.1", "echo on-the-node")
    assert refused.returncode == 255 and "on-the-node" not in refused.stdout
    assert "Host key verification failed" in refused.stderr


def drain_script(node: Node, command: str, host_key: str | None = None, ip: str = "127.0.0.1", **kwargs) -> str:
    return drain_over_ssh(USER, "ray-hc-1", ip, host_key or node.host_key, command, **kwargs)


@pytest.mark.netns
def test_the_drain_runs_on_the_node_through_the_pinned_connection(node):
    marker = node.root / "drained"
    done = node.in_ns("sh", "-c", drain_script(node, f"echo drained > {marker}; exit 0"))
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "drained\n"


@pytest.mark.netns
def test_the_rendered_node_drain_finds_no_container_and_lets_the_removal_go_on(node, prod_config):
    """The real drain command, on a host without a running `ray-node` container: nothing to drain."""
    placed = prod_config.placed("ray-hc-1")
    done = node.in_ns("sh", "-c", drain_script(node, drain.drain_command(placed)))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "case,expected",
    [("no-agent", "no ssh-agent holds a key"), ("wrong-host-key", "Host key verification failed"), ("drain-failed", "")],
)
@pytest.mark.netns
def test_what_is_not_a_dead_node_fails_the_delete(node, case, expected):
    host_key = node.other_host_key if case == "wrong-host-key" else None
    command = "exit 1" if case == "drain-failed" else "true"
    failed = node.in_ns("sh", "-c", drain_script(node, command, host_key), agent=case != "no-agent")
    assert failed.returncode == 1
    assert expected in failed.stderr and drain.ALARM_PREFIX not in failed.stderr


@pytest.mark.netns
def test_a_node_that_does_not_answer_is_removed_with_an_alarm_within_the_connect_timeout(node):
    started = time.monotonic()
    gone = node.in_ns("sh", "-c", drain_script(node, "true", ip=SILENT_IP), timeout=CONNECT_TIMEOUT_S * 4)
    waited = time.monotonic() - started
    assert gone.returncode == 0
    assert gone.stderr.startswith(f"{drain.ALARM_PREFIX} ray-hc-1: {SILENT_IP} does not answer over SSH")
    assert "WITHOUT a drain" in gone.stderr
    assert CONNECT_TIMEOUT_S - 1 <= waited < CONNECT_TIMEOUT_S + 5


@pytest.mark.netns
def test_a_manual_drain_of_a_node_that_does_not_answer_fails_with_the_reason(node):
    gone = node.in_ns("sh", "-c", drain_script(node, "true", ip=SILENT_IP, unreachable_is_fatal=True), timeout=CONNECT_TIMEOUT_S * 4)
    assert gone.returncode == 1
    assert gone.stderr.startswith(f"drain of ray-hc-1: {SILENT_IP} does not answer over SSH within {CONNECT_TIMEOUT_S}s")


def test_with_ssh_agent_holds_the_key_for_the_command_only(tmp_path):
    require_tool("ssh-agent", "openssh-client")
    keypair(tmp_path / "cluster_key")
    fingerprint = run("ssh-keygen", "-l", "-f", str(tmp_path / "cluster_key")).stdout.split()[1]
    home = tmp_path / "home"
    home.mkdir()
    report = tmp_path / "seen"
    probe = f'ssh-add -l > {report}; echo "context=${{DOCKER_CONTEXT-unset}} host=${{DOCKER_HOST-unset}}" >> {report}; echo "$SSH_AUTH_SOCK" >> {report}'
    done = subprocess.run(
        [sys.executable, "-m", "scripts.with_ssh_agent", "--stack", "prod", "--key-command", f"cat {tmp_path / 'cluster_key'}", "--", "sh", "-c", probe],
        cwd=ROOT, capture_output=True, text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "DOCKER_CONTEXT": "someone-elses", "DOCKER_HOST": "tcp://elsewhere:2375"},
    )
    assert done.returncode == 0, done.stderr
    listed, docker, socket = report.read_text().splitlines()
    assert fingerprint in listed and docker == "context=unset host=unset"
    # When the command is over, so are the agent and its socket directory; HOME never saw a key.
    assert not Path(socket).parent.exists()
    assert subprocess.run(["pgrep", "-f", socket], capture_output=True).returncode == 1
    assert list(home.iterdir()) == []


def test_with_ssh_agent_passes_the_commands_status_and_refuses_an_unreadable_key(tmp_path):
    keypair(tmp_path / "cluster_key")
    base = [sys.executable, "-m", "scripts.with_ssh_agent", "--stack", "prod"]
    failed = subprocess.run([*base, "--key-command", f"cat {tmp_path / 'cluster_key'}", "--", "sh", "-c", "exit 7"], cwd=ROOT)
    assert failed.returncode == 7
    missing = subprocess.run([*base, "--key-command", f"cat {tmp_path / 'nothing'}", "--", "true"], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot read the stack's SSH key" in missing.stderr
