"""Reading the config and secrets of the stack the Pulumi engine is running."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_tls as tls
from pulumi.runtime import config as runtime_config

from components.model.config import NAMESPACE, ClusterConfig, ConfigError, Problem, load
from components.model.stack import AT_ENVIRONMENT, SECRET_KEYS, namespace_problems, strip_namespace


@dataclass(frozen=True)
class ClusterSecrets:
    """The secrets the cluster needs, as Pulumi secret Outputs (None: generate)."""

    ssh_private_key: Any
    ray_token: Optional[Any]
    grafana_admin_password: Optional[Any]
    registry_password: Optional[Any] = None  # with registry.username: the mirror's credentials
    alerting_secrets: Optional[Any] = None  # receiver name -> webhook/Slack URL or SMTP password


def _registry_username(raw: dict) -> Optional[str]:
    registry = raw.get("registry")
    return registry.get("username") if isinstance(registry, dict) else None


def matching_private_key(private_key: pulumi.Output, public_key: str) -> pulumi.Output:
    """The SSH private key, once pulumi-tls derived its public half and it is `ssh.publicKey`.

    Every SSH connection the program makes (firewall, Docker, drains) takes its
    key from here and every VM waits for it (cluster.py), so with a mismatched
    pair no VM is cloned and no connection attempted: the update fails with the
    reason instead of timing out on "permission denied".
    """
    derived = tls.get_public_key_output(private_key_openssh=private_key).public_key_openssh

    def checked(key_and_public: list) -> str:
        key, derived_public = key_and_public
        if derived_public.split()[:2] != public_key.split()[:2]:
            raise pulumi.RunError(
                f"{NAMESPACE}:sshPrivateKey is not the private half of {NAMESPACE}:ssh.publicKey: its public key is "
                f"{' '.join(derived_public.split()[:2])[:40]}..., the config names {public_key[:40]}...; set the matching pair"
            )
        return key

    return pulumi.Output.all(private_key, derived).apply(checked)


def _alerting_secret_problems(cfg: ClusterConfig, flat: dict) -> list[Problem]:
    """Receivers whose URL or password `alertingSecrets` lacks (its names only are read here)."""
    named = json.loads(flat.get(f"{NAMESPACE}:alertingSecrets") or "{}")
    missing = [r.name for r in cfg.alerting.receivers if r.needs_secret and r.name not in named]
    if not missing:
        return []
    return [Problem("alertingSecrets", f"set with --secret, a JSON object with a value for receiver(s) {missing}")]


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
        problems += _alerting_secret_problems(cfg, flat)
    except ConfigError as error:
        problems += error.problems
    has_password = f"{NAMESPACE}:registryPassword" in flat
    if _registry_username(raw) and not has_password:
        problems.append(Problem("registryPassword", "registry.username is set: set the password with `pulumi config set --secret ray-cluster:registryPassword`"))
    if has_password and not _registry_username(raw):
        problems.append(Problem("registryPassword", "is set, but registry.username is not: set both, or neither"))
    if problems:
        raise pulumi.RunError(str(ConfigError(problems, source=f"config of stack {pulumi.get_stack()!r}")))
    config = pulumi.Config(NAMESPACE)
    secrets = ClusterSecrets(
        ssh_private_key=matching_private_key(config.require_secret("sshPrivateKey"), cfg.ssh.public_key),
        ray_token=config.get_secret("rayToken"),
        grafana_admin_password=config.get_secret("grafanaAdminPassword"),
        registry_password=config.get_secret("registryPassword"),
        alerting_secrets=config.get_secret_object("alertingSecrets"),
    )
    return cfg, secrets
