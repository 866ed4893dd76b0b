"""Write the Grafana dashboards of the pinned Ray into monitoring/grafana/dashboards/.

A Ray head writes these dashboards into its session directory when it starts;
our Grafana runs on the monitoring host, so the same files are committed and
provisioned from there. After changing the pinned ray version, run

    python -m scripts.export_ray_dashboards

and commit the result; tests/test_monitoring.py fails while the committed
files differ from what the installed Ray generates.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

RAY_DASHBOARD_SUFFIX = "_grafana_dashboard.json"  # how Ray names every dashboard it writes


def ray_dashboards() -> dict[str, str]:
    """File name -> JSON of every dashboard the installed Ray writes at head start."""
    # Imported here, not at the top: Ray and the config model load slowly, and --help needs neither.
    from ray.dashboard.modules.metrics.metrics_head import MetricsHead

    from components.render.monitoring_config import DATASOURCE_NAME

    with tempfile.TemporaryDirectory() as tmp:
        # The very method the head runs at start, on a bare object: it only
        # needs these output settings, not a running dashboard.
        head = object.__new__(MetricsHead)
        head._grafana_config_output_path = head._grafana_session_latest_config_output_path = f"{tmp}/grafana"
        head._grafana_dashboard_output_dir = f"{tmp}/dashboards"
        head._prometheus_name = DATASOURCE_NAME
        head._dashboard_uids = {}
        head._create_default_grafana_configs()
        return {p.name: p.read_text() for p in sorted(Path(tmp, "dashboards").glob("*.json"))}


def main(argv: Optional[Sequence[str]] = None) -> None:
    argparse.ArgumentParser(
        prog="python -m scripts.export_ray_dashboards", description=__doc__.split("\n")[0],
        epilog=f"Rewrites monitoring/grafana/dashboards/*{RAY_DASHBOARD_SUFFIX}.",
    ).parse_args(argv)
    from components.render.monitoring_config import DASHBOARDS_SOURCE_DIR

    generated = ray_dashboards()
    for stale in DASHBOARDS_SOURCE_DIR.glob(f"*{RAY_DASHBOARD_SUFFIX}"):
        if stale.name not in generated:
            stale.unlink()
    for name, text in generated.items():
        (DASHBOARDS_SOURCE_DIR / name).write_text(text)
        print(DASHBOARDS_SOURCE_DIR / name)


if __name__ == "__main__":
    sys.exit(main())
