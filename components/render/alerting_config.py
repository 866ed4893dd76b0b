"""Alertmanager's configuration, as text (no Pulumi): who hears which alert, and when.

Routes, first match wins:
- `Watchdog` (always firing) goes to `alerting.watchdog`, re-sent every
  WATCHDOG_REPEAT: an external dead man's switch that stops hearing it knows
  that Prometheus, Alertmanager or their VM is dead.
- An alert of a tier with a window goes to `alerting.warning`, and only inside
  that window (an Alertmanager time interval in the tier's timezone): such a
  tier never pages, and outside its window it is silent.
- Then by severity: critical pages (`alerting.critical`), the rest is a warning.
A route without a receiver goes to NOBODY (Alertmanager's UI still lists the alert).

While the head is down, every worker of an older Ray raylet would follow it
(RayNodeMissing for each) and the head's own targets fail: `RayHeadNodeDown`
inhibits those, so one page says what happened.

Receiver secrets (webhook and Slack URLs, SMTP passwords) come from the Pulumi
secret `alertingSecrets` (receiver name -> value) and are written into the
file, which therefore stays secret end to end.
"""
from __future__ import annotations

import datetime as dt
from typing import Mapping

import yaml

from components.model.checks import NOBODY_RECEIVER
from components.model.alerting import Receiver
from components.model.config import ClusterConfig
from components.model.ports import MONITORING
from components.render.monitoring_config import HOST_DIR, Mount

ALERTMANAGER_CONFIG = Mount(f"{HOST_DIR}/alertmanager", "/etc/alertmanager")
ALERTMANAGER_YML = "alertmanager.yml"
ALERTMANAGER_DATA = "/alertmanager"  # the image's --storage.path: silences and notification log
# The prom/alertmanager image runs as nobody: the secret-bearing file is readable by that group only.
IMAGE_GID = 65534

NOBODY = NOBODY_RECEIVER
WATCHDOG = "Watchdog"
WATCHDOG_REPEAT = "1m"
HEAD_DOWN = "RayHeadNodeDown"
# What the head's absence sets off: every node's absence, and the head's own scrape targets.
INHIBITED_BY_HEAD_DOWN = ("RayNodeMissing", "ScrapeTargetDown")


def alertmanager_url(cfg: ClusterConfig) -> str:
    """Where admins open Alertmanager (the links in notifications point there)."""
    return f"http://{cfg.monitoring_host.node.ip}:{MONITORING.alertmanager}"


def live_interval_name(tier_name: str) -> str:
    return f"{tier_name}-live"


def _hh_mm(t: dt.time) -> str:
    return f"{t:%H:%M}"


def time_intervals(cfg: ClusterConfig) -> list[dict]:
    """Per tier with a window: from its start to its drain start, in its timezone."""
    intervals = []
    for name, tier in cfg.tiers.items():
        window = tier.window
        if window is None:
            continue
        start = dt.datetime.combine(dt.date(2000, 1, 1), window.start)
        drain_start = (dt.datetime.combine(dt.date(2000, 1, 1), window.end) - window.drain_lead).time()
        if drain_start > window.start:
            times = [{"start_time": _hh_mm(start.time()), "end_time": _hh_mm(drain_start)}]
        else:  # the window crosses midnight
            times = [{"start_time": _hh_mm(window.start), "end_time": "24:00"}]
            if drain_start != dt.time(0):
                times.append({"start_time": "00:00", "end_time": _hh_mm(drain_start)})
        intervals.append({"name": live_interval_name(name), "time_intervals": [{"times": times, "location": window.timezone}]})
    return intervals


def _receiver(receiver: Receiver, secret: str | None) -> dict:
    rendered: dict = {"name": receiver.name}
    if receiver.email:
        email = receiver.email
        rendered["email_configs"] = [{
            "to": email.to,
            "from": email.sender,
            "smarthost": email.smarthost,
            "require_tls": email.require_tls,
            "send_resolved": True,
            **({"auth_username": email.auth_username, "auth_password": secret} if email.auth_username else {}),
        }]
    if receiver.webhook:
        rendered["webhook_configs"] = [{"url": secret, "send_resolved": receiver.webhook.send_resolved}]
    if receiver.slack:
        rendered["slack_configs"] = [{
            "api_url": secret,
            "channel": receiver.slack.channel,
            "send_resolved": True,
            "title": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }})',
            "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ end }}",
        }]
    return rendered


def alertmanager_yml(cfg: ClusterConfig, secrets: Mapping[str, str]) -> str:
    """alertmanager.yml; `secrets` maps each receiver that needs one to its secret."""
    alerting = cfg.alerting
    missing = sorted(r.name for r in alerting.receivers if r.needs_secret and r.name not in secrets)
    if missing:
        raise ValueError(f"alertingSecrets has no value for receiver(s) {missing}")

    def to(route: str | None) -> str:
        return route or NOBODY

    windowed = [name for name, tier in cfg.tiers.items() if tier.window is not None]
    routes = [{
        "receiver": to(alerting.watchdog),
        "matchers": [f'alertname="{WATCHDOG}"'],
        "group_wait": "0s",
        "group_interval": WATCHDOG_REPEAT,
        "repeat_interval": WATCHDOG_REPEAT,
    }]
    routes += [
        {"receiver": to(alerting.warning), "matchers": [f'tier="{name}"'], "active_time_intervals": [live_interval_name(name)]}
        for name in windowed
    ]
    routes += [
        {"receiver": to(alerting.critical), "matchers": ['severity="critical"']},
        {"receiver": to(alerting.warning), "matchers": ['severity="warning"']},
    ]
    config = {
        "route": {
            "receiver": NOBODY,
            "group_by": ["alertname", "tier"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "inhibit_rules": [{
            "source_matchers": [f'alertname="{HEAD_DOWN}"'],
            "target_matchers": [f'alertname=~"{"|".join(INHIBITED_BY_HEAD_DOWN)}"'],
        }],
        "receivers": [{"name": NOBODY}] + [_receiver(r, secrets.get(r.name)) for r in alerting.receivers],
    }
    intervals = time_intervals(cfg)
    if intervals:
        config["time_intervals"] = intervals
    header = "# Rendered by components/render/alerting_config.py; holds receiver secrets.\n"
    return header + yaml.safe_dump(config, sort_keys=False)

