"""The cluster's SSH key in a private ssh-agent for one run, never on disk.

Pulumi's Docker provider and the drain-on-delete commands shell out to `ssh`, which
takes the identity from the agent at SSH_AUTH_SOCK (components/render/ssh_client.py).
`cluster_agent(key)` starts an agent on a socket in an owner-only temporary directory,
adds the key through stdin, and on exit kills the agent and removes the directory: when
the run ends, no private key is left on the machine.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Mapping

from components.render.ssh_client import DOCKER_ENVIRONMENT

AGENT_START_TIMEOUT_S = 10


class AgentError(RuntimeError):
    pass


@contextlib.contextmanager
def cluster_agent(private_key: str) -> Iterator[dict[str, str]]:
    """The environment for a run: SSH_AUTH_SOCK at an agent that holds only `private_key`,
    Docker's overrides removed. The agent and its directory are gone afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="ray-cluster-agent-"))  # mode 0700
    socket = directory / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + AGENT_START_TIMEOUT_S
        while not socket.exists():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise AgentError(f"ssh-agent did not start: {agent.stderr.read().decode().strip() if agent.stderr else ''}")
            time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if k not in DOCKER_ENVIRONMENT}
        env["SSH_AUTH_SOCK"] = str(socket)
        text = private_key if private_key.endswith("\n") else private_key + "\n"
        added = subprocess.run(["ssh-add", "-q", "-"], input=text, env=env, capture_output=True, text=True)
        if added.returncode != 0:
            raise AgentError(f"ssh-add refused the key: {added.stderr.strip()}")
        yield env
    finally:
        agent.kill()
        agent.wait()
        shutil.rmtree(directory, ignore_errors=True)


def run_with_key(private_key: str, argv: list[str], extra_env: Mapping[str, str] | None = None) -> int:
    """Run `argv` with the key in a private agent; its exit status."""
    with cluster_agent(private_key) as env:
        return subprocess.run(argv, env={**env, **(extra_env or {})}).returncode
