"""Files put on a host over SSH (no Pulumi).

Non-secret files travel as files: each is copied by pulumi-command's
`CopyToRemote` (SFTP, as the SSH user) into a staging directory of its own
under that user's home (`StagedFiles.staged`), and one small command installs
them into place as root (`install_script`) and removes them when the files
are no longer wanted (`removal_script`). The install script names each file's
SHA-256: a changed file changes the command, which re-runs it in place, and a
staged copy that is not what this program rendered is refused, not installed.
An empty file (a Python package's `__init__.py`) has nothing to copy: the
install script makes it, which saves a resource per file on every node.

Secrets never go through the staging directory (a file in the user's home, and
a CopyToRemote input in clear in the state): `write_files_script` carries them
base64-encoded in a secret `stdin` instead.
"""
from __future__ import annotations

import base64
import hashlib
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import Mapping

# Relative to the SSH user's home, where both SFTP and a remote command start (sshd changes to
# the user's home before it runs either): the user owns it, so SFTP can write there.
STAGING_ROOT = ".ray-cluster/staged"


def _install_lines(path: str, mode: str) -> tuple[str, str]:
    """The lines around writing `path`.tmp: make its directory; then give it `mode` and rename it into
    place, so no reader sees half a file."""
    quoted, tmp = shlex.quote(path), shlex.quote(path + ".tmp")
    return f"install -d -m 0755 {shlex.quote(posixpath.dirname(path))}", f"chmod {mode} {tmp} && mv {tmp} {quoted}"


@dataclass(frozen=True)
class StagedFiles:
    """Files for one host, installed by one command named `name` (its staging directory's name too)."""

    name: str
    files: Mapping[str, str]  # host path (absolute) -> text
    then: str = ""  # after installing: reload or restart what reads them
    before_removal: str = ""  # before removing them: stop what runs them
    after_removal: str = ""  # after removing them
    hashes: dict[str, str] = field(init=False, repr=False, compare=False)  # of the copied files

    def __post_init__(self) -> None:
        relative = sorted(path for path in self.files if not path.startswith("/"))
        if relative:
            raise ValueError(f"{self.name}: host paths must be absolute: {relative}")
        object.__setattr__(self, "hashes", {p: hashlib.sha256(t.encode()).hexdigest() for p, t in self.copied.items()})

    @property
    def stage_dir(self) -> str:
        return f"{STAGING_ROOT}/{self.name}"

    @property
    def copied(self) -> dict[str, str]:
        """The files that travel by copy: every one with content."""
        return {path: text for path, text in sorted(self.files.items()) if text}

    def staged(self, path: str) -> str:
        """Where `path`'s copy is staged: the staging directory, then the host path."""
        return f"{self.stage_dir}{path}"

    def copy_name(self, path: str) -> str:
        """The name of the resource that stages `path`."""
        return f"{self.name}{path}"

    def install_script(self) -> str:
        """Shell, run as root in the SSH user's home: check every staged copy, then install each."""
        copied = self.copied
        checks = "".join(f"{self.hashes[path]}  {self.staged(path)}\n" for path in copied)
        lines = ["set -eu"] + ([f"sha256sum --check --quiet --strict <<'STAGED'\n{checks}STAGED"] if copied else [])
        for path in sorted(self.files):
            make_dir, move = _install_lines(path, "0644")
            source = shlex.quote(self.staged(path)) if path in copied else "/dev/null"
            lines += [make_dir, f"cp {source} {shlex.quote(path + '.tmp')}", move]
        if self.then:
            lines.append(self.then)
        return "\n".join(lines) + "\n"

    def removal_script(self) -> str:
        """Shell, run as root in the SSH user's home: remove the installed files and their staged copies."""
        lines = ["set -eu"] + ([self.before_removal] if self.before_removal else [])
        lines.append(f"rm -f {' '.join(shlex.quote(path) for path in sorted(self.files))}")
        lines.append(f"rm -rf {shlex.quote(self.stage_dir)}")
        if self.after_removal:
            lines.append(self.after_removal)
        return "\n".join(lines) + "\n"


def write_files_script(files: dict[str, str], mode: str = "0644", then: str = "") -> str:
    """Shell (as root) that writes `files`, base64-encoded (any content survives the shell): for secrets only."""
    lines = ["set -eu"]
    for path in sorted(files):
        payload = base64.b64encode(files[path].encode()).decode()
        make_dir, move = _install_lines(path, mode)
        lines += [make_dir, f"echo {payload} | base64 -d > {shlex.quote(path + '.tmp')}", move]
    if then:
        lines.append(then)
    return "\n".join(lines) + "\n"
