"""A throwaway network lab for firewall tests: one node, peers wired to it.

Every namespace, veth and process here lives only inside namespaces this
module creates; nothing touches the machine's own interfaces or firewall.
ufw runs in the node's network namespace under a private mount namespace in
which a copy of /etc/ufw and /etc/default/ufw (its whole state) and an empty
/run (its lock file) are mounted over the real ones.
"""
from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from conftest import require_tool

UFW_STATE = (Path("/etc/ufw"), Path("/etc/default/ufw"))

# Binds each port given on the command line, says "ready", holds them until stdin closes.
LISTEN = """
import socket, sys
held = []
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""

# Connects to every port at once; prints {port: connected} (a dropped SYN times out).
PROBE = """
import asyncio, json, sys
host, timeout, ports = sys.argv[1], float(sys.argv[2]), [int(p) for p in sys.argv[3:]]
async def connects(port):
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True
async def main():
    return dict(zip(ports, await asyncio.gather(*map(connects, ports))))
print(json.dumps(asyncio.run(main())))
"""

# Tries one port over and over until stdin closes; prints how many tries connected.
WATCH = """
import select, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
connected = 0
while not select.select([sys.stdin], [], [], 0)[0]:
    try:
        socket.create_connection((host, port), timeout=0.05).close()
        connected += 1
    except OSError:
        pass
print(connected)
"""


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


NEEDED_TOOLS = {"ip": "iproute2", "unshare": "util-linux", "ufw": "ufw"}


@functools.cache
def unavailable_reason() -> str | None:
    """Why this machine cannot make network and mount namespaces (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    probe = f"fwt-{secrets.token_hex(3)}-probe"
    try:
        _run("ip", "netns", "add", probe)
    except subprocess.CalledProcessError as error:
        return f"`ip netns add` is not permitted here: {error.stderr.strip()}"
    _run("ip", "netns", "delete", probe)
    return None


def require_namespaces() -> None:
    """Skips where namespaces are impossible (no root); fails where scripts/install.sh was not run."""
    for tool, package in NEEDED_TOOLS.items():
        require_tool(tool, package)
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@dataclass
class Lab:
    """A node namespace at `node_ip`, one namespace per peer, each on its own veth."""

    node_ip: str
    peers: dict[str, str]  # peer name -> its only address
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def node(self) -> str:
        return self._ns("node")

    def _ns(self, role: str) -> str:
        return f"fwt-{self.token}-{role}"

    def _add_ns(self, role: str) -> str:
        name = self._ns(role)
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def build(self) -> None:
        self._add_ns("node")
        for index, (peer, address) in enumerate(self.peers.items()):
            peer_ns = self._add_ns(peer)
            node_end, peer_end = f"n{self.token}{index}", f"p{self.token}{index}"
            _run("ip", "link", "add", node_end, "netns", self.node, "type", "veth", "peer", peer_end, "netns", peer_ns)
            # Point-to-point: each side has one /32 and a route to the other, nothing more.
            for ns, dev, mine, theirs in ((self.node, node_end, self.node_ip, address), (peer_ns, peer_end, address, self.node_ip)):
                _run("ip", "-n", ns, "addr", "add", f"{mine}/32", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
                _run("ip", "-n", ns, "route", "add", f"{theirs}/32", "dev", dev)

    def destroy(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)

    def _start(self, ns: str, code: str, *args: object) -> subprocess.Popen:
        process = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code, *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.processes.append(process)
        return process

    def listen(self, ports: list[int]) -> None:
        listener = self._start(self.node, LISTEN, *ports)
        assert listener.stdout.readline().strip() == "ready", "listener failed to bind"

    def reachable(self, ports: list[int], timeout: float = 1.0) -> dict[str, set[int]]:
        """Which ports each peer can open a TCP connection to, probed concurrently."""
        probes = {peer: self._start(self._ns(peer), PROBE, self.node_ip, timeout, *ports) for peer in self.peers}
        found = {}
        for peer, probe in probes.items():
            out, _ = probe.communicate(timeout=timeout + 30)
            found[peer] = {int(port) for port, ok in json.loads(out).items() if ok}
        return found

    @contextmanager
    def watching(self, peer: str, port: int) -> Iterator[list[int]]:
        """Counts `peer`'s successful connects to `port` while the block runs."""
        watcher = self._start(self._ns(peer), WATCH, self.node_ip, port)
        result: list[int] = []
        try:
            yield result
        finally:
            out, _ = watcher.communicate(input="", timeout=30)
            result.append(int(out))


@contextmanager
def running_lab(node_ip: str, peers: dict[str, str]) -> Iterator[Lab]:
    """A built Lab, torn down (namespaces, processes) however the block ends."""
    lab = Lab(node_ip, peers)
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


def ufw_state_copy(into: Path) -> tuple[Path, Path]:
    """A private copy of ufw's state, to mount over the real one."""
    ufw_dir, defaults = into / "ufw", into / "default-ufw"
    shutil.copytree(UFW_STATE[0], ufw_dir, symlinks=True)
    shutil.copy2(UFW_STATE[1], defaults)
    return ufw_dir, defaults


def run_ufw(ns: str, state: tuple[Path, Path], script: str) -> subprocess.CompletedProcess:
    """Runs `script` with sh as root inside `ns`, ufw seeing only the `state` copy."""
    ufw_dir, defaults = state
    sandbox = (
        'mount --bind "$1" /etc/ufw && mount --bind "$2" /etc/default/ufw'
        " && mount -t tmpfs ufw-run /run && exec sh -s"
    )
    return subprocess.run(
        ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
         "sh", "-c", sandbox, "sandbox", str(ufw_dir), str(defaults)],
        input=script, capture_output=True, text=True, timeout=120,
    )
