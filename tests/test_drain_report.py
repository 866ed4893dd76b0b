"""The drain program's report and alarm, without a cluster (no Ray is started here): the head
does not answer, so the report says the node was not drained and what is unknown; the
report's line is what the scheduler's morning report reads."""
from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo

from components.render import drain_program
from scripts.ops import local_drain, night_report
from test_drain import delivered, unused_port

# Three seconds before the prod window's end: a scheduled drain with 3 s left.
THREE_SECONDS_LEFT = dt.datetime(2026, 1, 15, 5, 59, 57, tzinfo=ZoneInfo("Europe/Berlin"))


def test_a_node_that_could_not_be_drained_is_reported_as_such(prod_config, tmp_path):
    root = delivered(tmp_path, prod_config, "ray-hc-1", gcs_address=f"127.0.0.1:{unused_port()}")
    impatient = {**os.environ, "RAY_gcs_rpc_server_connect_timeout_s": "1", "RAY_py_gcs_connect_timeout_s": "1"}
    process = local_drain.start(root, "--now", THREE_SECONDS_LEFT.isoformat(), env=impatient)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == drain_program.EXIT_HEAD_UNREACHABLE
    [report] = [r for r in map(night_report.parse_drain_report, out.splitlines()) if r]
    assert report == {
        "node": "ray-hc-1", "drained": False, "tasksFinished": 0, "tasksCut": 0,
        "objectsKept": None, "objectsLost": None,  # unknown: never "nothing lost"
    }

