"""The offline render holds every plain file the program puts on a VM over SSH, with the same
text: checked against the program itself under mocks, so a delivery the render misses (or a
file the render invents) fails here. Secret deliveries (TLS keys, Alertmanager's receivers)
are not in the render by design."""
import datetime as dt
import re
from pathlib import PurePosixPath

from components.render import drain, offline
from components.render import monitoring_config as mc

COMMAND = "command:remote:Command"
NIGHT = dt.datetime.fromisoformat("2026-11-22T22:00:00+01:00")  # the `night` fixture's instant
# components/render/remote_files.py StagedFiles.install_script: an empty file has no copy, the install makes it.
MADE_EMPTY = re.compile(r"^cp /dev/null (/\S+?)\.tmp$", re.M)


def owner(resource_name: str, node_names: list[str]) -> str | None:
    """The node a resource belongs to: the longest node name its own name starts with."""
    return max((n for n in node_names if resource_name.startswith(f"{n}-")), key=len, default=None)


def delivered(night, node_names: list[str]) -> dict[str, dict[str, str]]:
    """Per node, the plain files the program's install commands put there (staged by their copies), by path on the VM."""
    files: dict[str, dict[str, str]] = {name: {} for name in node_names}
    for command in night.of_type(COMMAND):
        node = owner(command.name, node_names)
        copies = night.staged_copies(command.name)
        if node is None or not copies:
            continue
        for copy in copies:  # named <command><path on the VM>
            files[node][copy.name.removeprefix(command.name)] = copy.inputs["source"]["text"]
        files[node].update(dict.fromkeys(MADE_EMPTY.findall(command.inputs["create"]), ""))
    return files


def rendered_on_vm(prod_config, placed) -> dict[str, str]:
    """What the offline render says the VM gets, by path on the VM."""
    by_path = {}
    for name, text in offline.node_files(prod_config, placed, True, NIGHT).items():
        if name.startswith("host/"):
            by_path[name.removeprefix("host")] = text
        elif name.startswith("drain/"):
            by_path[f"{drain.DRAIN_DIR}/{name.removeprefix('drain/')}"] = text
    if placed.node.name == prod_config.monitoring_host.node.name:
        by_path.update(offline.monitoring_host_files(prod_config, NIGHT))
    return by_path


def test_the_render_has_every_plain_file_each_vm_gets(night, prod_config):
    names = [p.node.name for p in prod_config.placed_nodes]
    program = delivered(night, names)
    assert all(program.values()), "every VM gets files over SSH"
    for placed in prod_config.placed_nodes:
        name = placed.node.name
        rendered = rendered_on_vm(prod_config, placed)
        assert program[name].items() <= rendered.items(), name
        # The render invents nothing: its VM files are the program's, but for the secret ones.
        secret_only = {path for path in rendered if PurePosixPath(path).is_relative_to(mc.HOST_DIR) and path not in program[name]}
        assert set(rendered) - secret_only == set(program[name]), name
