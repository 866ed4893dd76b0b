"""The LAN image mirror on the monitoring host, as text (no Pulumi).

Every node pulls its Ray and exporter images from a registry (distribution's
`registry` image) that the program runs on the always-on monitoring host. The
program pulls each pinned image on the monitoring host (from its public
registry, or through `registry.mirror` with its credentials when one is
configured) and pushes it into the mirror (`copy_script`, re-run when a pin
changes), by day; the nightly bring-up
then pulls over the LAN and never from the internet, and a public registry
that is down at 18:00 costs nothing.

A mirror, not a pull-through cache: distribution's proxy asks its upstream
for `/v2/` when it starts and refuses to start without it (`configureAuth` ->
`getAuthURLs` in `registry/proxy/proxyauth.go`, a panic in
`registry/handlers/app.go`; seen here with Debian's registry 2.8.2), so a cache
restarted during an internet outage would serve nothing; and its content
expires (7 days by default). A plain registry has neither problem.

The mirror speaks plain HTTP inside the cluster network, open to the
cluster's nodes only (each node's Docker lists it in `insecure-registries`).
With `ray.imageDigest` set, the monitoring host pulls by digest (Docker verifies it);
the nodes pull the mirror's copy by tag: a push stores the platform's manifest,
whose digest is not the upstream index's.
"""
from __future__ import annotations

import json
import shlex

import yaml

from components.model.config import ClusterConfig
from components.model.ports import MONITORING
from components.render.remote_files import StagedFiles

CONTAINER_NAME = "image-mirror"
CONFIG_FILE = "/etc/ray-cluster/image-mirror.yml"  # on the host, mounted read-only at the same path
DATA_VOLUME = "image-mirror"
DATA_DIR = "/var/lib/registry"
DAEMON_JSON = "/etc/docker/daemon.json"
_HUB_PREFIXES = ("docker.io/", "index.docker.io/")


def image_reference(cfg: ClusterConfig) -> str:
    """The configured Ray image: the pinned tag, plus the digest when one is configured."""
    return f"{cfg.ray.image}@{cfg.ray.image_digest}" if cfg.ray.image_digest else cfg.ray.image


def mirrored_references(cfg: ClusterConfig) -> list[str]:
    """The images every node pulls (Ray, node-exporter, cAdvisor), as configured."""
    return [image_reference(cfg), cfg.monitoring.images.node_exporter, cfg.monitoring.images.cadvisor]


def upstream(cfg: ClusterConfig, reference: str) -> str:
    """Where the monitoring host pulls `reference` from: through the data centre's registry mirror, if any."""
    return cfg.image(reference)


def address(cfg: ClusterConfig) -> str:
    return f"{cfg.monitoring_host.node.ip}:{MONITORING.image_mirror}"


def on_mirror(cfg: ClusterConfig, reference: str) -> str:
    """`reference` in the mirror: same path (Docker Hub's prefix dropped) and tag, no digest."""
    name = reference.split("@", 1)[0]
    for prefix in _HUB_PREFIXES:
        name = name.removeprefix(prefix)
    return f"{address(cfg)}/{name}"


def config_yml(cfg: ClusterConfig) -> str:
    """distribution's config.yml for the mirror."""
    document = {
        "version": 0.1,
        "log": {"fields": {"service": CONTAINER_NAME}},
        "storage": {"filesystem": {"rootdirectory": DATA_DIR}, "cache": {"blobdescriptor": "inmemory"}},
        "http": {"addr": f":{MONITORING.image_mirror}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
    return yaml.safe_dump(document, sort_keys=False)


def copy_script(cfg: ClusterConfig) -> str:
    """Shell for the monitoring host's user: push every pinned image, pulled there already (by Pulumi,
    with the registry credentials), into the mirror."""
    lines = ["set -eu"]
    for reference in mirrored_references(cfg):
        pulled, lan = shlex.quote(upstream(cfg, reference)), shlex.quote(on_mirror(cfg, reference))
        lines += [f"docker tag {pulled} {lan}", f"docker push {lan}"]
    return "\n".join(lines) + "\n"


def daemon_json(cfg: ClusterConfig) -> str:
    """Every node's Docker daemon config: the mirror speaks HTTP (Docker's `insecure-registries`)."""
    return json.dumps({"insecure-registries": [address(cfg)]}, indent=2) + "\n"


# SIGHUP (`systemctl reload`) makes dockerd re-read insecure-registries without restarting a
# container (moby `daemon/reload.go`, `reloadInsecureRegistries`).
RELOAD_DOCKER = "systemctl reload docker"


def daemon_config(node_name: str, cfg: ClusterConfig) -> StagedFiles:
    """A node's daemon.json, installed by the command `<node>-docker-daemon-config`; dockerd re-reads it."""
    return StagedFiles(f"{node_name}-docker-daemon-config", {DAEMON_JSON: daemon_json(cfg)}, then=RELOAD_DOCKER)
