"""The drain of a worker, run from the machine running Pulumi over SSH (no Pulumi).

The drain-on-delete resource is a local command whose delete runs this script: it
SSHes to the node with the pinned host key and the agent's identity and runs the
node's drain there (`drain.drain_command`). Everything it needs is in the script,
so a delete, a destroy or a refresh from any operator's machine runs the same
thing, as long as an ssh-agent holds the cluster key (scripts/with_ssh_agent.py).

A node that does not answer cannot be drained, and the removal must not hang on
it (the VM is deleted through vCenter either way): the script says so loudly, with
the prefix the scheduler collects, and lets the removal go ahead. What is not a
dead node fails the delete instead: no agent, a refused key, a wrong host key.
"""
from __future__ import annotations

import shlex

from components.render.drain import ALARM_PREFIX
from components.render.ssh_client import CONNECT_TIMEOUT_S, ssh_options

# ssh's own exit status when it could not connect or authenticate.
SSH_FAILED = 255
# What ssh prints when nothing answers at the node's address.
UNREACHABLE_PATTERNS = ("timed out", "No route to host", "Network is unreachable", "Connection refused")


def drain_over_ssh(user: str, node_name: str, node_ip: str, host_public_key: str, drain_command: str, unreachable_is_fatal: bool = False) -> str:
    """A POSIX sh script; `unreachable_is_fatal` for a manual drain, where nothing else follows."""
    ssh = shlex.join(["ssh", *ssh_options(node_ip, host_public_key), f"{user}@{node_ip}"])
    on_unreachable = (
        f'echo "drain of {node_name}: $reason" >&2; exit 1'
        if unreachable_is_fatal
        else f'echo "{ALARM_PREFIX} {node_name}: $reason; removing it WITHOUT a drain" >&2; exit 0'
    )
    patterns = "|".join(f'*"{p}"*' for p in UNREACHABLE_PATTERNS)
    return f"""\
if ! ssh-add -l >/dev/null 2>&1; then
  echo "drain of {node_name}: no ssh-agent holds a key (SSH_AUTH_SOCK); run Pulumi through scripts/with_ssh_agent.py" >&2
  exit 1
fi
if ! probe=$({ssh} true 2>&1); then
  case "$probe" in
    {patterns})
      reason="{node_ip} does not answer over SSH within {CONNECT_TIMEOUT_S}s ($(echo "$probe" | tail -n 1))"
      {on_unreachable} ;;
  esac
  echo "drain of {node_name}: ssh to {node_ip} failed: $probe" >&2
  exit 1
fi
{ssh} sh -s <<'RAY_DRAIN_ON_NODE'
{drain_command.rstrip()}
RAY_DRAIN_ON_NODE
"""
