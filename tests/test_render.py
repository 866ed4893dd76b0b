"""The offline render (`python -m scripts.render`), each file checked by the tool that consumes it.

The prod stack is rendered once, by the real command line, at 22:00 in Berlin
(every node live), and under `-X importtime` to prove it never imports Pulumi.
Then: user-data through `cloud-init schema`, meta-data as the VM gets it (cloud-init's
own parser reads it in tests/test_cloud_init.py), prometheus.yml (laid out as rendered) and its rules through
`promtool` (each UFW rule goes through `ufw --dry-run` in tests/test_firewall.py), every
shell file through `sh -n`, containers.sh executed by sh (the `ray start` line
parsed by Ray 2.60's own CLI; with a Docker CLI, every `docker run` parsed by
Docker and compared with what the Pulumi components declare, under mocks).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import shutil
import socketserver
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Iterator, NamedTuple
from zoneinfo import ZoneInfo

import pytest

from components.render import cloud_init, firewall_rules as fw, monitoring_config as mc, ray_start, redis_store, offline as render
from conftest import prod_raw, require_tool
from scripts import render as render_cli
from components.resources.ray_node import HEAD_CONTAINER_LABEL
from scripts.ops.program_mocks import TEST_SECRETS, generated_password, run_program

ROOT = Path(__file__).resolve().parent.parent
BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = dt.datetime(2026, 11, 22, 22, tzinfo=BERLIN)  # heavy-compute live (18:00-06:00)
NOON = dt.datetime(2026, 11, 22, 12, tzinfo=BERLIN)
# What containers.sh reads from the environment: the secrets the mocks run is given, and the one it generates.
REDIS_PASSWORD = generated_password("ray-redis-password")  # the program generates it (RayCluster "ray")
SECRETS = {
    "RAY_AUTH_TOKEN": TEST_SECRETS["rayToken"],
    "GF_SECURITY_ADMIN_PASSWORD": TEST_SECRETS["grafanaAdminPassword"],
    "RAY_REDIS_PASSWORD": REDIS_PASSWORD,
    "REDISCLI_AUTH": REDIS_PASSWORD,
}

# A `docker` that appends its argv (a JSON line) to $DOCKER_ARGV_LOG instead of talking to an engine.
RECORDING_DOCKER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["DOCKER_ARGV_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
"""


class Rendered(NamedTuple):
    out: Path
    imported: set[str]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Rendered:
    """`python -m scripts.render` for prod at NIGHT, with every import it makes."""
    out = tmp_path_factory.mktemp("render") / "prod"
    result = run(
        sys.executable, "-X", "importtime", "-m", "scripts.render",
        "--stack", "prod", "--out", str(out), "--at", NIGHT.isoformat(), cwd=ROOT,
    )
    imported = {
        line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    return Rendered(out, imported)


def node_dir(rendered: Rendered, name: str) -> Path:
    return rendered.out / "nodes" / name


def summary_of(out: Path) -> dict:
    return json.loads((out / render.SUMMARY_JSON).read_text())


def test_render_needs_no_pulumi(rendered):
    assert {"components.render.cloud_init", "components.render.drain", "components.render.monitoring_config"} <= rendered.imported
    pulumi = sorted(m for m in rendered.imported if m.split(".")[0] == "pulumi" or m.startswith("pulumi_"))
    assert pulumi == []


def test_every_node_is_rendered_and_marked_live_at_night(rendered, prod_config):
    nodes = {p.node.name: p for p in prod_config.placed_nodes}
    assert {d.name for d in (rendered.out / "nodes").iterdir()} == set(nodes)
    for name, placed in nodes.items():
        files = {f.name for f in node_dir(rendered, name).iterdir()}
        worker = {"drain.sh", "drain"} if not placed.node.head else set()
        assert files == {"user-data", "meta-data", "ufw.sh", "ufw-rules.txt", "containers.sh", "host"} | worker
    summary = summary_of(rendered.out)
    assert summary["at"] == NIGHT.isoformat() and summary["liveTiers"] == list(prod_config.tiers)
    assert all(node["live"] for node in summary["nodes"])


def test_user_data_is_valid_cloud_config_with_only_a_placeholder_host_key(rendered, prod_config):
    require_tool("cloud-init", "Debian's cloud-init")
    for placed in prod_config.placed_nodes:
        path = node_dir(rendered, placed.node.name) / "user-data"
        schema = subprocess.run(["cloud-init", "schema", "-c", str(path)], capture_output=True, text=True)
        assert schema.returncode == 0 and "Valid cloud-config" in schema.stdout, schema.stdout + schema.stderr
        text = path.read_text()
        assert text.startswith("#cloud-config\n" + render.PLACEHOLDER_NOTE)
        # Exactly what the VM gets, but for the host key: the placeholder is the only key in it.
        shipped = cloud_init.user_data(prod_config, placed, render.HOST_KEY_PLACEHOLDER_PRIVATE, render.HOST_KEY_PLACEHOLDER_PUBLIC)
        assert text.replace(render.PLACEHOLDER_NOTE, "", 1) == shipped
        assert text.count("PRIVATE KEY-----") == 2 and "PLACEHOLDER" in text


def test_meta_data_is_what_the_vm_gets(rendered, prod_config):
    # How cloud-init reads this very text is tests/test_cloud_init.py's concern, node by node.
    for placed in prod_config.placed_nodes:
        shipped = cloud_init.metadata(prod_config, placed)
        assert (node_dir(rendered, placed.node.name) / "meta-data").read_text() == shipped


def prometheus_dir(out: Path) -> Path:
    return out / "monitoring" / Path(mc.PROMETHEUS_CONFIG.host).relative_to(mc.HOST_DIR)


def test_promtool_accepts_the_rendered_prometheus_layout(rendered):
    require_tool("promtool", "Debian's prometheus")
    config_dir = prometheus_dir(rendered.out)
    checked = run("promtool", "check", "config", str(config_dir / mc.PROMETHEUS_YML))
    # promtool checks the rule files the config names (as Prometheus loads them) with it.
    rules = sorted((config_dir / mc.RULES_DIR).glob("*.yml"))
    assert rules and all(f"Checking {rule}" in checked.stdout + checked.stderr for rule in rules)


def test_monitoring_files_are_what_the_monitoring_host_gets(rendered, prod_config):
    written = {
        str(path.relative_to(rendered.out / "monitoring")): path.read_text()
        for path in (rendered.out / "monitoring").rglob("*")
        if path.is_file()
    }
    host_dir = Path(mc.HOST_DIR)
    assert written == {
        str(Path(path).relative_to(host_dir)): text for path, text in render.monitoring_host_files(prod_config, NIGHT).items()
    }
    targets = mc.scrape_targets(prod_config, NIGHT)  # for the instant asked
    assert targets and all(written[f"prometheus/{name}"] == text for name, text in targets.items())


def ufw_commands(rendered: Rendered, node: str) -> list[str]:
    return [line for line in (node_dir(rendered, node) / "ufw.sh").read_text().splitlines() if line.startswith("ufw allow ")]


def test_ufw_files_carry_every_rule_of_each_node(rendered, prod_config):
    for placed in prod_config.placed_nodes:
        rules = fw.firewall_rules(prod_config, placed)
        assert (node_dir(rendered, placed.node.name) / "ufw.sh").read_text() == fw.ufw_script(rules)
        assert ufw_commands(rendered, placed.node.name) == [f"ufw {rule.command}" for rule in rules]
        lines = (node_dir(rendered, placed.node.name) / "ufw-rules.txt").read_text().splitlines()
        assert [line.split()[:4] for line in lines] == [["allow", f"{r.ports}/{r.proto}", "from", r.source] for r in rules]


def test_every_shell_file_parses_and_is_executable(rendered, prod_config):
    scripts = sorted(rendered.out.rglob("*.sh"))
    workers = [p for p in prod_config.placed_nodes if not p.node.head]
    # ufw.sh, containers.sh and the firewall guard's copy under host/; drain.sh
    assert len(scripts) == 3 * len(prod_config.placed_nodes) + len(workers)
    for script in scripts:
        run("sh", "-n", str(script))
        assert script.stat().st_mode & 0o111, script


def test_every_json_file_parses(rendered, prod_config):
    documents = {path.name: json.loads(path.read_text()) for path in rendered.out.rglob("*.json")}
    assert {"summary.json", mc.OVERVIEW_DASHBOARD} <= documents.keys()
    live_nodes = {str(p.node.ip) for p in prod_config.live_nodes(NIGHT)}
    node_targets = documents[f"{mc.RAY_NODE_JOB}.json"]
    assert {group["targets"][0].split(":")[0] for group in node_targets} == live_nodes


def test_summary_totals_tiers_and_ports_equal_the_config(rendered, prod_config):
    summary = summary_of(rendered.out)
    tiers = prod_config.tiers
    assert summary["totals"]["declared"] == summary["totals"]["live"] == {
        "nodes": 6,
        "vcpu": 3 * 32 + 3 * 80,
        "memoryGb": 3 * 110 + 3 * 350,
        "diskGb": 3 * 400 + 3 * 1000,
    }
    for entry in summary["tiers"]:
        tier = tiers[entry["name"]]
        assert (entry["nodes"], entry["vcpu"], entry["memoryGb"], entry["diskGb"]) == (
            len(tier.nodes), tier.vcpu * len(tier.nodes), tier.memory_gb * len(tier.nodes), tier.disk_gb * len(tier.nodes)
        )
        assert entry["ips"] == [str(node.ip) for node in tier.nodes]
    schedules = {entry["name"]: entry["schedule"] for entry in summary["tiers"]}
    assert schedules == {"always-on": "always", "heavy-compute": "18:00–06:00 Europe/Berlin, brought up from 17:30, drained from 05:45"}
    for node, placed in zip(summary["nodes"], prod_config.placed_nodes):
        opened = {(p["port"], source) for p in node["openPorts"] for source in p["sources"]}
        assert opened == {(r.ports, r.source) for r in fw.firewall_rules(prod_config, placed)}
    markdown = (rendered.out / "summary.md").read_text()
    assert "| **total declared** |  |  | 6 | 336 | 1380 GB | 4200 GB |" in markdown


# ---- containers.sh, run ----


def run_containers_sh(rendered: Rendered, node: str, docker_dir: Path, **env: str) -> None:
    """Runs a node's containers.sh with sh, the secrets exported and `docker` from `docker_dir`."""
    script = node_dir(rendered, node) / "containers.sh"
    run("sh", str(script), env={"PATH": f"{docker_dir}:/usr/bin:/bin", **SECRETS, **env})


@pytest.fixture(scope="module")
def docker_argvs(rendered, prod_config, tmp_path_factory) -> dict[str, list[list[str]]]:
    """Each node's `docker` invocations, as sh passes them when running containers.sh."""
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "docker").write_text(RECORDING_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    argvs = {}
    for placed in prod_config.placed_nodes:
        log = bin_dir / f"{placed.node.name}.jsonl"
        run_containers_sh(rendered, placed.node.name, bin_dir, DOCKER_ARGV_LOG=str(log))
        argvs[placed.node.name] = [json.loads(line) for line in log.read_text().splitlines()]
    return argvs


def test_containers_sh_needs_the_secrets_from_the_environment(rendered, prod_config):
    head = node_dir(rendered, prod_config.head.node.name) / "containers.sh"
    result = subprocess.run(["/bin/sh", str(head)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert result.returncode != 0 and "pulumi stack output --show-secrets redisPassword" in result.stderr
    assert not any(secret in head.read_text() for secret in SECRETS.values())
    worker = node_dir(rendered, "ray-hc-1") / "containers.sh"
    result = subprocess.run(["/bin/sh", str(worker)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert result.returncode != 0 and "pulumi stack output --show-secrets rayToken" in result.stderr


def test_each_node_runs_its_containers(docker_argvs, prod_config):
    monitor = prod_config.monitoring_host.node.name
    for node, argvs in docker_argvs.items():
        names = [argv[argv.index("--name") + 1] for argv in argvs]
        proxy = ["ray-dashboard-proxy"] * (node == prod_config.head.node.name)  # the dashboard's TLS proxy
        expected = (
            ["image-mirror"] * (node == monitor)
            + [redis_store.CONTAINER_NAME] * (node == prod_config.redis_host.node.name)
            + [ray_start.CONTAINER_NAME, *proxy, "node-exporter", "cadvisor"]
            + ["prometheus", "grafana", "alertmanager"] * (node == monitor)
        )
        assert names == expected and all(argv[:2] == ["run", "--detach"] for argv in argvs)
        for argv in argvs:
            assert argv[argv.index("--network") + 1] == "host" and argv[argv.index("--restart") + 1] == "unless-stopped"
            assert not {"-p", "--publish", "-P", "--publish-all"} & set(argv), "published ports bypass UFW"


def test_ray_start_uses_only_flags_of_ray_2_60_and_parses_back(docker_argvs, prod_config):
    from ray.scripts.scripts import start

    known = {option for param in start.params for option in param.opts}  # hidden ones too (--labels)
    for placed in prod_config.placed_nodes:
        (argv,) = [a for a in docker_argvs[placed.node.name] if a[a.index("--name") + 1] == ray_start.CONTAINER_NAME]
        assert argv[-3:-1] == ["sh", "-c"]
        run("sh", "-n", "-c", argv[-1])  # the entrypoint script itself
        (line,) = [line for line in argv[-1].splitlines() if line.startswith("ray start ")]
        args = shlex.split(line.removesuffix(" &"))[2:]
        assert {arg.split("=", 1)[0] for arg in args if arg.startswith("--")} <= known
        params = start.make_context("start", args).params  # click's own parser, types included
        assert params["block"] and params["head"] == placed.node.head
        assert params["node_ip_address"] == str(placed.node.ip) and params["node_name"] == placed.node.name
        # The object store: 30 % of the VM's memory (Pulumi.prod.yaml sets no objectStoreFraction: the default).
        assert params["num_cpus"] == placed.tier.vcpu and params["object_store_memory"] == placed.tier.memory_gb * 2**30 * 3 // 10
        from ray._private.label_utils import parse_node_labels_string

        role = "head" if placed.node.head else "worker"
        assert parse_node_labels_string(params["labels"]) == {"tier": placed.tier_name, "role": role}
        # The head's password: the shell expands it from the secret environment when the container starts.
        assert params["redis_password"] == ("$RAY_REDIS_PASSWORD" if placed.node.head else "")
        assert json.loads(params["resources"]) == {f"tier:{placed.tier_name}": placed.tier.vcpu}
        assert params["address"] == (None if placed.node.head else "10.20.0.11:6379")


# ---- containers.sh, as Docker reads it, against what Pulumi declares ----


class FakeEngine(BaseHTTPRequestHandler):
    """Just enough Docker Engine API for `docker run --detach`; records each create."""

    protocol_version = "HTTP/1.1"
    created: list[tuple[str, dict]] = []

    def log_message(self, *args) -> None:
        pass

    def address_string(self) -> str:
        return "docker.sock"

    def reply(self, status: int, body: object = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("API-Version", "1.43")
            self.send_header("OSType", "linux")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except BrokenPipeError:
            pass  # `run --detach` hangs up on its wait for the exit once the container started

    def do_HEAD(self) -> None:
        self.reply(200)

    def do_GET(self) -> None:
        self.reply(200, None if "/_ping" in self.path else {})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urllib.parse.urlsplit(self.path)
        if url.path.endswith("/containers/create"):
            (name,) = urllib.parse.parse_qs(url.query)["name"]
            self.created.append((name, json.loads(body)))
            self.reply(201, {"Id": name, "Warnings": []})
        elif url.path.endswith("/wait"):
            self.reply(200, {"StatusCode": 0})
        else:
            self.reply(204)


class EngineServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def fake_engine(tmp_path) -> Iterator[Path]:
    require_tool("docker", "docker.io, for its CLI (no engine: a fake one answers on a unix socket)")
    socket_path = tmp_path / "docker.sock"
    server = EngineServer(str(socket_path), FakeEngine)
    FakeEngine.created = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield socket_path
    finally:
        server.shutdown()
        server.server_close()


def seconds_ns(duration: str) -> int:
    """A duration as Docker's CLI ("60s") or Go ("1m0s") writes it, in nanoseconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, duration
    hours, minutes, seconds = (int(x or 0) for x in parts.groups())
    return ((hours * 60 + minutes) * 60 + seconds) * 10**9


def engine_view(name: str, body: dict) -> dict:
    """What the engine is asked to create, in comparable terms."""
    host = body["HostConfig"]
    health = body["Healthcheck"]
    assert health["Test"][0] == "CMD-SHELL"
    return {
        "name": name,
        "image": body["Image"],
        "command": body["Cmd"],
        # The Docker CLI keeps neither the order of variables nor that of -v binds.
        "env": sorted(body["Env"] or []),
        "network": host["NetworkMode"],
        "pid": host["PidMode"],
        "privileged": host["Privileged"],
        "binds": sorted(host["Binds"] or []),
        "mounts": [
            (m["Type"], m["Source"], m["Target"], m.get("ReadOnly", False), (m.get("BindOptions") or {}).get("Propagation"))
            for m in host.get("Mounts") or []
        ],
        "devices": [(d["PathOnHost"], d["PathInContainer"]) for d in host["Devices"] or []],
        "restart": host["RestartPolicy"]["Name"],
        # The shell form runs the same argv.
        "health": (["CMD", *shlex.split(health["Test"][1])], health["Interval"], health["Timeout"], health["Retries"], health["StartPeriod"]),
        "shm_bytes": host["ShmSize"],
        "stop_timeout": body.get("StopTimeout"),
        "labels": body["Labels"] or {},
        "log": (host["LogConfig"]["Type"] or None, host["LogConfig"]["Config"] or {}),
        "user": body.get("User") or "",
    }


# Container inputs the comparison covers; a new one must be rendered (and added here) first.
COMPARED_INPUTS = {
    "name", "image", "command", "envs", "networkMode", "pidMode", "privileged", "volumes", "mounts",
    "devices", "restart", "healthcheck", "shmSize", "stopTimeout", "labels", "logDriver", "logOpts",
    "user",
    "destroyGraceSeconds",  # Pulumi's own wait when deleting; equals stopTimeout, checked below
    "wait", "waitTimeout",  # Pulumi's own wait for a healthy container when creating it: nothing on the VM
}


def pulumi_view(container, image_name: str) -> dict:
    """What the Pulumi component declares, in the same terms."""
    i = container.inputs
    assert set(i) <= COMPARED_INPUTS, set(i) - COMPARED_INPUTS
    assert i.get("destroyGraceSeconds") == i.get("stopTimeout")
    health = i["healthcheck"]
    return {
        "name": i["name"],
        "image": image_name,
        "command": i.get("command"),
        "env": sorted(i.get("envs") or []),
        "network": i["networkMode"],
        "pid": i.get("pidMode", ""),
        "privileged": i.get("privileged", False),
        "binds": sorted(
            f"{v.get('hostPath') or v['volumeName']}:{v['containerPath']}" + (":ro" if v.get("readOnly") else "")
            for v in i.get("volumes") or []
        ),
        "mounts": [
            (m["type"], m["source"], m["target"], m.get("readOnly", False), (m.get("bindOptions") or {}).get("propagation"))
            for m in i.get("mounts") or []
        ],
        "devices": [(d["hostPath"], d["containerPath"]) for d in i.get("devices") or []],
        "restart": i["restart"],
        "health": (
            health["tests"], seconds_ns(health["interval"]), seconds_ns(health["timeout"]),
            int(health["retries"]), seconds_ns(health["startPeriod"]),
        ),
        "shm_bytes": int(i.get("shmSize", 0)) * 2**20,
        "stop_timeout": int(i["stopTimeout"]) if "stopTimeout" in i else None,
        # The head container's id exists only at deploy time (the engine orders replacements by it).
        "labels": {label["label"]: label["value"] for label in i.get("labels") or [] if label["label"] != HEAD_CONTAINER_LABEL},
        "log": (i.get("logDriver"), i.get("logOpts") or {}),
        "user": i.get("user", ""),
    }


def test_docker_creates_exactly_the_containers_pulumi_declares(rendered, prod_config, fake_engine, tmp_path):
    docker_dir = Path(shutil.which("docker")).parent
    rendered_views = {}
    for placed in prod_config.placed_nodes:
        FakeEngine.created = []
        run_containers_sh(
            rendered, placed.node.name, docker_dir,
            DOCKER_HOST=f"unix://{fake_engine}", DOCKER_CONFIG=str(tmp_path / "docker-config"),
        )
        for name, body in FakeEngine.created:
            rendered_views[placed.node.name, name] = engine_view(name, body)

    raw = prod_raw()
    raw["at"] = NIGHT.isoformat()
    program = run_program(raw, tmp_path)
    images = {r.urn: r.inputs["name"] for r in program.of_type("docker:index/remoteImage:RemoteImage")}
    declared = {}
    for container in program.of_type("docker:index/container:Container"):
        node = next(p.node.name for p in prod_config.placed_nodes if container.name.startswith(f"{p.node.name}-"))
        (image,) = [images[urn] for urn in container.dependencies if urn in images]
        declared[node, container.inputs["name"]] = pulumi_view(container, image)
    assert rendered_views.keys() == declared.keys()
    for key, view in declared.items():
        assert rendered_views[key] == view, key


# ---- Another instant, and the command line ----


def test_noon_marks_heavy_nodes_not_live_and_drops_their_targets(prod_config):
    files = render.render(prod_config, "prod", NOON)
    summary = json.loads(files[render.SUMMARY_JSON])
    heavy = {p.node.name: str(p.node.ip) for p in prod_config.placed_nodes if p.tier_name == "heavy-compute"}
    assert summary["liveTiers"] == ["always-on"]
    assert {n["name"] for n in summary["nodes"] if not n["live"]} == set(heavy)
    assert summary["totals"]["live"] == {"nodes": 3, "vcpu": 96, "memoryGb": 330, "diskGb": 1200}
    targets = [text for path, text in files.items() if path.startswith("monitoring/prometheus/targets/")]
    assert len(targets) == len(mc.SCRAPE_JOBS)
    listed = " ".join(targets)
    assert not any(ip in listed for ip in heavy.values()) and str(prod_config.head.node.ip) in listed
    for name in heavy:  # still rendered, and still expected by the alerts at night
        assert f"Live at {NOON.isoformat()}: no." in files[f"nodes/{name}/containers.sh"]
        assert f'node="{name}"' in files[f"monitoring/node-exporter-textfile/{mc.EXPECTED_NODES_FILE}"]


def test_rerender_replaces_an_earlier_render_but_never_a_foreign_directory(tmp_path, capsys):
    out = tmp_path / "render"
    render_cli.main(["--stack", "prod", "--out", str(out), "--at", NIGHT.isoformat()])
    (out / "nodes" / "stale-node").mkdir()
    render_cli.main(["--stack", "prod", "--out", str(out), "--at", NOON.isoformat()])
    assert not (out / "nodes" / "stale-node").exists() and summary_of(out)["at"] == NOON.isoformat()
    assert capsys.readouterr().out.endswith(f"(live tiers: always-on) into {out}\n")

    foreign = tmp_path / "home"
    (foreign / "notes.txt").parent.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not an earlier render"):
        render_cli.main(["--stack", "prod", "--out", str(foreign)])
    assert (foreign / "notes.txt").read_text() == "mine"


def test_an_instant_without_offset_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        render_cli.main(["--stack", "prod", "--out", str(tmp_path / "x"), "--at", "2026-11-22T22:00"])
    assert "--at" in capsys.readouterr().err and not (tmp_path / "x").exists()
