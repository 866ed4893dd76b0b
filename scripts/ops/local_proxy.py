"""The head's dashboard TLS proxy on this machine: the rendered nginx config, run by nginx.

What the head's `ray-dashboard-proxy` container runs, with what one machine
forces remapped (as `local_cluster.localize` does for Ray): it listens on
127.0.0.1 at the local head's ports, reads the local head's certificate, and
keeps its pid and buffers in the head's directory (which exists, as /tmp does
in the container; nginx creates only what is below it).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

from components.render import dashboard_proxy
from components.render.dashboard_proxy import ProxySettings
from scripts.ops.local_cluster import LOOPBACK, LocalCluster

START_TIMEOUT_S = 30


def local_settings(cluster: LocalCluster) -> ProxySettings:
    head = cluster.head
    return ProxySettings(
        listen_ip=LOOPBACK,
        https_port=head.ports.dashboard_https,
        dashboard_port=head.ports.dashboard,
        tls_dir=head.tls_dir,
        run_dir=str(Path(head.tls_dir).parent),
    )


@contextlib.contextmanager
def running_proxy(cluster: LocalCluster) -> Iterator[ProxySettings]:
    """nginx in front of `cluster`'s dashboard for the block, answering its health check."""
    settings = local_settings(cluster)
    run_dir = Path(settings.run_dir)
    conf = run_dir / dashboard_proxy.NGINX_CONF
    conf.write_text(dashboard_proxy.nginx_conf(settings))
    health = dashboard_proxy.health_check_command(settings)[1:]  # Docker's CMD form, run as Docker runs it
    with open(run_dir / "nginx.log", "wb") as log:
        process = subprocess.Popen(
            dashboard_proxy.nginx_command(str(conf)), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        give_up = time.monotonic() + START_TIMEOUT_S
        while subprocess.run(health, capture_output=True).returncode != 0:
            if process.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"the dashboard proxy did not come up:\n{(run_dir / 'nginx.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield settings
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
