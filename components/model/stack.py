"""Reading a stack's config from its Pulumi.<stack>.yaml (the engine's side is
`components.resources.stack_config`).

Both end in `config.load`, so the program, the offline render, the rehearsal
and the scheduler validate exactly the same way. The file is read the way the
Pulumi CLI reads it (YAML 1.2: only true/false are booleans, 18:00 is text),
so a value means the same to every tool.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from components.model.config import NAMESPACE, ClusterConfig, load
from components.model.errors import ConfigError, Problem

PROJECT_DIR = Path(__file__).resolve().parents[2]
# The instant the program computes the desired state for, from the scheduler (see
# scripts/ops/scheduling.py program_environment): it wins over `ray-cluster:at`.
AT_ENVIRONMENT = "RAY_CLUSTER_AT"
# Keys that must only ever be set with `pulumi config set --secret`.
SECRET_KEYS = ("sshPrivateKey", "rayToken", "grafanaAdminPassword", "registryPassword", "alertingSecrets")
# The vSphere provider's own settings (pulumi_vsphere/config/vars.py; tests/test_config.py compares).
VSPHERE_PROVIDER_KEYS = (
    "allowUnverifiedSsl", "apiTimeout", "clientDebug", "clientDebugPath", "clientDebugPathRun", "password",
    "persistSession", "restSessionPath", "user", "vcenterServer", "vimKeepAlive", "vimSessionPath", "vsphereServer",
)


class StackLoader(yaml.SafeLoader):
    """PyYAML with YAML 1.2's plain scalars, as the Pulumi CLI (go-yaml v3) reads a stack file:
    yes/no/on/off stay words and 18:00 stays text (YAML 1.1 makes them booleans and 1080)."""


StackLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StackLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
StackLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
StackLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def namespace_problems(flat: dict[str, Any]) -> list[Problem]:
    """Stack keys that would be ignored: no namespace, a misspelt one, or vsphere: keys the provider lacks."""
    problems = []
    for key in flat:
        namespace, _, name = key.rpartition(":")
        if not namespace:
            problems.append(Problem("", f"{key}: a stack key without a namespace is ignored: write {NAMESPACE}:{key}"))
        elif namespace != NAMESPACE and difflib.get_close_matches(namespace, [NAMESPACE], cutoff=0.7):
            problems.append(Problem("", f"{key}: unknown namespace {namespace!r}: did you mean {NAMESPACE}:{name}?"))
        elif namespace == "vsphere" and name not in VSPHERE_PROVIDER_KEYS:
            problems.append(Problem(
                "", f"{key} is not a setting of the vSphere provider (it has {', '.join(VSPHERE_PROVIDER_KEYS)}); "
                f"where VMs go is {NAMESPACE}:vsphere, like {NAMESPACE}:vsphere.datacenter",
            ))
    return problems


def strip_namespace(flat: dict[str, Any]) -> dict[str, Any]:
    prefix = f"{NAMESPACE}:"
    return {
        key[len(prefix):]: value
        for key, value in flat.items()
        if key.startswith(prefix) and key[len(prefix):] not in SECRET_KEYS
    }


def stack_path(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
        raise ConfigError(
            [Problem("", f"no stack {stack!r}: {path} does not exist; stacks here: {', '.join(known) or 'none'}")],
            source=f"stack {stack!r}",
        )
    return path


def stack_document(stack: str, project_dir: Path = PROJECT_DIR) -> dict[str, Any]:
    """The `config:` mapping of Pulumi.<stack>.yaml, a YAML syntax error reported with file, line and column."""
    path = stack_path(stack, project_dir)
    try:
        document = yaml.load(path.read_text(), Loader=StackLoader) or {}
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else path.name
        what = error.problem or error.context or "not valid YAML"
        hint = ": indent with spaces, YAML does not allow tabs" if "'\\t'" in what else ""
        raise ConfigError([Problem("", f"{where}: {what}{hint}")], source=path.name) from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise ConfigError([Problem("", f"{path.name}: has no `config:` mapping")], source=path.name)
    return config


def stack_file_keys(stack: str, project_dir: Path = PROJECT_DIR) -> dict[str, Any]:
    """The `ray-cluster:*` keys of `Pulumi.<stack>.yaml`, namespace stripped, secrets left out."""
    return strip_namespace(stack_document(stack, project_dir))


def read_stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> ClusterConfig:
    """The validated model of `Pulumi.<stack>.yaml` (no Pulumi engine needed): every problem at once."""
    flat = stack_document(stack, project_dir)
    problems = namespace_problems(flat)
    try:
        cfg = load(strip_namespace(flat))
    except ConfigError as error:
        problems += error.problems
    if problems:
        raise ConfigError(problems, source=f"stack {stack!r}")
    return cfg
