"""The scheduler's report on the night's edges: the smoke test after the evening bring-up, and
per node in the morning what its drain saw and whether its logs reached the monitoring host.

The drain program prints one line `DRAIN_REPORT_PREFIX {json}` per node (through Pulumi's
output, where `scheduling.pulumi_lines` collects it): drained or not, tasks finished and cut
at the deadline, objects kept and lost. The logs are counted on the monitoring host, over SSH
with its pinned host key (components/render/log_shipping.py files them per day and node).
"""
from __future__ import annotations

import datetime as dt
import json
import shlex
import sys
from typing import Any, Callable, Optional

from components.model.config import ClusterConfig
from components.render import drain_program, log_shipping
from components.render.ssh_client import ssh_options

DRAIN_REPORT_PREFIX = drain_program.REPORT_PREFIX
SMOKE_TASKS = 20
SMOKE_TIMEOUT_S = 300.0


def smoke_test(address: str, tiers: list[str], run: Callable[[list[str]], tuple[int, str]]) -> list[dict]:
    """`scripts/smoke_test.py` on `tiers`, in its own process (its Ray client comes and goes with it)."""
    argv = [sys.executable, "-m", "scripts.smoke_test", "--address", address, "--json",
            "--tasks", str(SMOKE_TASKS), "--timeout", str(SMOKE_TIMEOUT_S)]
    argv += [arg for tier in tiers for arg in ("--tier", tier)]
    code, out = run(argv)
    try:
        return json.loads(out)
    except ValueError:
        return [{"tier": tier, "ok": False, "error": f"the smoke test exited {code} without a report"} for tier in tiers]


def parse_drain_report(line: str) -> Optional[dict]:
    """The drain program's report in a line of Pulumi's output, or None."""
    if DRAIN_REPORT_PREFIX not in line:
        return None
    try:
        report = json.loads(line[line.index(DRAIN_REPORT_PREFIX) + len(DRAIN_REPORT_PREFIX):])
    except ValueError:
        return None
    return report if isinstance(report, dict) and "node" in report else None


def night_dates(at: dt.datetime) -> list[str]:
    """The archive's day directories a night ending at `at` may have written (the hosts keep UTC)."""
    day = at.astimezone(dt.timezone.utc).date()
    return [(day - dt.timedelta(days=1)).isoformat(), day.isoformat()]


def archived_lines_command(cfg: ClusterConfig, host_public_key: str, node: str, at: dt.datetime) -> list[str]:
    """ssh to the monitoring host that counts `node`'s archived lines of the night."""
    monitor = str(cfg.monitoring_host.node.ip)
    files = " ".join(f"{log_shipping.ARCHIVE_DIR}/{day}/{shlex.quote(node)}/*.log" for day in night_dates(at))
    return ["ssh", *ssh_options(monitor, host_public_key), f"{cfg.ssh.user}@{monitor}", f"cat {files} 2>/dev/null | wc -l"]


def morning(
    cfg: ClusterConfig, removed: list[str], drains: dict[str, dict], at: dt.datetime,
    host_keys: dict[str, str], run: Callable[[list[str]], tuple[int, str]],
) -> dict[str, dict[str, Any]]:
    """Per removed node: its drain's report (or that there was none) and its archived log lines."""
    monitor = cfg.monitoring_host.node.name
    report = {}
    for node in removed:
        drained = drains.get(node) or {"drained": False, "error": "no drain report (the node was not drained)"}
        entry = {key: value for key, value in drained.items() if key != "node"}
        code, out = run(archived_lines_command(cfg, host_keys[monitor], node, at)) if monitor in host_keys else (1, "")
        entry["logsArchived"] = int(out.strip()) if code == 0 and out.strip().isdigit() else None
        report[node] = entry
    return report


def lost_anything(morning_report: dict[str, dict]) -> bool:
    """A morning with work or results lost, or logs missing, must not look like a normal one."""
    return any(
        not entry.get("drained") or entry.get("tasksCut") or (entry.get("objectsLost") or {}).get("count")
        or not entry.get("logsArchived")
        for entry in morning_report.values()
    )
