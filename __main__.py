"""ray-cluster: config -> the cluster component -> stack outputs."""
import pulumi

from components.resources.cluster import RayCluster
from components.resources.ssh_access import refuse_docker_environment
from components.resources.stack_config import read_pulumi_config

refuse_docker_environment()
cfg, secrets = read_pulumi_config()
cluster = RayCluster("ray", cfg, secrets, at=cfg.instant())
for key, value in cluster.outputs.items():
    pulumi.export(key, value)
