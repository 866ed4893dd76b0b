"""Rendered files onto a host: one CopyToRemote per file, then one command that installs them
(components/render/remote_files.py `StagedFiles` renders both sides).

Engine and provider behaviour relied on (pulumi/pulumi-command 1.2.1, provider/pkg/provider/remote/):
- copyController.go `CopyToRemote.Update` copies again only when the asset's hash or the
  remote path changed; `copyTextContent` makes the parent directories (SFTP MkdirAll, as the
  SSH user) and overwrites the file. A text change is an in-place update, never a replace.
- CopyToRemote has no Delete: the staged copies are removed by the install command's `delete`.
- The install command's `create` names every file's hash: a changed file changes it, which is an
  in-place Update that re-runs `create` (commandController.go), after the copies it depends on.
  Only where a reader must be replaced with its files (`triggers`, and the reader's `replace_with`)
  is the command replaced; any replacement deletes the old command first, or its `delete` would
  remove the files the new one just installed.
- Everything is `deleted_with` the VM: no SSH to a VM that is going anyway.
"""
from __future__ import annotations

import shlex
from typing import Optional

import pulumi
from pulumi_command import remote

from components.render.remote_files import StagedFiles


def install_staged_files(
    staged: StagedFiles,
    connection: remote.ConnectionArgs,
    vm: pulumi.Resource,
    ready: pulumi.Resource,
    parent: pulumi.Resource,
    triggers: Optional[list] = None,
) -> remote.Command:
    """The CopyToRemote of each of `staged`'s files with content, and the command (named `staged.name`)
    that installs them all, once the host is `ready` (its SSH user made: the firewall step waits
    for cloud-init)."""
    on_vm = pulumi.ResourceOptions(parent=parent, depends_on=[ready], deleted_with=vm)
    copies = [
        remote.CopyToRemote(
            staged.copy_name(path),
            connection=connection,
            source=pulumi.StringAsset(text),
            remote_path=staged.staged(path),
            opts=on_vm,
        )
        for path, text in staged.copied.items()
    ]
    return remote.Command(
        staged.name,
        connection=connection,
        create=f"sudo sh -c {shlex.quote(staged.install_script())}",
        delete=f"sudo sh -c {shlex.quote(staged.removal_script())}",
        triggers=triggers,
        opts=pulumi.ResourceOptions(
            parent=parent, depends_on=[ready, *copies], deleted_with=vm, delete_before_replace=True
        ),
    )
