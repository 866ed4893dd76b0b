"""A network namespace of this process's own, with only a loopback interface.

Ray ignores `--node-ip-address=127.0.0.1`, advertises the machine's address
and listens on every interface (ray#26293). In a namespace whose
only interface is `lo` it keeps 127.0.0.1 and can listen nowhere else, and
each such namespace has its own port space: two test runs or rehearsals never
fight over ports. Everything that must reach such a cluster (drivers, tools,
Prometheus) runs in the same namespace: the children started after `enter`.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
from typing import Optional

CLONE_NEWNET = 0x40000000  # <sched.h>


def loopback_only() -> bool:
    """Whether this process's network namespace has no interface but `lo`."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def enter() -> Optional[str]:
    """Move this process into a new network namespace with `lo` up; None when done, else why not.

    unshare(2) moves the calling thread: call it from the main thread before
    starting anything, and every child process started afterwards is inside.
    """
    if loopback_only():
        return None
    if os.geteuid() != 0:
        return "a network namespace needs root"
    ip = shutil.which("ip")
    if ip is None:
        return "`ip` is not installed (scripts/install.sh installs iproute2)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}"
    subprocess.run([ip, "link", "set", "lo", "up"], check=True)
    return None
