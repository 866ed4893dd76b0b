"""ray-cluster: config -> the cluster component -> stack outputs."""
import gc

# Importing the providers and registering resources allocate hundreds of thousands of objects
# (modules, futures, Outputs) that live until the run ends; at the default thresholds the cyclic
# GC rescans them all again and again, which made a run quadratic in nodes
# (scripts/bench_program.py). A run lasts seconds: collect rarely. Set before the imports below.
gc.set_threshold(50_000, 20, 100)

import pulumi  # noqa: E402

from components.resources.cluster import RayCluster  # noqa: E402
from components.resources.ssh_access import refuse_docker_environment  # noqa: E402
from components.resources.stack_config import read_pulumi_config  # noqa: E402

refuse_docker_environment()
cfg, secrets = read_pulumi_config()
cluster = RayCluster("ray", cfg, secrets, at=cfg.instant())
for key, value in cluster.outputs.items():
    pulumi.export(key, value)
