"""The documented way to submit a job that outlives a head restart.

By default the Jobs API runs a job's driver on the head, and a head restart
kills the driver (its tasks on workers die with it). With a label selector the
driver runs on an always-on worker instead, which waits for a restarting head
(GCS fault tolerance) and keeps the job running:

    ray job submit --address https://HEAD:8443 \\
        --entrypoint-label-selector '{"tier": "always-on", "role": "worker"}' \\
        --entrypoint-num-cpus 1 -- python my_job.py

`submit_command` builds exactly that line, `submit` does the same through the
Jobs SDK; the smoke test and the tests use them.
"""
from __future__ import annotations

import json

# Node labels every Ray node carries (components/render/ray_start.py: --labels).
ALWAYS_ON_WORKER = {"tier": "always-on", "role": "worker"}
DRIVER_CPUS = 1


def submit_command(dashboard_url: str, entrypoint: list[str], *, submission_id: str | None = None, no_wait: bool = True) -> list[str]:
    """`ray job submit` for a long job: the driver on an always-on worker, never on the head."""
    return [
        "ray", "job", "submit",
        "--address", dashboard_url,
        "--entrypoint-label-selector", json.dumps(ALWAYS_ON_WORKER),
        "--entrypoint-num-cpus", str(DRIVER_CPUS),
        *(["--submission-id", submission_id] if submission_id else []),
        *(["--no-wait"] if no_wait else []),
        "--", *entrypoint,
    ]


def submit(client, entrypoint: str, submission_id: str | None = None) -> str:
    """The same submission through a `ray.job_submission.JobSubmissionClient`; returns the job's id."""
    return client.submit_job(
        entrypoint=entrypoint,
        submission_id=submission_id,
        entrypoint_label_selector=dict(ALWAYS_ON_WORKER),
        entrypoint_num_cpus=DRIVER_CPUS,
    )
