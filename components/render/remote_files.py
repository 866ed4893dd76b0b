"""Shell scripts that put rendered files on a host (run there over SSH).

Each file is written base64-encoded (any content survives the shell) to a
temporary name and renamed into place, so a reader never sees half a file.
"""
from __future__ import annotations

import base64
import posixpath
import shlex


def write_files_script(files: dict[str, str], mode: str = "0644", then: str = "") -> str:
    lines = ["set -eu"]
    for path in sorted(files):
        quoted, tmp = shlex.quote(path), shlex.quote(path + ".tmp")
        payload = base64.b64encode(files[path].encode()).decode()
        lines += [
            f"install -d -m 0755 {shlex.quote(posixpath.dirname(path))}",
            f"echo {payload} | base64 -d > {tmp}",
            f"chmod {mode} {tmp} && mv {tmp} {quoted}",
        ]
    if then:
        lines.append(then)
    return "\n".join(lines) + "\n"
