"""The CrossGuard pack in policy/, started as the Pulumi CLI starts it and driven as the engine drives it.

`python -m pulumi.policy <engine> policy` on 127.0.0.1, then its gRPC Analyzer
interface: Analyze per resource, AnalyzeStack for the whole stack. Used by the
policy tests and by scripts/bench_policy.py.
"""
from __future__ import annotations

import contextlib
import select
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import grpc
from google.protobuf import json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from scripts.ops.program_mocks import Registration

ROOT = Path(__file__).resolve().parents[2]
PACK_DIR = ROOT / "policy"
START_TIMEOUT_S = 60


@contextlib.contextmanager
def running_pack() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack started as the CLI starts it; stopped by its process id."""
    pack = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(PACK_DIR)],
        cwd=PACK_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert pack.stdout is not None and pack.stderr is not None
        ready, _, _ = select.select([pack.stdout], [], [], START_TIMEOUT_S)
        port = pack.stdout.readline().strip() if ready else ""
        if not port.isdigit():
            raise RuntimeError(f"the pack did not start: {pack.stderr.read() if pack.poll() is not None else 'no port'}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        pack.kill()
        pack.wait(timeout=30)


def properties(inputs: dict) -> struct_pb2.Struct:
    return json_format.ParseDict(inputs, struct_pb2.Struct())


def analyze(analyzer: analyzer_pb2_grpc.AnalyzerStub, registration: Registration, **changes: Any) -> list[tuple[str, str, str]]:
    """(policy, enforcement level, message) for every diagnostic on the resource."""
    response = analyzer.Analyze(
        analyzer_pb2.AnalyzeRequest(
            type=registration.type, properties=properties({**registration.inputs, **changes}),
            urn=registration.urn, name=registration.name,
        )
    )
    levels = analyzer_pb2.EnforcementLevel
    return [(d.policyName, levels.Name(d.enforcementLevel), d.message) for d in response.diagnostics]


def analyze_stack(analyzer: analyzer_pb2_grpc.AnalyzerStub, registrations: Sequence[Registration]) -> list[tuple[str, str, str, str]]:
    """(policy, enforcement level, urn, message) for every diagnostic on the stack."""
    stack = [
        analyzer_pb2.AnalyzerResource(
            type=r.type, properties=properties(r.inputs), urn=r.urn, name=r.name, parent=r.parent, dependencies=r.dependencies,
        )
        for r in registrations
    ]
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=stack))
    levels = analyzer_pb2.EnforcementLevel
    return [(d.policyName, levels.Name(d.enforcementLevel), d.urn, d.message) for d in response.diagnostics]
