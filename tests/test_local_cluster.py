"""The local cluster's cleanup: whatever a node started is gone, and so are its listening ports."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from components.render import ray_start
from scripts.ops.local_cluster import LocalNode, kill_node_processes, listening_ports, localize

# A worker that leaves its parent's process group (as a Ray worker may) and holds a port.
ESCAPED_LISTENER = """
import os, socket, sys, time
os.setpgid(0, 0)
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print(os.getpid(), flush=True)
time.sleep(600)
"""


def test_cleanup_ends_every_process_group_of_the_node_and_waits_for_its_ports(prod_config, tmp_path):
    [settings] = localize([ray_start.node_settings(prod_config, prod_config.head)], tmp_path, 7000, 100, (47000, 47099))
    port = settings.ports.min_worker + 1
    entrypoint = subprocess.Popen(
        ["sh", "-c", f'"$0" -c \'{ESCAPED_LISTENER}\' {port} & wait', sys.executable],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    worker = int(entrypoint.stdout.readline())
    assert os.getpgid(worker) != entrypoint.pid and port in listening_ports()

    left = kill_node_processes(LocalNode(settings, entrypoint, Path(tmp_path / "log")))

    assert left == set() and port not in listening_ports()
    assert not Path(f"/proc/{worker}").exists() or Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z"
