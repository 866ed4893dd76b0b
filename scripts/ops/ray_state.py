"""A running cluster as the operator tools see it: Ray nodes and tasks by tier.

Shared by the scheduler (did a tier's nodes join?), `monitor_tasks` and
`smoke_test`. Every call authenticates with the cluster token from the
RAY_AUTH_TOKEN environment variable; Ray is imported only after that is set,
because Ray reads its auth mode when it loads. Ray's gRPC is mutual TLS: the
caller sets RAY_USE_TLS, RAY_TLS_CA_CERT and its client certificate
(RAY_TLS_SERVER_CERT / RAY_TLS_SERVER_KEY, Ray's names); the dashboard's HTTPS
proxy is then trusted through the same CA.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from typing import Iterator, Optional

TIER_LABEL = "tier"  # the node label `ray start --labels tier=<tier>` sets
# The Ray Client address (ray://HEAD:10001) for the tools that run work through it (smoke_test),
# as scripts/with_cluster_access.py sets it: RAY_ADDRESS names the dashboard, which `ray job` and
# the state API take.
CLIENT_ADDRESS_ENV = "RAY_CLUSTER_CLIENT_ADDRESS"


def use_credentials_from_env() -> None:
    """Token auth for this process's Ray client when RAY_AUTH_TOKEN is set; the cluster CA
    (RAY_TLS_CA_CERT) for HTTPS to the dashboard: Ray's HTTP clients (requests) verify
    against REQUESTS_CA_BUNDLE, which then names the cluster CA whatever it named before
    (the dashboard is the only HTTPS server these tools talk to)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ.get("RAY_TLS_CA_CERT"):
        os.environ["REQUESTS_CA_BUNDLE"] = os.environ["RAY_TLS_CA_CERT"]


@contextlib.contextmanager
def trusting(ca_pem: Optional[str]) -> Iterator[None]:
    """For the block, RAY_TLS_CA_CERT names the cluster CA `ca_pem` (the stack output
    rayTlsCaCert), in a file that is gone afterwards; unless the environment names one."""
    if not ca_pem or os.environ.get("RAY_TLS_CA_CERT"):
        yield
        return
    with tempfile.NamedTemporaryFile("w", prefix="ray-cluster-ca-", suffix=".crt") as ca_file:
        ca_file.write(ca_pem)
        ca_file.flush()
        os.environ["RAY_TLS_CA_CERT"] = ca_file.name
        try:
            yield
        finally:
            del os.environ["RAY_TLS_CA_CERT"]


@dataclass(frozen=True)
class RayNodeView:
    node_id: str
    name: str
    ip: str
    tier: Optional[str]
    is_head: bool


def alive_nodes(address: str) -> list[RayNodeView]:
    """The ALIVE nodes of the cluster at `address` (GCS host:port or dashboard URL)."""
    use_credentials_from_env()
    from ray.util.state import list_nodes

    return [
        RayNodeView(
            node_id=node.node_id,
            name=node.node_name,
            ip=node.node_ip,
            tier=(node.labels or {}).get(TIER_LABEL),
            is_head=node.is_head_node,
        )
        for node in list_nodes(address=address, filters=[("state", "=", "ALIVE")], limit=10_000)
    ]
