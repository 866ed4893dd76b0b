"""The rehearsal's monitoring host: the shared local Prometheus, targets kept to what runs here, the alerts seen.

The targets are what the program writes for a config at an instant, each
node's Ray ports remapped to its local node. Nodes that do not run here get a
port that refuses every connection: their targets are down, as a missing VM's
would be, and no scrape ever leaves this machine.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import socket
import time
from pathlib import Path
from typing import Optional

from components.model.config import ClusterConfig
from components.model.ports import RayPorts
from components.render.monitoring_config import Endpoint
from scripts.ops.local_cluster import LOOPBACK
from scripts.ops.local_monitoring import LocalPrometheus, on_one_port
from scripts.ops.rehearsal_setup import PROMETHEUS_WAIT_S, StepFailed, say, wait_until


def unix_seconds(rfc3339_utc: str) -> float:
    """Prometheus' timestamps (UTC, up to nanoseconds) as Unix seconds."""
    whole, _, fraction = rfc3339_utc.removesuffix("Z").partition(".")
    return dt.datetime.fromisoformat(whole).replace(tzinfo=dt.timezone.utc).timestamp() + float(f"0.{fraction or 0}")


class LocalMonitoring:
    def __init__(self, cfg: ClusterConfig, work: Path):
        self.cfg = cfg
        self.prometheus = LocalPrometheus(work)
        self.url = self.prometheus.url
        self.installed = bool(shutil.which("prometheus"))
        self.local_ray: dict[str, RayPorts] = {}  # node name -> ports, for nodes whose Ray runs here
        self.view = (cfg, cfg.instant())  # the config and instant the targets are written for
        self.refused_port: Optional[int] = None
        self.watching_since = time.time()  # alerts before this are not the rehearsal's

    @property
    def processes(self):
        return self.prometheus.processes

    @property
    def ports(self) -> set[int]:
        return self.prometheus.ports

    def start(self, stack: contextlib.ExitStack) -> None:
        """Lay out the rendered files, start node-exporter and Prometheus; closing `stack` stops them."""
        if not self.installed:
            say("prometheus is not installed (scripts/install.sh installs it): the rehearsal runs without monitoring")
            return
        refuser = stack.enter_context(socket.socket())  # bound, never listening
        refuser.bind((LOOPBACK, 0))
        self.refused_port = refuser.getsockname()[1]
        self.prometheus.write_expected_nodes(self.cfg, self.cfg.instant())
        self._write_targets()
        node_exporter = bool(shutil.which("prometheus-node-exporter"))
        if not node_exporter:
            say("prometheus-node-exporter is not installed: nothing serves the expected-nodes file, the node alerts are blind")
        self.prometheus.start(stack, node_exporter=node_exporter)
        wait_until("Prometheus to be ready", self.prometheus.ready, PROMETHEUS_WAIT_S)
        # Until then the rules run on no data: absent() is true and every node looks missing.
        wait_until("Prometheus's first scrape of every target", self.prometheus.every_target_scraped, PROMETHEUS_WAIT_S, every=0.5)
        self.watching_since = time.time()

    def running(self, node_name: str, ports: Optional[RayPorts]) -> None:
        """A node's Ray now listens at `ports` (None: it is gone)."""
        if ports:
            self.local_ray[node_name] = ports
        else:
            self.local_ray.pop(node_name, None)
        self._write_targets()

    def show(self, cfg: ClusterConfig, at: dt.datetime) -> None:
        """The targets the program writes for `cfg` at instant `at` (as a tier change rewrites them)."""
        self.view = (cfg, at)
        self._write_targets()

    def _write_targets(self) -> None:
        if self.refused_port is None:
            return  # not started
        cfg, at = self.view
        nowhere = on_one_port(self.refused_port)
        served = self.prometheus.serving(nowhere.monitoring)
        endpoints = {
            p.node.name: Endpoint(
                LOOPBACK,
                self.local_ray.get(p.node.name, nowhere.ray),
                served if p.node.name == cfg.monitoring_host.node.name else nowhere.monitoring,
            )
            for p in cfg.placed_nodes
        }
        self.prometheus.write_targets(cfg, at, endpoints)

    def node_rules_evaluated(self) -> bool:
        """Whether a whole evaluation of the rules has run on the expected-nodes data."""
        recorded = self.prometheus.query("timestamp(raycluster:node_expected)")
        if not recorded:
            return False
        # A group's lastEvaluation is the wall-clock start of its last finished evaluation,
        # never before the timestamp that evaluation gives its samples.
        return all(
            unix_seconds(group["lastEvaluation"]) >= max(float(r["value"][1]) for r in recorded)
            for group in self.prometheus.api("rules")["groups"]
        )

    def alerts_seen(self, patient: bool) -> list[dict]:
        """Every alert pending or firing during the rehearsal.

        ALERTS since Prometheus first scraped every target, and /api/v1/alerts
        for now: a fresh Prometheus writes ALERTS only from its third evaluation
        (it restores `for` state after two), while the alerts API shows active
        alerts from the first.
        `patient`: first wait until the rules have run on node-exporter's data.
        """
        if not self.processes:
            return []
        if patient and "node-exporter" in self.processes:
            say("waiting for Prometheus to evaluate the alert rules on the rehearsal's metrics ...")
            with contextlib.suppress(StepFailed):
                wait_until("the node rules", self.node_rules_evaluated, PROMETHEUS_WAIT_S, every=2)
        seen: dict[tuple, str] = {}

        def note(labels: dict, state: str) -> None:
            key = (labels["alertname"], labels.get("node", ""), labels.get("tier", ""), labels.get("job", ""))
            seen[key] = "firing" if "firing" in (state, seen.get(key)) else "pending"

        span = max(1, int(time.time() - self.watching_since))  # rounded down: no evaluation from before
        for series in self.prometheus.query(f"max_over_time(ALERTS[{span}s])"):
            note(series["metric"], series["metric"]["alertstate"])
        for alert in self.prometheus.api("alerts")["alerts"]:
            note(alert["labels"], alert["state"])
        return [{"alert": name, "state": state, "node": node, "tier": tier, "job": job} for (name, node, tier, job), state in sorted(seen.items())]
