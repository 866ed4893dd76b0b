"""The rendered drain, run on this machine as drain-on-delete runs it on a VM.

The files go where they go on a VM: staged as CopyToRemote stages them, then put
in place by the very install script the drain's command runs (under a local root
instead of DRAIN_DIR); the program then
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
    """`files` under `root`; the staging directory lives in `root`'s sibling `home`, the SSH user's home on a VM."""
    staged = drain.staged_drain_files(root.name, files, str(root))
    home = root.parent / "home"
    for path, text in staged.files.items():
        copy = home / staged.staged(path)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(text)
    subprocess.run(["sh", "-c", staged.install_script()], cwd=home, check=True)
    return root


def start(root: Path, *args: str, env: Mapping[str, str], stderr: Union[int, IO[str]] = subprocess.PIPE) -> subprocess.Popen:
    """drain.PROGRAM_ARGV in `root` with this interpreter; stdout (JSON lines) piped."""
    own_path_only = {key: value for key, value in env.items() if key != "PYTHONPATH"}
    return subprocess.Popen(
        [sys.executable, *drain.PROGRAM_ARGV[1:], *args],
        cwd=root, env=own_path_only, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )
