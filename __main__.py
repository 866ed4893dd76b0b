"""ray-cluster: config -> the cluster component -> stack outputs."""
import gc

# Importing the providers and registering resources allocate millions of objects (modules,
# futures, Outputs) that live until the run ends: the cyclic GC finds next to nothing to free
# (300 generated nodes under mocks: 980 MB peak with it, 1003 MB without) and spends a fifth of
# the run scanning them (at thresholds 50 000/20: 6 of 30 CPU seconds; scripts/bench_program.py).
# A run lasts seconds: no automatic collection. Set before the imports below.
gc.disable()

import pulumi  # noqa: E402

from components.resources.cluster import RayCluster  # noqa: E402
from components.resources.ssh_access import refuse_docker_environment  # noqa: E402
from components.resources.stack_config import read_pulumi_config  # noqa: E402

refuse_docker_environment()
cfg, secrets = read_pulumi_config()
cluster = RayCluster("ray", cfg, secrets, at=cfg.instant())
for key, value in cluster.outputs.items():
    pulumi.export(key, value)
