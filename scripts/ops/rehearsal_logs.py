"""The rehearsal's log shipping: the rendered rsyslog configs (components/render/log_shipping.py)
run here for the heavy node and the monitoring host, both on loopback, so the morning can read
a line a heavy-tier task wrote that night from the archive once the node is gone."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from components.model.config import ClusterConfig
from components.model.ports import MONITORING
from components.render import log_shipping
from components.render.ray_start import RayNodeSettings
from scripts.ops.local_cluster import LOOPBACK


class LocalLogShipping:
    def __init__(self, cfg: ClusterConfig, work: Path, port_offset: int):
        self.cfg, self.dir = cfg, work / "logs"
        self.port = MONITORING.log_archive + port_offset
        self.archive = self.dir / "archive"

    def start(self, stack: contextlib.ExitStack, node: RayNodeSettings) -> Optional[str]:
        """Both rsyslogd, the node's tailing its Ray logs; why not, when rsyslog is missing."""
        if not shutil.which("rsyslogd"):
            return "rsyslogd is not installed (scripts/install.sh installs rsyslog)"
        configs = {
            "receiver": log_shipping.receiver_config(self.cfg, archive_dir=str(self.archive), port=self.port),
            node.node_name: log_shipping.node_config(
                self.cfg, ray_logs=f"{node.temp_dir}/session_*/logs/*", receiver=LOOPBACK, port=self.port
            ),
        }
        for name, text in configs.items():
            state = self.dir / name
            state.mkdir(parents=True, exist_ok=True)
            (state / "rsyslog.conf").write_text(f'global(workDirectory="{state}")\n{text}')
            process = subprocess.Popen(
                ["rsyslogd", "-n", "-f", str(state / "rsyslog.conf"), "-i", str(state / "rsyslogd.pid")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            stack.callback(_stop, process)
        return None

    def lines(self) -> list[str]:
        """Every Ray log line the archive holds (per day and host, as on the monitoring host)."""
        return [line for path in sorted(self.archive.glob(f"*/*/{log_shipping.RAY_TAG}.log")) for line in path.read_text().splitlines()]


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    if process.poll() is None:
        process.kill()
        process.wait()
