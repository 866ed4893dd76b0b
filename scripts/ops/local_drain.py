"""The rendered drain, run on this machine as drain-on-delete runs it on a VM.

The files go where they go on a VM, by the very delivery script the drain's
file resource runs (under a local root instead of DRAIN_DIR); the program then
runs from that directory with nothing else on its path, as in the container.
Used by the drain tests and the rehearsal.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO, Mapping, Union

from components.render import drain


def deliver(files: dict[str, str], root: Path) -> Path:
    subprocess.run(["sh", "-c", drain.delivery_script(files, str(root))], check=True)
    return root


def start(root: Path, *args: str, env: Mapping[str, str], stderr: Union[int, IO[str]] = subprocess.PIPE) -> subprocess.Popen:
    """drain.PROGRAM_ARGV in `root` with this interpreter; stdout (JSON lines) piped."""
    own_path_only = {key: value for key, value in env.items() if key != "PYTHONPATH"}
    return subprocess.Popen(
        [sys.executable, *drain.PROGRAM_ARGV[1:], *args],
        cwd=root, env=own_path_only, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )
