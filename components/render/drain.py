"""The drain of one Ray worker node before it is removed, as files and a command (no Pulumi).

The drain program is a real module, components/render/drain_program.py (stdlib +
ray, importing components/model/schedule.py). `drain_files` is what each worker
VM receives under DRAIN_DIR: both modules at their package paths and the node's
JSON settings (`staged_drain_files`: copied over SFTP, then installed). `drain_command` is the shell the drain-on-delete resource runs on
the VM (over SSH) before removal: the same few lines on every worker, so a
change to the program or the settings changes the delivered files, never it.
"""
from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Optional

from components.model import schedule
from components.model.config import ClusterConfig, PlacedNode
from components.model.ports import RAY, RayPorts
from components.render import drain_program
from components.render.drain_program import ALARM_PREFIX, EXIT_DEADLINE_PASSED, EXIT_HEAD_UNREACHABLE, DrainSettings
from components.render.ray_start import CONTAINER_NAME
from components.render.remote_files import StagedFiles

__all__ = ["ALARM_PREFIX", "DRAIN_DIR", "drain_command", "drain_files", "drain_settings", "staged_drain_files"]

DRAIN_DIR = "/opt/ray-cluster/drain"  # on the VM
# The copy the container runs. `docker cp` keeps the modes (0644 files, 0755 dirs) and makes root
# the owner (docs.docker.com, `docker container cp`): the image's user reads it, writes nothing there.
IN_CONTAINER_DIR = "/tmp/ray-cluster-drain"
SETTINGS_FILE = "settings.json"
SHIPPED_MODULES: tuple[ModuleType, ...] = (schedule, drain_program)
# How to run the program from a directory holding drain_files().
PROGRAM_ARGV = ("python", "-m", drain_program.__name__, SETTINGS_FILE)


def _refuse_the_head(placed: PlacedNode) -> None:
    if placed.node.head:
        raise ValueError(f"{placed.node.name} is the head: it is never drained (the cluster would go with it)")


def drain_settings(
    cfg: ClusterConfig,
    placed: PlacedNode,
    ports: RayPorts = RAY,
    *,
    node_ip: Optional[str] = None,
    gcs_address: Optional[str] = None,
) -> DrainSettings:
    """What `placed`'s drain needs; node_ip / gcs_address default to the config's."""
    _refuse_the_head(placed)
    return DrainSettings(
        node_name=placed.node.name,
        node_ip=node_ip or str(placed.node.ip),
        gcs_address=gcs_address or f"{cfg.head.node.ip}:{ports.gcs}",
        grace=cfg.ray.drain_grace,
        window=placed.tier.window,
        keep_tier=cfg.head.tier_name,
    )


def drain_files(settings: DrainSettings) -> dict[str, str]:
    """The drain program's files, by path relative to DRAIN_DIR: modules, their packages, settings."""
    files = {SETTINGS_FILE: settings.to_json()}
    for module in SHIPPED_MODULES:
        path = PurePosixPath(*module.__name__.split("."))
        files[f"{path}.py"] = Path(str(module.__file__)).read_text()
        for package in path.parents[:-1]:
            files.setdefault(f"{package}/__init__.py", "")
    return files


def staged_drain_files(node_name: str, files: dict[str, str], root: str = DRAIN_DIR) -> StagedFiles:
    """`files` (drain_files) under `root`, installed by the command `<node>-drain-program`."""
    return StagedFiles(f"{node_name}-drain-program", {f"{root}/{path}": text for path, text in files.items()})


_CONTAINER = shlex.quote(CONTAINER_NAME)
_RUNNING = f"[ \"$(docker inspect --format '{{{{.State.Running}}}}' {_CONTAINER})\" = true ]"
_DRAIN_COMMAND = f"""\
# Once drained, the raylet exits and so does the container: it must not be restarted.
docker update --restart=no {_CONTAINER} >/dev/null || exit 0  # no container: nothing to drain
{_RUNNING} || exit 0  # stopped: nothing to drain
docker cp {DRAIN_DIR}/. {_CONTAINER}:{IN_CONTAINER_DIR} \\
  && docker exec -w {IN_CONTAINER_DIR} {_CONTAINER} {shlex.join(PROGRAM_ARGV)}
status=$?
# Deadline passed or head unreachable: the program said so loudly; the removal goes ahead.
if [ "$status" -eq {EXIT_DEADLINE_PASSED} ] || [ "$status" -eq {EXIT_HEAD_UNREACHABLE} ]; then exit 0; fi
# The drained node stops its own container, which may end this exec before the program.
if [ "$status" -ne 0 ] && {_RUNNING}; then exit "$status"; fi
exit 0
"""


def drain_command(placed: PlacedNode) -> str:
    """What a worker's drain-on-delete runs on its VM: the delivered program, in the node's container."""
    _refuse_the_head(placed)
    return _DRAIN_COMMAND
