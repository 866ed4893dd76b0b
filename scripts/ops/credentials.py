"""The scheduler's secrets as files handed over by systemd, never as environment values.

The unit (scripts/systemd/ray-cluster-scheduler.service) loads each secret with
LoadCredentialEncrypted=: systemd decrypts it into $CREDENTIALS_DIRECTORY, a
directory only the service's user can read, which is gone when the run ends.
The unit points the tools at the files by path (RAY_AUTH_TOKEN_PATH for Ray's
client, PULUMI_CONFIG_PASSPHRASE_FILE for the Pulumi CLI). A Pulumi Cloud
access token has no file form in the CLI: `pulumi_cli_env` hands it to the
Pulumi CLI processes only, so Ray, ssh and the drain never see it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

# Credential name (as in LoadCredentialEncrypted=NAME:...) -> the variable the tool reads its path from.
BY_PATH = {
    "ray-auth-token": "RAY_AUTH_TOKEN_PATH",
    "pulumi-config-passphrase": "PULUMI_CONFIG_PASSPHRASE_FILE",
}
PULUMI_ACCESS_TOKEN = "pulumi-access-token"  # optional: only with the Pulumi Cloud backend


def pulumi_cli_env(environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Variables for the Pulumi CLI the Automation API starts: the access token, if systemd passed one."""
    directory = (environ if environ is not None else os.environ).get("CREDENTIALS_DIRECTORY")
    token = Path(directory, PULUMI_ACCESS_TOKEN) if directory else None
    if token is None or not token.is_file():
        return {}
    return {"PULUMI_ACCESS_TOKEN": token.read_text().strip()}
