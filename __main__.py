"""ray-cluster: config -> the cluster component -> stack outputs."""
from pathlib import Path

import pulumi

from components.cluster import RayCluster
from components.stack import read_pulumi_config

cfg, secrets = read_pulumi_config()
cluster = RayCluster(
    "ray",
    cfg,
    secrets,
    at=cfg.instant(),
    # pulumi-docker's ssh needs the pinned host keys and the identity on disk.
    ssh_client_root=Path.home() / ".ssh" / "ray-cluster" / pulumi.get_stack(),
)
for key, value in cluster.outputs.items():
    pulumi.export(key, value)
