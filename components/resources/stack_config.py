"""Reading the config and secrets of the stack the Pulumi engine is running."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
from pulumi.runtime import config as runtime_config

from components.model.config import NAMESPACE, ClusterConfig, ConfigError, Problem, load
from components.model.stack import AT_ENVIRONMENT, SECRET_KEYS, namespace_problems, strip_namespace


@dataclass(frozen=True)
class ClusterSecrets:
    """The secrets the cluster needs, as Pulumi secret Outputs (None: generate)."""

    ssh_private_key: Any
    ray_token: Optional[Any]
    grafana_admin_password: Optional[Any]


def read_pulumi_config() -> tuple[ClusterConfig, ClusterSecrets]:
    """The validated model and secrets of the stack the engine is running.

    A bad config ends the program with `pulumi.RunError`: `pulumi up` prints
    every problem and exits, with no traceback and before any resource exists.
    """
    flat = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    problems = namespace_problems(flat) + [
        Problem(key, "is a secret: set it with `pulumi config set --secret`")
        for key in SECRET_KEYS
        if f"{NAMESPACE}:{key}" in flat and not runtime_config.is_config_secret(f"{NAMESPACE}:{key}")
    ]
    raw = {}
    for key, value in strip_namespace(flat).items():
        try:
            raw[key] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            raw[key] = value  # a plain string such as `at`
    if os.environ.get(AT_ENVIRONMENT):
        raw["at"] = os.environ[AT_ENVIRONMENT]
    try:
        cfg = load(raw)
    except ConfigError as error:
        problems += error.problems
    if problems:
        raise pulumi.RunError(str(ConfigError(problems, source=f"config of stack {pulumi.get_stack()!r}")))
    config = pulumi.Config(NAMESPACE)
    secrets = ClusterSecrets(
        ssh_private_key=config.require_secret("sshPrivateKey"),
        ray_token=config.get_secret("rayToken"),
        grafana_admin_password=config.get_secret("grafanaAdminPassword"),
    )
    return cfg, secrets
