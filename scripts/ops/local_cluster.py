"""A real Ray cluster on this machine, started from the rendered container commands.

Each node runs exactly `sh -c <entrypoint_script>` with the container's
environment, as Docker would run it, but with addresses, ports, sizes and
directories remapped (`localize`) so several nodes share 127.0.0.1. Used by the
Ray integration tests and the local rehearsal:

    with LocalCluster(localize(rendered, root, first_offset=1000, ...)) as cluster:
        ...  # cluster.client_env() lets drivers and tools in

Ray's TLS is on, as rendered: a throwaway CA (local_tls.py) issues each node's
certificate from the profile the program issues it from, into the node's own
TLS directory. Drivers get the head's credentials (`client_env`: a driver at
the GCS address serves gRPC too, as it would on the head), Ray Client tools
the operators' client-only certificate (`operator_env`).

Nodes start one after another (started together they race for socket names)
and are stopped on exit, also when something failed: every process group of
each node's session, then a wait until none of its ports listens.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from components.model.config import ClusterConfig
from components.render import ray_start
from components.render import tls
from components.render.ray_start import RayNodeSettings
from scripts.ops.local_tls import LocalCa

LOOPBACK = "127.0.0.1"
PROGRESS_EVERY_S = 10
PORTS_TIMEOUT_S = 30  # a stopped node's ports close within this


class Heartbeat:
    """A word every PROGRESS_EVERY_S while something is awaited, for whoever watches."""

    def __init__(self, what: str, timeout: float, say: Callable[[str], None]):
        self.what, self.timeout, self.say = what, timeout, say
        self.started = time.monotonic()
        self.next_word = self.started + PROGRESS_EVERY_S

    def tick(self) -> None:
        if time.monotonic() >= self.next_word:
            self.say(f"still waiting for {self.what} ({time.monotonic() - self.started:.0f}s of {self.timeout:g}s)")
            self.next_word += PROGRESS_EVERY_S


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120) -> Any:
    """probe() every second until it answers (its answer), or TimeoutError after `timeout` s."""
    give_up = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > give_up:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(1)
    return result


def localize(
    rendered: Sequence[RayNodeSettings],
    root: Path,
    first_offset: int,
    offset_step: int,
    worker_ports: tuple[int, int],
    object_store_bytes: int = 100 * 2**20,
    shutdown_drain_seconds: int = 5,
    redis_port: Optional[int] = None,
) -> list[RayNodeSettings]:
    """Rendered settings remapped to this machine; everything else as rendered.

    Node i's ports move by first_offset + i * offset_step and it gets its own
    slice of `worker_ports`; its temp, spill and TLS dirs go under root/<i>. The
    head keeps its GCS state in a Redis at 127.0.0.1:`redis_port` if given (the
    caller runs it), else in memory, as without GCS fault tolerance. The
    object store is small, and a short SIGTERM drain keeps stopping quick.
    """
    low, high = worker_ports
    slice_size = (high - low + 1) // len(rendered)
    ports = [
        s.ports.shifted(first_offset + i * offset_step, (low + i * slice_size, low + (i + 1) * slice_size - 1))
        for i, s in enumerate(rendered)
    ]
    head_gcs_port = next(p.gcs for s, p in zip(rendered, ports) if s.is_head)
    local = []
    for i, s in enumerate(rendered):
        node_dir = root / str(i)
        store = dataclasses.replace(s.gcs_store, address=f"{LOOPBACK}:{redis_port}") if s.gcs_store and redis_port else None
        local.append(
            dataclasses.replace(
                s,
                gcs_store=store,
                node_ip=LOOPBACK,
                head_ip=LOOPBACK,
                head_gcs_port=head_gcs_port,
                ports=ports[i],
                object_store_bytes=object_store_bytes,
                shm_bytes=object_store_bytes,
                temp_dir=str(node_dir / "tmp"),
                spill_dir=str(node_dir / "spill"),
                shutdown_drain_seconds=shutdown_drain_seconds,
                tls_dir=str(node_dir / "tls"),
            )
        )
    return local


def advertised_ip() -> str:
    """The address Ray advertises for a loopback node (it ignores 127.0.0.1, ray#26293):
    this machine's, which a local node's certificate must name as well."""
    from ray._common.network_utils import node_ip_address_from_perspective

    return node_ip_address_from_perspective()


@dataclasses.dataclass
class LocalNode:
    settings: RayNodeSettings
    process: subprocess.Popen  # the entrypoint's sh (or the unshare running it), leader of its own process group
    log_path: Path


class LocalCluster:
    """Context manager: start `nodes` (the head first), stop them all on exit."""

    def __init__(
        self,
        nodes: Sequence[RayNodeSettings],
        token: Optional[str] = None,
        join_timeout: float = 90,
        extra_env: Optional[Mapping[str, Mapping[str, str]]] = None,
        progress: Callable[[str], None] = lambda message: None,
        own_pid_namespaces: bool = False,
    ):
        """`extra_env`: node name -> variables added to its environment (as a tier's rayEnv adds to the container);
        `progress` hears about joins that take a while; `own_pid_namespaces` runs each node in
        its own PID namespace, as its container would: a node then sees no other node's
        processes (`ray start --head` refuses to start while it sees a raylet of its GCS address),
        and its processes die with its entrypoint."""
        heads = [s for s in nodes if s.is_head]
        if len(heads) != 1 or not nodes[0].is_head:
            raise ValueError("the first node, and only it, must be the head")
        self.settings = list(nodes)
        self.head = heads[0]
        self.token = token or secrets.token_hex(32)
        self.join_timeout = join_timeout
        self.progress = progress
        self.extra_env = dict(extra_env or {})
        self.launcher = ["unshare", "--pid", "--fork", "--mount-proc"] if own_pid_namespaces else []
        self.nodes: dict[str, LocalNode] = {}
        # Beside the head's own directories: whoever removes those removes the CA too.
        self.ca_dir = Path(self.head.tls_dir).parent / "cluster-ca"
        self.ca = LocalCa(self.ca_dir)
        self.operator_tls = self.ca.issue(tls.operator_profile(), self.ca_dir / "operator")

    @property
    def gcs_address(self) -> str:
        return f"{LOOPBACK}:{self.head.ports.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.head.ports.dashboard}"

    def client_env(self) -> dict[str, str]:
        """What a driver or a Ray tool on the head needs to join: the token, the head's
        TLS credentials, and this venv's tools first."""
        tools = str(Path(sys.executable).parent)
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            **tls.tls_env(self.head.tls_dir),
            "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def operator_env(self) -> dict[str, str]:
        """An operator elsewhere, with the stack outputs: the token and the client-only certificate."""
        return {"RAY_AUTH_TOKEN": self.token, **self.operator_tls}

    def __enter__(self) -> "LocalCluster":
        try:
            for s in self.settings:
                self.start_node(s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start_node(self, s: RayNodeSettings) -> LocalNode:
        """Start one node and wait until it joined: at __enter__, or later (a tier coming up)."""
        for directory in (s.temp_dir, s.spill_dir):
            Path(directory).mkdir(parents=True, exist_ok=True)
        log_path = Path(s.temp_dir).parent / "entrypoint.log"
        # What Pulumi writes to the VM before the container starts, issued from the same profile.
        self.ca.issue(tls.node_profile(s.node_name, s.node_ip), Path(s.tls_dir), extra_ips=[advertised_ip()])
        env = {**os.environ, **self.client_env(), **ray_start.ray_env(s), **self.extra_env.get(s.node_name, {})}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*self.launcher, "sh", "-c", ray_start.entrypoint_script(s)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.nodes[s.node_name] = LocalNode(s, process, log_path)
        self._wait_joined(s)
        return self.nodes[s.node_name]

    def _wait_joined(self, s: RayNodeSettings) -> None:
        node = self.nodes[s.node_name]
        heartbeat = Heartbeat(f"{s.node_name} to join", self.join_timeout, self.progress)
        while time.monotonic() < heartbeat.started + self.join_timeout:
            heartbeat.tick()
            if node.process.poll() is not None:
                raise RuntimeError(f"{s.node_name} exited with {node.process.returncode}:\n{node.log_path.read_text()[-3000:]}")
            if any(n["node_name"] == s.node_name and n["state"] == "ALIVE" for n in self._try_nodes()):
                return
            time.sleep(1)
        raise TimeoutError(f"{s.node_name} did not join within {self.join_timeout}s:\n{node.log_path.read_text()[-3000:]}")

    def _try_nodes(self) -> list[dict]:
        try:
            return self.list_nodes()
        except OSError:  # the head's dashboard is not up yet
            return []

    def list_nodes(self) -> list[dict]:
        """Every node the cluster knows (Ray's state API: node_name, node_ip, state, labels...)."""
        request = urllib.request.Request(
            f"{self.dashboard_url}/api/v0/nodes?limit=1000&detail=true",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["data"]["result"]["result"]

    def node_info(self, node_name: str) -> dict:
        """The state API's record of the most recent node with this name."""
        return max(
            (n for n in self.list_nodes() if n["node_name"] == node_name),
            key=lambda n: n["start_time_ms"],
        )

    def stop(self, grace_seconds: float = 20) -> None:
        """TERM every entrypoint (as `docker stop` would), then kill what is left."""
        running = [n for n in reversed(self.nodes.values()) if n.process.poll() is None]
        for node in running:
            node.process.send_signal(signal.SIGTERM)
        give_up = time.monotonic() + grace_seconds
        for node in running:
            try:
                node.process.wait(timeout=max(0.1, give_up - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for node in self.nodes.values():
            kill_node_processes(node)


def kill_node_processes(node: LocalNode, ports_timeout: float = PORTS_TIMEOUT_S) -> set[int]:
    """SIGKILL whatever is left of one node, then wait until none of its ports listens;
    the ports still listening after `ports_timeout` (none, normally).

    Whatever is left: every process group of the node's session (its entrypoint
    leads one: Ray's workers may start groups of their own, never a session) and
    of any process naming its temp dir; again until none is found, as a raylet
    may start a worker while it is being killed. A scoped `ray stop`: the real
    one would stop every Ray on the machine.
    """
    give_up = time.monotonic() + ports_timeout
    while groups := _node_groups(node) - {os.getpgrp()}:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        if time.monotonic() > give_up:
            break
        time.sleep(0.1)
    if node.process.poll() is None:
        node.process.wait(timeout=10)
    ports = node_ports(node.settings)
    while (still := ports & listening_ports()) and time.monotonic() < give_up:
        time.sleep(0.2)
    return still


def _node_groups(node: LocalNode) -> set[int]:
    """The process groups of the node's live processes: its session's, and any naming its temp dir.

    Zombies are dead already (and hold no port): whoever adopted them reaps them.
    """
    needle = node.settings.temp_dir.encode()
    groups = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            pid = int(proc.name)
            with contextlib.suppress(OSError):  # gone meanwhile
                if (proc / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                    continue
                if os.getsid(pid) == node.process.pid or needle in (proc / "cmdline").read_bytes():
                    groups.add(os.getpgid(pid))
    return groups


def node_ports(s: RayNodeSettings) -> set[int]:
    """Every port a node may listen on, its worker range included."""
    fields = {f.name: getattr(s.ports, f.name) for f in dataclasses.fields(s.ports)}
    return {port for name, port in fields.items() if name not in ("min_worker", "max_worker")} | set(
        range(fields["min_worker"], fields["max_worker"] + 1)
    )


def listening_ports() -> set[int]:
    """Every TCP port something listens on in this network namespace, on any address."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local_address, state = line.split()[1], line.split()[3]
                if state == "0A":  # TCP_LISTEN
                    ports.add(int(local_address.rsplit(":", 1)[1], 16))
    return ports


@contextlib.contextmanager
def rendered_cluster(
    cfg: ClusterConfig, node_names: Sequence[str], first_offset: int, worker_ports: tuple[int, int], num_cpus: int
) -> Iterator[LocalCluster]:
    """`cfg`'s nodes `node_names` as rendered, localized (ports moved by `first_offset`, 10
    more per node) and running here, with `num_cpus` each; their directories are removed after."""
    rendered = [ray_start.node_settings(cfg, p) for p in cfg.placed_nodes if p.node.name in node_names]
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are limited
    try:
        local = localize(rendered, root, first_offset, 10, worker_ports)
        with LocalCluster([dataclasses.replace(s, num_cpus=num_cpus) for s in local]) as running:
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def driver(cluster: LocalCluster):
    """`ray.init` into `cluster` from this process, with its token; undone on exit.

    Ray caches the auth mode and token per process: both are reloaded on the way
    in and out, so clusters with different tokens can follow each other.
    """
    import ray
    from ray._raylet import AuthenticationTokenLoader, Config

    def reload_auth() -> None:
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    auth = {k: v for k, v in cluster.client_env().items() if k != "PATH"}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    reload_auth()
    try:
        ray.init(address=cluster.gcs_address, log_to_driver=False, logging_level="warning")
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reload_auth()
