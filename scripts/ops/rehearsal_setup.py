"""What the rehearsal runs on this machine: which nodes, their share of it, which nights.

Also its vocabulary: progress lines for the person watching (`say`), waits
that keep telling them (`wait_until`), and the failures that end a step.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

from components.model.config import ClusterConfig, PlacedNode
from components.model.schedule import DailyWindow, Occurrence
from components.render import ray_start
from components.render.ray_start import RayNodeSettings
from scripts.ops.local_cluster import Heartbeat, localize

PORT_OFFSET = 6000  # the shipped Ray ports moved by this; node i's by i * NODE_PORT_STEP more
NODE_PORT_STEP = 10
WORKER_PORTS = (42000, 43999)  # shared out between the nodes
MIN_CPUS_PER_NODE = 2
OBJECT_STORE_SHARE = 0.05  # of this machine's available memory, shared out between the nodes
MIN_OBJECT_STORE_BYTES = 100 * 2**20
SMOKE_TASKS = 20  # per tier
NIGHT_TASK_SECONDS = (6, 7, 8)
PROMETHEUS_WAIT_S = 60
STEP_TIMEOUT_S = 120


class StepFailed(Exception):
    """A step did not do what production needs; the message says what."""


class PortsBusy(Exception):
    def __init__(self, ports: list[int]):
        shown = ", ".join(map(str, ports[:10])) + (" ..." if len(ports) > 10 else "")
        super().__init__(f"ports the rehearsal needs are in use ({shown}): another rehearsal or Ray on this machine? Try another --port-offset")


def say(message: str) -> None:
    """One progress line for the person watching (stderr)."""
    print(f"[rehearse {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(what: str, probe: Callable[[], Any], timeout: float, every: float = 1) -> Any:
    """probe() until it answers, saying so on long waits."""
    heartbeat = Heartbeat(what, timeout, say)
    while not (result := probe()):
        if time.monotonic() > heartbeat.started + timeout:
            raise StepFailed(f"waited {timeout:g}s for {what}")
        heartbeat.tick()
        time.sleep(every)
    return result


# ---- What runs here ----


def rehearsal_nodes(cfg: ClusterConfig) -> list[PlacedNode]:
    """The head, then the first node of every other tier."""
    return [cfg.head] + [
        next(p for p in cfg.placed_nodes if p.tier_name == tier) for tier in cfg.tiers if tier != cfg.head.tier_name
    ]


@dataclasses.dataclass(frozen=True)
class MachineShare:
    """What each rehearsal node gets of this machine."""

    cpus: int
    object_store_bytes: int


def machine_share(node_count: int) -> MachineShare:
    """This machine's cores and a slice of its available memory, shared out between the nodes."""
    cpus = max(MIN_CPUS_PER_NODE, (os.cpu_count() or 1) // node_count)
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return MachineShare(cpus, max(MIN_OBJECT_STORE_BYTES, int(available * OBJECT_STORE_SHARE / node_count)))


def local_settings(cfg: ClusterConfig, nodes: list[PlacedNode], root: Path, port_offset: int, share: MachineShare) -> list[RayNodeSettings]:
    """The rendered settings, localized, with this machine's share (never more than the VM's)."""
    rendered = [ray_start.node_settings(cfg, p) for p in nodes]
    localized = localize(rendered, root, port_offset, NODE_PORT_STEP, WORKER_PORTS)
    shared = []
    for s, vm in zip(localized, rendered):
        store = min(share.object_store_bytes, vm.object_store_bytes)
        shared.append(dataclasses.replace(s, num_cpus=min(share.cpus, vm.num_cpus), object_store_bytes=store, shm_bytes=store))
    return shared


def rehearsed_windows(cfg: ClusterConfig) -> dict[str, DailyWindow]:
    """The tiers whose schedule comes and goes; a tier held by an override has no evening or morning."""
    return {name: window for name, tier in cfg.tiers.items() if (window := tier.scheduled_window)}


def next_window(window: DailyWindow, after: dt.datetime) -> Occurrence:
    """The first occurrence of `window` that starts after `after`."""
    local_date = after.astimezone(ZoneInfo(window.timezone)).date()
    return next(w for w in (window.occurrence(local_date + dt.timedelta(days=d)) for d in range(3)) if w.start > after)


def every_tier_on(cfg: ClusterConfig) -> ClusterConfig:
    """The config with every tier's override `on`: what the program renders while every tier runs."""
    return cfg.model_copy(update={"tiers": {name: tier.model_copy(update={"override": "on"}) for name, tier in cfg.tiers.items()}})


def wall_clock(instant: dt.datetime, timezone: str) -> str:
    return instant.astimezone(ZoneInfo(timezone)).strftime(f"%a %H:%M {timezone}")
