"""One load generator for every front: ibload (clients/go/cmd/ibload), closed loop.

REST goes through ibload's raw HTTP/1.1 engine (`-raw -body`: the same JSON bytes for every
front, one keep-alive connection per request in flight); gRPC through the Go SDK's client.
With `timeline`, ibload also reports the window second by second (`-timeline 1s`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.loadgen import LoadError, machine_busy
from benchmarks.payloads import Payload
from benchmarks.repos import IRIS_ROW

__all__ = ["LoadError", "Run", "run_ibload"]


@dataclass
class Run:
    """One closed-loop measurement through one front. Latencies in ms, CPU in cores."""

    front: str
    protocol: str  # "REST" or "gRPC"
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    ok: int
    errors: dict[str, int]
    client_cpu: float
    front_cpu: float
    upstreams_cpu: float
    other_cpu: float
    duration_s: float
    timeline: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    @property
    def success_rate(self) -> float:
        return self.ok / self.requests if self.requests else 0.0

    def errors_text(self) -> str:
        return ", ".join(f"{k}: {v:,}" for k, v in sorted(self.errors.items())) or "none"


def run_ibload(
    ibload: str,
    *,
    front: str,
    rest_url: str,
    grpc_target: str,
    payload: Payload,
    protocol: str,
    concurrency: int,
    duration: float,
    warmup: float,
    timeout_s: float = 10.0,
    timeline: bool = False,
    front_cpu: Callable[[], float] = lambda: 0.0,
    upstreams_cpu: Callable[[], float] = lambda: 0.0,
    during: Callable[[], None] | None = None,
) -> Run:
    """ibload closed loop at `concurrency`; `during` runs (in this thread) while it loads."""
    if not ibload:
        raise LoadError("ibload was not built (is Go installed?)")
    argv = [
        ibload,
        "-model",
        payload.model,
        "-duration",
        f"{duration:g}s",
        "-warmup",
        f"{warmup:g}s",
        "-timeout",
        f"{timeout_s:g}s",
        "-concurrency",
        str(concurrency),
        "-json",
        "-",
    ]
    if timeline:
        argv += ["-timeline", "1s"]
    if protocol == "gRPC":
        values = [float(x) for x in IRIS_ROW.reshape(-1)]
        connections = max(1, min(4, concurrency // 16))
        argv += ["-protocol", "grpc", "-target", grpc_target]
        argv += ["-connections", str(connections), "-data", json.dumps(values)]
    else:
        argv += ["-protocol", "rest-json", "-raw", "-body", str(payload.header_file)]
        argv += ["-target", rest_url]
    env = {**os.environ, "GOMAXPROCS": "1"}
    busy0, front0, up0 = machine_busy(), front_cpu(), upstreams_cpu()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    client0 = usage.ru_utime + usage.ru_stime
    t0 = time.monotonic()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        if during is not None:
            during()
        stdout, stderr = process.communicate(timeout=warmup + duration + timeout_s + 90)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    wall = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (usage.ru_utime + usage.ru_stime - client0) / wall
    front_c = (front_cpu() - front0) / wall
    up_c = (upstreams_cpu() - up0) / wall
    other = max(0.0, (machine_busy() - busy0) / wall - client - front_c - up_c)
    if process.returncode != 0:
        raise LoadError(f"ibload exited {process.returncode}: {stderr[-800:]}")
    report = json.loads(stdout)
    requests = int(report["requests"])
    ok = int(report["ok"])
    every = report.get("latency_all_ms") or report["latency_ms"]
    errors = {str(k): int(v) for k, v in (report.get("errors") or {}).items()}
    return Run(
        front=front,
        protocol=protocol,
        concurrency=concurrency,
        rps=float(report["requests_per_s"]),
        p50_ms=float(every["p50"]),
        p99_ms=float(every["p99"]),
        requests=requests,
        ok=ok,
        errors=errors,
        client_cpu=client,
        front_cpu=front_c,
        upstreams_cpu=up_c,
        other_cpu=other,
        duration_s=duration,
        timeline=list(report.get("timeline") or []),
    )
