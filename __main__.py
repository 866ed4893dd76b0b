"""ray-cluster: config -> the cluster component -> stack outputs."""
import pulumi

from components.resources.cluster import RayCluster
from components.resources.ssh_access import client_root
from components.resources.stack_config import read_pulumi_config

cfg, secrets = read_pulumi_config()
cluster = RayCluster(
    "ray",
    cfg,
    secrets,
    at=cfg.instant(),
    # pulumi-docker's ssh needs the pinned host keys and the identity on disk.
    ssh_client_root=client_root(pulumi.get_stack()),
)
for key, value in cluster.outputs.items():
    pulumi.export(key, value)
