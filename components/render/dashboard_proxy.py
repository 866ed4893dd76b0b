"""The TLS proxy in front of Ray's dashboard and Jobs API, as text (no Pulumi).

Ray 2.60's dashboard (aiohttp, dashboard/http_server_head.py `run`) serves
plain HTTP only, and the token crosses the wire in every request. So the head
runs the dashboard on 127.0.0.1 (`--dashboard-host=127.0.0.1`, ray_start.py)
and nginx, on the host network, serves it over HTTPS at the head's IP with the
head's certificate. The firewall opens only the HTTPS port; the dashboard's own
port answers on loopback only, where the Ray container's health check and the
proxy reach it. The dashboard's metrics server binds the node's IP (not the
dashboard host: dashboard/head.py `_setup_metrics`), so Prometheus still
scrapes it directly.

`ProxySettings` holds what the config decides; tests and the rehearsal run the
very `nginx_conf` with addresses, ports and directories remapped.
"""
from __future__ import annotations

from dataclasses import dataclass

from components.model.config import ClusterConfig
from components.model.ports import RAY
from components.render import tls

CONTAINER_NAME = "ray-dashboard-proxy"
HOST_CONF_DIR = "/etc/ray-cluster/dashboard-proxy"  # on the head
CONTAINER_CONF_DIR = "/etc/ray-dashboard-proxy"
NGINX_CONF = "nginx.conf"
RUN_DIR = "/tmp"  # pid and buffers, inside the container: nginx creates files there, never the directory
# Long enough for `ray job logs --follow` and the dashboard's log streams.
STREAM_TIMEOUT = "1h"


@dataclass(frozen=True)
class ProxySettings:
    listen_ip: str  # the head's IP
    https_port: int
    dashboard_port: int  # Ray's dashboard, on 127.0.0.1
    tls_dir: str  # the head's certificate, key and the cluster CA
    run_dir: str  # an existing directory


def proxy_settings(cfg: ClusterConfig) -> ProxySettings:
    return ProxySettings(
        listen_ip=str(cfg.head.node.ip),
        https_port=RAY.dashboard_https,
        dashboard_port=RAY.dashboard,
        tls_dir=tls.CONTAINER_TLS_DIR,
        run_dir=RUN_DIR,
    )


def listen_addresses(p: ProxySettings) -> list[str]:
    """The head's IP for everyone the firewall lets in; loopback for the health check."""
    return list(dict.fromkeys((p.listen_ip, tls.LOOPBACK)))


def nginx_conf(p: ProxySettings) -> str:
    listens = "\n".join(f"        listen {ip}:{p.https_port} ssl;" for ip in listen_addresses(p))
    temp_paths = "\n".join(
        f"    {kind}_temp_path {p.run_dir}/{CONTAINER_NAME}-{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
# The TLS proxy in front of Ray's dashboard and Jobs API (components/render/dashboard_proxy.py).
worker_processes 1;
pid {p.run_dir}/{CONTAINER_NAME}.pid;
error_log stderr warn;
events {{
    worker_connections 512;
}}
http {{
    access_log off;
    server_tokens off;
{temp_paths}
    # Job packages (working_dir, py_modules) come through here; Ray limits their size itself.
    client_max_body_size 0;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
    server {{
{listens}
        ssl_certificate {p.tls_dir}/{tls.NODE_CERT};
        ssl_certificate_key {p.tls_dir}/{tls.NODE_KEY};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:ray_dashboard_tls:1m;
        location / {{
            proxy_pass http://{tls.LOOPBACK}:{p.dashboard_port};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-Proto https;
            proxy_buffering off;
            proxy_read_timeout {STREAM_TIMEOUT};
            proxy_send_timeout {STREAM_TIMEOUT};
        }}
    }}
}}
"""


def nginx_command(conf_path: str) -> list[str]:
    """nginx in the foreground; `-e stderr` so not even startup writes a log file."""
    return ["nginx", "-e", "stderr", "-c", conf_path, "-g", "daemon off;"]


def https_url(p: ProxySettings, host: str) -> str:
    return f"https://{host}:{p.https_port}"


def health_check_command(p: ProxySettings) -> list[str]:
    """Docker healthcheck (CMD form; the nginx image ships curl): HTTPS verified against the
    cluster CA, through the proxy, to the dashboard's GCS probe (no token needed). An
    expired or wrong certificate, a dead dashboard or GCS: unhealthy."""
    return [
        "CMD", "curl", "--fail", "--silent", "--show-error", "--max-time", "4",
        "--cacert", f"{p.tls_dir}/{tls.CA_CERT}", "--output", "/dev/null",
        f"{https_url(p, tls.LOOPBACK)}/api/gcs_healthz",
    ]
