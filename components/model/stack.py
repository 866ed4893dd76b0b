"""Reading a stack's config from its Pulumi.<stack>.yaml (the engine's side is
`components.resources.stack_config`).

Both end in `config.load`, so the program, the offline render, the rehearsal
and the scheduler validate exactly the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from components.model.config import NAMESPACE, ClusterConfig, load

PROJECT_DIR = Path(__file__).resolve().parents[2]
# The instant the program computes the desired state for, from the scheduler (see
# scripts/ops/scheduling.py program_environment): it wins over `ray-cluster:at`.
AT_ENVIRONMENT = "RAY_CLUSTER_AT"
# Keys that must only ever be set with `pulumi config set --secret`.
SECRET_KEYS = ("sshPrivateKey", "rayToken", "grafanaAdminPassword")


def strip_namespace(flat: dict[str, Any]) -> dict[str, Any]:
    prefix = f"{NAMESPACE}:"
    return {
        key[len(prefix):]: value
        for key, value in flat.items()
        if key.startswith(prefix) and key[len(prefix):] not in SECRET_KEYS
    }


def stack_file_keys(stack: str, project_dir: Path = PROJECT_DIR) -> dict[str, Any]:
    """The `ray-cluster:*` keys of `Pulumi.<stack>.yaml`, namespace stripped, secrets left out."""
    document = yaml.safe_load((project_dir / f"Pulumi.{stack}.yaml").read_text()) or {}
    return strip_namespace(document.get("config") or {})


def read_stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> ClusterConfig:
    """The validated model of `Pulumi.<stack>.yaml` (no Pulumi engine needed)."""
    return load(stack_file_keys(stack, project_dir))
