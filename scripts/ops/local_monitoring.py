"""Debian's Prometheus and node-exporter on 127.0.0.1, from the files the program writes on the monitoring host.

The rendered prometheus.yml, alert rules and scrape targets (each node's
exporters remapped to local ports: `Endpoint`s), and the expected-nodes file
served by node-exporter's textfile collector, as on the monitoring host. Both
run in their own process group, stopped with the ExitStack they were started
on. Shared by the rehearsal and the monitoring tests:

    prometheus = LocalPrometheus(work)
    prometheus.write_targets(cfg, at, endpoints)
    prometheus.write_expected_nodes(cfg, at)
    prometheus.start(stack)
    prometheus.query("up")
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Mapping

from components.model.config import ClusterConfig
from components.model.ports import MonitoringPorts, RayPorts
from components.render import monitoring_config as mc
from components.render.monitoring_config import Endpoint
from scripts.ops.local_cluster import LOOPBACK


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def on_one_port(port: int) -> Endpoint:
    """Every exporter of a node at one local port (a refusing one: the node is not here)."""
    return Endpoint(
        LOOPBACK,
        RayPorts(**{f.name: port for f in dataclasses.fields(RayPorts)}),
        MonitoringPorts(**{f.name: port for f in dataclasses.fields(MonitoringPorts)}),
    )


@contextlib.contextmanager
def background(command: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """A process in its own process group for the block; the group is stopped afterwards."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
                break


class LocalPrometheus:
    def __init__(self, work: Path):
        self.work = work
        self.config_dir = work / "prometheus"
        self.textfile_dir = work / "textfile"
        self.prometheus_port, self.node_exporter_port = free_port(), free_port()
        self.url = f"http://{LOOPBACK}:{self.prometheus_port}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.target_count = 0  # in the files last written
        self._write({mc.PROMETHEUS_YML: mc.prometheus_yml(), **mc.rule_files()}, self.config_dir)

    def serving(self, monitoring: MonitoringPorts) -> MonitoringPorts:
        """The monitoring host's ports, with this Prometheus and node-exporter in them."""
        return dataclasses.replace(monitoring, prometheus=self.prometheus_port, node_exporter=self.node_exporter_port)

    def write_targets(self, cfg: ClusterConfig, at: dt.datetime, endpoints: Mapping[str, Endpoint]) -> None:
        files = mc.scrape_targets(cfg, at, endpoints)
        self.target_count = sum(len(json.loads(text)) for text in files.values())
        self._write(files, self.config_dir)

    def write_expected_nodes(self, cfg: ClusterConfig, at: dt.datetime) -> None:
        self._write({mc.EXPECTED_NODES_FILE: mc.expected_nodes_metrics(cfg, at)}, self.textfile_dir)

    @staticmethod
    def _write(files: Mapping[str, str], root: Path) -> None:
        for relative, text in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".tmp").write_text(text)
            path.with_suffix(".tmp").replace(path)  # Prometheus re-reads a file replaced whole

    def start(self, stack: contextlib.ExitStack, node_exporter: bool = True) -> None:
        """node-exporter (unless told not to) and Prometheus; closing `stack` stops them."""
        if node_exporter:
            self.processes["node-exporter"] = stack.enter_context(background(
                ["prometheus-node-exporter", f"--web.listen-address={LOOPBACK}:{self.node_exporter_port}",
                 f"--collector.textfile.directory={self.textfile_dir}"],
                self.work / "node-exporter.log",
            ))
        self.processes["prometheus"] = stack.enter_context(background(
            ["prometheus", f"--config.file={self.config_dir / mc.PROMETHEUS_YML}",
             f"--storage.tsdb.path={self.work / 'prometheus-data'}", f"--web.listen-address={LOOPBACK}:{self.prometheus_port}"],
            self.work / "prometheus.log",
        ))

    @property
    def ports(self) -> set[int]:
        return {self.prometheus_port, self.node_exporter_port} if self.processes else set()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                return response.status == 200
        except OSError:  # not listening yet
            return False

    def every_target_scraped(self) -> bool:
        targets = self.api("targets", state="active")["activeTargets"]
        return len(targets) == self.target_count and all(t["health"] != "unknown" for t in targets)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        if body["status"] != "success":
            raise RuntimeError(f"Prometheus answered {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def alerting(self, alertname: str) -> set[str]:
        """The nodes `alertname` is pending or firing for now."""
        return {a["labels"].get("node", "") for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == alertname}

