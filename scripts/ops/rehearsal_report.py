"""The rehearsal's report: which alerts it explains, and the summary a person reads."""
from __future__ import annotations

import datetime as dt
import json
from typing import Collection
from zoneinfo import ZoneInfo

from components.model.config import ClusterConfig
from components.render.alerting_config import WATCHDOG


def classify(alerts: list[dict], cfg: ClusterConfig, rehearsed_nodes: Collection[str], scheduled_tiers: Collection[str]) -> list[dict]:
    """Mark each alert expected when the rehearsal itself explains it."""
    monitor = cfg.monitoring_host.node.name
    for alert in alerts:
        node, job = alert["node"], alert["job"]
        why = "always fires: it tells a dead man's switch that monitoring is alive" if alert["alert"] == WATCHDOG else None
        if alert["alert"] in ("RayNodeMissing", "ScrapeTargetDown"):
            if node and node not in rehearsed_nodes:
                why = "the rehearsal runs one node per tier"
            elif alert["tier"] in scheduled_tiers:
                why = "the rehearsal brings its tier up and down at the schedule's instants; the rules read the real clock"
            elif job == "cadvisor":
                why = "cAdvisor does not run in the rehearsal"
            elif job == "node-exporter" and node != monitor:
                why = "one node-exporter runs here, the monitoring host's"
        alert["expected"] = why is not None
        alert["why"] = why or "not explained by the rehearsal: look at it"
    return alerts


def text_summary(summary: dict) -> str:
    verdict = "PASSED" if summary["ok"] else "INTERRUPTED" if summary.get("interrupted") else "FAILED"
    lines = [f"Rehearsal of {summary['stack']}: {verdict}" + (f" ({summary['error']})" if summary.get("error") else "")]
    lines.append("  nodes: " + ", ".join(f"{n['name']} ({n['tier']}{', head' if n['head'] else ''})" for n in summary["nodes"]))
    for r in summary["smoke"]:
        detail = f"{r['tasks']} tasks, {r['tasksPerSecond']} tasks/s" if "tasks" in r else r.get("error", "")
        lines.append(f"  smoke test {'PASS' if r['ok'] else 'FAIL'}  {r['tier']:<16} {detail}")
    for r in summary["schedule"]:
        zone = ZoneInfo(r["timezone"])
        start, drain_start, end = (dt.datetime.fromisoformat(r[key]).astimezone(zone) for key in ("windowStart", "drainStart", "windowEnd"))
        drained, tasks = r["morning"]["drain"], r["tasks"]
        lines += [
            f"  schedule   {'PASS' if r['ok'] else 'FAIL'}  {r['tier']:<16} window {start:%a %H:%M} to {end:%a %H:%M} {r['timezone']}, "
            f"drained from {drain_start:%H:%M}",
            f"    drain of {r['node']}: exit {drained['exitCode']}, {drained['seconds']}s of a {drained['deadlineSeconds']}s deadline",
            f"    tasks: {tasks['finished']}/{tasks['submitted']} finished, {tasks['lost']} lost, {tasks['reExecuted']} re-executed, "
            f"{tasks['waitedForNextWindow']} waited for the next window",
        ]
    for skipped in summary["scheduleSkipped"]:
        lines.append(f"  schedule   SKIP  {skipped['tier']:<16} {skipped['reason']}")
    for a in summary["alerts"]:
        where = " ".join(filter(None, (a["node"], a["job"])))
        lines.append(f"  alert {a['state']:<7} {a['alert']} {where}: {'expected' if a['expected'] else 'UNEXPECTED'}, {a['why']}")
    cleanup = summary["cleanup"]
    left = cleanup["processGroupsLeft"] or cleanup["portsStillListening"]
    lines.append(f"  cleanup: {'LEFT BEHIND ' + json.dumps(cleanup) if left else 'every process stopped, no port left listening'}")
    return "\n".join(lines)
