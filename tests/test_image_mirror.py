"""The LAN image mirror: the rendered registry config served by a real registry (Debian's
docker-registry, distribution 2.8) in a loopback-only namespace, the copy script, the
firewall, and the wiring that makes every node pull from it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from components.model.ports import MONITORING
from components.render import firewall_rules, image_mirror
from conftest import prod_raw, require_tool
from test_program import COMMAND, IMAGE

# Inside a namespace with only `lo`: start the registry, push an image the way `docker push`
# does (blobs, then the manifest by tag), restart the registry, pull it back the way
# `docker pull` does (manifest by tag, then each blob by digest). Prints what it saw.
PUSH_RESTART_PULL = r"""
import hashlib, json, subprocess, sys, time, urllib.request
config, base = sys.argv[1], sys.argv[2]
def start():
    proc = subprocess.Popen(["docker-registry", "serve", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with urllib.request.urlopen(base + "/v2/", timeout=1) as r:
                return proc, r.status
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the registry never answered /v2/")
def call(method, url, data=None, headers={}):
    req = urllib.request.Request(url if url.startswith("http") else base + url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict(r.headers), r.read()
def push_blob(repo, blob):
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    _, headers, _ = call("POST", f"/v2/{repo}/blobs/uploads/")
    location = headers["Location"]
    sep = "&" if "?" in location else "?"
    call("PUT", f"{location}{sep}digest={digest}", blob, {"Content-Type": "application/octet-stream"})
    return {"digest": digest, "size": len(blob)}
repo, tag = sys.argv[3], sys.argv[4]
proc, health = start()
layer = push_blob(repo, b"a layer of the ray image " * 1000)
image_config = push_blob(repo, json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode())
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **image_config},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", **layer}],
}).encode()
manifest_type = "application/vnd.docker.distribution.manifest.v2+json"
status, headers, _ = call("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": manifest_type})
pushed = headers["Docker-Content-Digest"]
proc.terminate(); proc.wait()
proc, _ = start()
_, headers, body = call("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": manifest_type})
pulled = json.loads(body)
blobs_ok = all(
    "sha256:" + hashlib.sha256(call("GET", f"/v2/{repo}/blobs/{d['digest']}")[2]).hexdigest() == d["digest"]
    for d in [pulled["config"], *pulled["layers"]]
)
proc.terminate(); proc.wait()
print(json.dumps({"health": health, "pushed": pushed, "pulled": headers["Docker-Content-Digest"], "blobs_ok": blobs_ok}))
"""


@pytest.mark.netns
def test_the_rendered_mirror_keeps_a_pushed_image_across_a_restart(prod_config, tmp_path):
    require_tool("docker-registry", "docker-registry")
    require_tool("unshare", "util-linux")
    config = yaml.safe_load(image_mirror.config_yml(prod_config))
    port = int(config["http"]["addr"].rsplit(":", 1)[1])
    assert port == MONITORING.image_mirror
    # The rendered config, but for where the volume is mounted (a temporary directory here).
    config["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "data")
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "probe.py").write_text(PUSH_RESTART_PULL)
    lan = image_mirror.on_mirror(prod_config, prod_config.ray.image)
    repository, tag = lan.split("/", 1)[1].rsplit(":", 1)
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, str(tmp_path / "probe.py"),
         str(tmp_path / "config.yml"), f"http://127.0.0.1:{port}", repository, tag],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["health"] == 200  # what the container's health check probes
    assert seen["pushed"] == seen["pulled"] and seen["blobs_ok"]


def _stub_docker(tmp_path, failing: str = "") -> dict:
    """A PATH whose `docker` records its arguments (and fails for `failing` as its first one)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/docker-calls\n[ "$1" != "{failing}" ]\n')
    docker.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_the_copy_pushes_each_pin_pulled_on_the_monitoring_host_to_the_mirror(tmp_path):
    raw = prod_raw()
    digest = "sha256:" + "ab" * 32
    raw["ray"]["imageDigest"] = digest
    from components.model import config

    cfg = config.load(raw)
    env = _stub_docker(tmp_path)
    subprocess.run(["/bin/sh", "-c", image_mirror.copy_script(cfg)], env=env, check=True)
    calls = (tmp_path / "docker-calls").read_text().splitlines()
    mirror = f"{cfg.monitoring_host.node.ip}:{MONITORING.image_mirror}"
    assert calls[:2] == [
        # Pulled there by digest (the RemoteImage below: Docker verifies it), pushed by tag.
        f"tag rayproject/ray:2.60.0-py311@{digest} {mirror}/rayproject/ray:2.60.0-py311",
        f"push {mirror}/rayproject/ray:2.60.0-py311",
    ]
    pushed = [call.split()[1] for call in calls if call.startswith("push ")]
    assert pushed == [
        f"{mirror}/rayproject/ray:2.60.0-py311",
        f"{mirror}/{cfg.monitoring.images.node_exporter}",
        f"{mirror}/{cfg.monitoring.images.cadvisor}",  # gcr.io/… keeps its registry as a path
    ]


def test_a_failed_step_pushes_nothing_more(prod_config, tmp_path):
    env = _stub_docker(tmp_path, failing="tag")
    result = subprocess.run(["/bin/sh", "-c", image_mirror.copy_script(prod_config)], env=env)
    assert result.returncode != 0
    assert [call.split()[0] for call in (tmp_path / "docker-calls").read_text().splitlines()] == ["tag"]


def test_only_the_clusters_nodes_reach_the_mirror(prod_config):
    node_ips = {str(p.node.ip) for p in prod_config.placed_nodes}
    for placed in prod_config.placed_nodes:
        sources = {r.source for r in firewall_rules.firewall_rules(prod_config, placed) if MONITORING.image_mirror in r.opened}
        assert sources == (node_ips if placed.node.name == prod_config.monitoring_host.node.name else set())



def test_every_node_pulls_its_images_from_the_filled_mirror_it_trusts(night, prod_config):
    mirror = f"{prod_config.monitoring_host.node.ip}:{MONITORING.image_mirror}"
    host = prod_config.monitoring_host.node.name
    copy = night.one(COMMAND, f"{host}-image-mirror-copy")
    mirror_container = night.one("docker:index/container:Container", f"{host}-image-mirror")
    assert mirror_container.urn in copy.dependencies
    # What the copy pushes was pulled on the monitoring host first, by Pulumi (with any registry credentials).
    sources = [night.one(IMAGE, f"{host}-{role}-upstream-image") for role in ("ray", "node-exporter", "cadvisor")]
    assert {s.inputs["name"] for s in sources} == set(image_mirror.mirrored_references(prod_config))
    assert {s.urn for s in sources} <= set(copy.dependencies)
    assert copy.inputs["stdin"] == image_mirror.copy_script(prod_config)
    for placed in prod_config.placed_nodes:
        name = placed.node.name
        trust = night.one(COMMAND, f"{name}-docker-daemon-config")
        (daemon_json,) = night.staged_copies(trust.name)
        assert json.loads(daemon_json.inputs["source"]["text"]) == {"insecure-registries": [mirror]}
        assert trust.inputs["create"].rstrip("'\n").endswith("systemctl reload docker")
        assert night.one(COMMAND, f"{name}-ufw").urn in trust.dependencies
        for image_name in (f"{name}-ray-image", f"{name}-node-exporter-image", f"{name}-cadvisor-image"):
            image = night.one(IMAGE, image_name)
            assert image.inputs["name"].startswith(mirror + "/"), image.inputs["name"]
            assert {trust.urn, copy.urn} <= set(image.dependencies), image_name
    # The only images pulled from elsewhere: the always-on services' own (the monitoring host's, the
    # GCS store's, the head's dashboard proxy), pulled by day; no heavy-tier node pulls anything from outside.
    elsewhere = {i.name for i in night.of_type(IMAGE) if not i.inputs["name"].startswith(mirror + "/")}
    upstream = {f"{host}-{role}-upstream-image" for role in ("ray", "node-exporter", "cadvisor")}
    own = {f"{host}-{service}-image" for service in ("image-mirror", "prometheus", "grafana", "alertmanager")}
    head_services = {f"{prod_config.redis_host.node.name}-redis-image", f"{prod_config.head.node.name}-dashboard-proxy-image"}
    assert elsewhere == own | upstream | head_services
    assert not any(name.startswith("ray-hc-") for name in elsewhere)
