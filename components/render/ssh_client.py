"""How every SSH client of ours reaches a node: the host key pinned in the options
themselves, the identity from an ssh-agent, bounded waits. Nothing on disk.

The Docker provider's `ssh_opts` are stored in Pulumi state and reused by refresh,
destroy and deletes without running the program (the engine uses the inputs in state), so they must mean the
same on every machine and for every user that holds the stack: no path into
anyone's home, no file that must exist. `KnownHostsCommand` (OpenSSH 8.5+) prints
the pinned key, so no known_hosts file is read or written; the private key comes
from the agent at SSH_AUTH_SOCK (`scripts/with_ssh_agent.py` starts one per run).
"""
from __future__ import annotations

# Docker's CLI settings that would silently point every node's Docker provider elsewhere.
DOCKER_ENVIRONMENT = ("DOCKER_CONTEXT", "DOCKER_HOST")
# A node that does not answer is given up on after this long, per connection attempt.
CONNECT_TIMEOUT_S = 10
# A silent peer (a VM powered off mid-command) ends the session after 15 s x 4.
KEEPALIVE_INTERVAL_S = 15
KEEPALIVE_MISSES = 4

# pulumi-command dials with a fixed budget (dial_error_limit, default 10 attempts;
# per_dial_timeout, default 15 s): about 11 s against a refused port, less than a
# VM needs to boot and start sshd with its pinned host key. 60 attempts of up to
# 20 s cover a first boot with cloud-init's package installs.
DIAL_ATTEMPTS = 60
PER_DIAL_TIMEOUT_S = 20


def known_hosts_line(host: str, host_public_key: str) -> str:
    """One known_hosts entry: `host keytype base64`, the key's comment dropped."""
    key_type, key = host_public_key.split()[:2]
    return f"{host} {key_type} {key}"


def ssh_options(host: str, host_public_key: str) -> list[str]:
    """`ssh` arguments that trust exactly `host_public_key` for `host` and nothing else."""
    return [
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"KnownHostsCommand=/bin/echo {known_hosts_line(host, host_public_key)}",
        "-o", "BatchMode=yes",  # never a password or passphrase prompt: the agent or nothing
        "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
        "-o", f"ServerAliveInterval={KEEPALIVE_INTERVAL_S}",
        "-o", f"ServerAliveCountMax={KEEPALIVE_MISSES}",
    ]
