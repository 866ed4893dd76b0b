"""Reading a stack's config: from the Pulumi engine, or from a Pulumi.<stack>.yaml.

Both end in `config.load`, so the program, the offline render, the rehearsal
and the scheduler validate exactly the same way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from components.config import NAMESPACE, ClusterConfig, ConfigError, Problem, load

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Keys that must only ever be set with `pulumi config set --secret`.
SECRET_KEYS = ("sshPrivateKey", "rayToken", "grafanaAdminPassword")


def _strip_namespace(flat: dict[str, Any]) -> dict[str, Any]:
    prefix = f"{NAMESPACE}:"
    return {
        key[len(prefix):]: value
        for key, value in flat.items()
        if key.startswith(prefix) and key[len(prefix):] not in SECRET_KEYS
    }


def read_stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> ClusterConfig:
    """The validated model of `Pulumi.<stack>.yaml` (no Pulumi engine needed)."""
    document = yaml.safe_load((project_dir / f"Pulumi.{stack}.yaml").read_text()) or {}
    return load(_strip_namespace(document.get("config") or {}))


@dataclass(frozen=True)
class ClusterSecrets:
    """The secrets the cluster needs, as Pulumi secret Outputs (None: generate)."""

    ssh_private_key: Any
    ray_token: Optional[Any]
    grafana_admin_password: Optional[Any]


def read_pulumi_config() -> tuple[ClusterConfig, ClusterSecrets]:
    """The validated model and secrets of the stack the engine is running."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    flat = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    plain_secrets = [
        Problem(key, "is a secret: set it with `pulumi config set --secret`")
        for key in SECRET_KEYS
        if f"{NAMESPACE}:{key}" in flat and not runtime_config.is_config_secret(f"{NAMESPACE}:{key}")
    ]
    if plain_secrets:
        raise ConfigError(plain_secrets)
    raw = {}
    for key, value in _strip_namespace(flat).items():
        try:
            raw[key] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            raw[key] = value  # a plain string such as `at`
    cfg = load(raw)
    config = pulumi.Config(NAMESPACE)
    secrets = ClusterSecrets(
        ssh_private_key=config.require_secret("sshPrivateKey"),
        ray_token=config.get_secret("rayToken"),
        grafana_admin_password=config.get_secret("grafanaAdminPassword"),
    )
    return cfg, secrets
