"""ray-cluster: config -> the cluster component -> stack outputs."""
import gc

import pulumi

from components.resources.cluster import RayCluster
from components.resources.ssh_access import refuse_docker_environment
from components.resources.stack_config import read_pulumi_config

refuse_docker_environment()

# Registering resources allocates hundreds of thousands of objects (futures, Outputs) that live
# until the run ends; at the default thresholds the cyclic GC rescans them all again and again,
# which made a run quadratic in nodes (scripts/bench_program.py). A run lasts seconds: collect rarely.
gc.set_threshold(50_000, 20, 100)

cfg, secrets = read_pulumi_config()
cluster = RayCluster("ray", cfg, secrets, at=cfg.instant())
for key, value in cluster.outputs.items():
    pulumi.export(key, value)
