"""Loopback-only network namespaces: where real Ray clusters run (scripts/ops/loopback_netns.py)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

import conftest
from conftest import ROOT, require_tool

# From the network namespace pytest was started in: enter one of our own, say what is there.
ENTER = """
import json, socket, sys
sys.path.insert(0, sys.argv[1])
from scripts.ops import loopback_netns
before = [name for _, name in socket.if_nameindex()]
why_not = loopback_netns.enter()
after = [name for _, name in socket.if_nameindex()]
server = socket.create_server(("127.0.0.1", 0))
socket.create_connection(server.getsockname(), timeout=5).close()
print(json.dumps({"before": before, "whyNot": why_not, "after": after}))
"""


@pytest.mark.netns
def test_a_process_gets_a_namespace_with_only_loopback_and_loopback_works():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    require_tool("nsenter", "util-linux")
    done = subprocess.run(
        ["nsenter", f"--net=/proc/{os.getppid()}/ns/net", sys.executable, "-c", ENTER, str(ROOT)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["whyNot"] is None and seen["after"] == ["lo"]


@pytest.mark.netns
def test_this_session_runs_in_its_own_loopback_only_namespace():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    assert conftest.NO_OWN_NETWORK is None
    assert [name for _, name in socket.if_nameindex()] == ["lo"]
