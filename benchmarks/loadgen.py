"""Run one load point with wrk (REST), ghz (gRPC), vegeta (REST, open loop) or ibload (the
project's Go load generator: REST over its raw HTTP/1.1 engine, or gRPC; closed or open
loop) and return a `Point`: requests/s, latency percentiles, errors by kind, client and
server CPU."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import resource
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.payloads import Payload
from benchmarks.procs import Server
from benchmarks.tools import Tools

__all__ = [
    "IN_FLIGHT_AT_END",
    "LoadError",
    "Point",
    "ghz",
    "ibload",
    "machine_busy",
    "vegeta",
    "wrk",
]

_HERE = Path(__file__).resolve().parent
_LUA = _HERE / "lua" / "oip.lua"
_PROTO_DIR = _HERE.parent / "proto"
_GRPC_CALL = "inference.GRPCInferenceService.ModelInfer"
_TICKS = os.sysconf("SC_CLK_TCK")
_CODE = re.compile(r"code = (\w+)")
#: Open loop over gRPC: calls still waiting when ghz's run ended (the backlog), not errors.
IN_FLIGHT_AT_END = "in flight at end"
_CUT_AT_END = ("closed network connection", "transport is closing", "connection is closing")


class LoadError(RuntimeError):
    """The load generator failed, or every request failed (a wrong body, a dead server)."""


@dataclass
class Point:
    """One measurement. Latencies in milliseconds; CPU in cores (1.0 = one core busy)."""

    series: str
    client: str
    concurrency: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    ok: int
    errors: dict[str, int]
    client_cpu: float
    server_cpu: float
    duration_s: float
    payload_bytes: int = 0
    offered_rps: float = 0.0  # open loop only: the rate asked for
    goodput: float = 0.0  # successful responses per second
    ok_p99_ms: float = 0.0  # p99 of the successful responses only
    other_cpu: float = 0.0  # cores busy with anything but client and server (noise)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def errors_text(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"


class _Meter:
    """Client CPU (this process's reaped children) and server CPU (its process group)."""

    def __init__(self, server: Server | None) -> None:
        self.server = server

    def __enter__(self) -> _Meter:
        self._busy0 = machine_busy()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._client0 = usage.ru_utime + usage.ru_stime
        self._server0 = self.server.cpu_seconds() if self.server is not None else 0.0
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self._t0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.client = (usage.ru_utime + usage.ru_stime - self._client0) / self.wall
        server = self.server.cpu_seconds() if self.server is not None else 0.0
        self.server_cpu = (server - self._server0) / self.wall
        busy = (machine_busy() - self._busy0) / self.wall
        # Whatever else ran on the machine meanwhile (other jobs, this harness): noise.
        self.other = max(0.0, busy - self.client - self.server_cpu)


def machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS


def _run(
    argv: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{argv[0]} ran past {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise LoadError(f"{' '.join(argv[:3])}... exited {done.returncode}: {done.stderr[-800:]}")
    return done


def wrk(
    tools: Tools,
    server: Server,
    payload: Payload,
    *,
    series: str,
    concurrency: int,
    duration: float,
    warmup: float = 0.0,
    validate: bool = True,
    script: Path | None = None,
) -> Point:
    """Closed loop: `concurrency` connections, one thread, each sending back to back.
    `script`: another Lua script taking oip.lua's arguments (such as lua/oip_keyed.lua)."""
    lua = script if script is not None else _LUA
    argv_base = [tools.wrk, "-t1", f"-c{concurrency}", "--timeout", "30s", "-s", str(lua)]
    tail = [server.base_url, "--", payload.path, str(payload.header_file)]
    if payload.raw_file is not None:
        tail.append(str(payload.raw_file))
    if warmup > 0:
        _run([*argv_base, f"-d{max(1, round(warmup))}s", *tail], timeout=warmup + 60)
    with _Meter(server) as meter:
        done = _run([*argv_base, f"-d{max(1, round(duration))}s", *tail], timeout=duration + 90)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise LoadError(f"wrk printed no result:\n{done.stdout[-800:]}\n{done.stderr[-800:]}")
    result = json.loads(line.removeprefix("BENCHJSON "))
    statuses: dict[str, int] = result["statuses"]
    ok = statuses.get("200", 0)
    errors = {f"HTTP {k}": v for k, v in statuses.items() if k != "200"}
    errors.update({f"socket {k}": v for k, v in result["errors"].items() if v})
    if validate and (ok == 0 or '"outputs"' not in result["sample"]):
        raise LoadError(
            f"{series}: no valid response from {payload.path} (statuses {statuses}, "
            f"errors {result['errors']}, sample {result['sample'][:200]!r})\n{server.log_tail(10)}"
        )
    seconds = result["duration_us"] / 1e6
    latency = result["latency_us"]
    return Point(
        series=series,
        client="wrk",
        concurrency=concurrency,
        rps=result["requests"] / seconds,
        p50_ms=latency["50"] / 1000,
        p90_ms=latency["90"] / 1000,
        p99_ms=latency["99"] / 1000,
        requests=result["requests"],
        ok=ok,
        errors=errors,
        client_cpu=meter.client,
        server_cpu=meter.server_cpu,
        other_cpu=meter.other,
        duration_s=seconds,
        payload_bytes=payload.size,
        goodput=ok / seconds,
        ok_p99_ms=latency["99"] / 1000,
    )


def ghz(
    tools: Tools,
    server: Server,
    payload: Payload,
    *,
    series: str,
    concurrency: int,
    duration: float,
    warmup: float = 0.0,
    connections: int | None = None,
    validate: bool = True,
    rps: float = 0.0,
) -> Point:
    """Closed loop over gRPC: `concurrency` workers sharing `connections` HTTP/2 connections.

    With `rps`, ghz paces the calls at that rate (an open loop while workers are free).
    """
    if connections is None:
        connections = _grpc_connections(concurrency)
    argv_base = [
        tools.ghz,
        "--insecure",
        "--proto",
        str(_PROTO_DIR / "grpc_service.proto"),
        "--import-paths",
        str(_PROTO_DIR),
        "--call",
        _GRPC_CALL,
        "--binary-file",
        str(payload.header_file),
        "-c",
        str(concurrency),
        "--connections",
        str(connections),
        "--timeout",
        "30s",
        "--format",
        "json",
    ]
    if rps > 0:
        argv_base += ["--rps", str(round(rps))]
    if warmup > 0:
        _run([*argv_base, "-z", f"{warmup}s", server.grpc_target], timeout=warmup + 60)
    with _Meter(server) as meter:
        done = _run([*argv_base, "-z", f"{duration}s", server.grpc_target], timeout=duration + 90)
    result = json.loads(done.stdout)
    codes: dict[str, int] = dict(result.get("statusCodeDistribution") or {})
    # ghz ends a timed run by closing its connections under the calls still in flight; those
    # are not server errors (Unavailable or Canceled, "use of closed network connection").
    cut = 0
    for message, n in (result.get("errorDistribution") or {}).items():
        match = _CODE.search(message)
        # A Canceled status only ever comes from the client's own cancellation.
        client_side = any(key in message for key in _CUT_AT_END) or "Canceled" in message
        if match and client_side:
            taken = min(n, codes.get(match.group(1), 0))
            codes[match.group(1)] -= taken
            cut += taken
    ok = codes.get("OK", 0)
    errors = {f"gRPC {k}": v for k, v in codes.items() if k != "OK" and v}
    if rps > 0 and cut:
        errors[IN_FLIGHT_AT_END] = cut
    if validate and ok == 0:
        raise LoadError(
            f"{series}: no successful gRPC call (codes {codes}, "
            f"errors {result.get('errorDistribution')})\n{server.log_tail(10)}"
        )
    percentiles = {
        int(d["percentage"]): d["latency"] / 1e6 for d in result.get("latencyDistribution") or []
    }
    seconds = result["total"] / 1e9
    count = int(result["count"]) - cut
    return Point(
        series=series,
        client="ghz",
        concurrency=concurrency,
        rps=count / seconds,
        p50_ms=percentiles.get(50, float("nan")),
        p90_ms=percentiles.get(90, float("nan")),
        p99_ms=percentiles.get(99, float("nan")),
        requests=count,
        ok=ok,
        errors=errors,
        client_cpu=meter.client,
        server_cpu=meter.server_cpu,
        other_cpu=meter.other,
        duration_s=seconds,
        payload_bytes=payload.size,
        goodput=ok / seconds,
        ok_p99_ms=percentiles.get(99, float("nan")),
        offered_rps=rps,
        extra={"connections": connections, "cut_at_end": cut},
    )


def _grpc_connections(concurrency: int) -> int:
    """ghz opens one HTTP/2 connection by default; a few spread the load like real clients."""
    return max(1, min(4, concurrency // 16))


def vegeta(
    tools: Tools,
    server: Server,
    payload: Payload,
    *,
    series: str,
    rate: float,
    duration: float,
    workers: int,
    work_dir: Path,
    timeout_s: float = 30.0,
) -> Point:
    """Open loop at `rate` requests/s (closed loop over `workers` connections when rate is 0).

    Latency percentiles are over every response; `ok_p99_ms` over the successful ones.
    """
    headers: dict[str, list[str]] = {"Content-Type": ["application/json"]}
    if payload.raw_file is not None:
        headers = {
            "Content-Type": ["application/octet-stream"],
            "Inference-Header-Content-Length": [str(payload.header_length())],
        }
    target = {
        "method": "POST",
        "url": server.base_url + payload.path,
        "body": base64.b64encode(payload.body()).decode(),
        "header": headers,
    }
    work_dir.mkdir(parents=True, exist_ok=True)
    targets = work_dir / "vegeta-target.json"
    targets.write_text(json.dumps(target) + "\n")
    results = work_dir / "vegeta-results.bin"
    argv = [
        tools.vegeta,
        "attack",
        "-format=json",
        f"-targets={targets}",
        f"-duration={duration}s",
        f"-timeout={timeout_s}s",
        f"-output={results}",
        f"-max-workers={workers}",
    ]
    if rate > 0:
        argv += [f"-rate={rate:.0f}/s", f"-workers={min(workers, 64)}"]
    else:
        argv += ["-rate=0", f"-workers={workers}"]
    with _Meter(server) as meter:
        _run(argv, timeout=duration + timeout_s + 60)
    csv_text = _run([tools.vegeta, "encode", "-to=csv", str(results)], timeout=120).stdout
    rows = list(csv.reader(csv_text.splitlines()))
    if not rows:
        raise LoadError(f"{series}: vegeta recorded no request")
    # timestamp(ns), code, latency(ns), bytes out, bytes in, error, body(b64), attack, seq, ...
    starts = np.array([int(r[0]) for r in rows], dtype=np.int64)
    codes = [int(r[1]) for r in rows]
    latency_ms = np.array([int(r[2]) / 1e6 for r in rows])
    ends = starts + (latency_ms * 1e6).astype(np.int64)
    seconds = max(1e-9, float(ends.max() - starts.min()) / 1e9)
    ok_mask = np.array([c == 200 for c in codes])
    errors: Counter[str] = Counter()
    for row, code in zip(rows, codes, strict=True):
        if code == 200:
            continue
        if code:
            errors[f"HTTP {code}"] += 1
        else:
            errors[f"client: {_short_error(row[5])}"] += 1
    ok = int(ok_mask.sum())
    if ok == 0:
        raise LoadError(f"{series}: no successful response; errors {dict(errors)}")
    sent_seconds = max(1e-9, float(starts.max() - starts.min()) / 1e9)
    return Point(
        series=series,
        client="vegeta",
        concurrency=workers,
        rps=len(rows) / seconds,
        p50_ms=float(np.percentile(latency_ms, 50)),
        p90_ms=float(np.percentile(latency_ms, 90)),
        p99_ms=float(np.percentile(latency_ms, 99)),
        requests=len(rows),
        ok=ok,
        errors=dict(errors),
        client_cpu=meter.client,
        server_cpu=meter.server_cpu,
        other_cpu=meter.other,
        duration_s=seconds,
        payload_bytes=payload.size,
        offered_rps=rate,
        goodput=ok / seconds,
        ok_p99_ms=float(np.percentile(latency_ms[ok_mask], 99)),
        extra={"sent_rps": len(rows) / sent_seconds},
    )


def _short_error(message: str) -> str:
    lowered = message.lower()
    for key in ("timeout", "deadline", "refused", "reset", "eof", "too many open files"):
        if key in lowered:
            return key
    return message[:40] or "unknown"


#: ibload's gRPC code names as ghz spells them (so that error kinds read alike).
_GRPC_NAMES = {
    "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "UNAVAILABLE": "Unavailable",
    "CANCELLED": "Canceled",
    "INTERNAL": "Internal",
    "INVALID_ARGUMENT": "InvalidArgument",
    "UNKNOWN": "Unknown",
}


def ibload(
    tools: Tools,
    server: Server,
    payload: Payload,
    *,
    series: str,
    duration: float,
    warmup: float = 0.0,
    concurrency: int = 0,
    rate: float = 0.0,
    max_inflight: int = 1024,
    timeout_s: float = 30.0,
    connections: int = 4,
    procs: int = 1,
    grpc_values: list[float] | None = None,
) -> Point:
    """ibload, closed loop over `concurrency` connections, or open loop at `rate`.

    REST payloads go through ibload's raw HTTP/1.1 engine (`-raw`, the payload's exact JSON
    body, one keep-alive connection per request in flight, up to `max_inflight`); gRPC ones
    through the Go SDK's gRPC client over `connections` HTTP/2 connections, with the FP32
    `grpc_values` (the payload's tensor) as the input. The warm-up runs
    inside the same process (the open loop's connection pool and the server's queue reach
    their steady state before the measured window), so the client and server CPU columns
    average over warm-up and window alike. `procs` is GOMAXPROCS (1 is the cheapest: no
    hand-offs between threads). Latency counts from each request's scheduled time;
    p50/p90/p99 are over every request sent (successful or not, DROPPED excluded), and
    `ok_p99_ms` over the successful ones.
    """
    if not tools.ibload:
        raise LoadError("ibload was not built (is Go installed?)")
    argv = [
        tools.ibload,
        "-model",
        payload.model,
        "-duration",
        f"{duration}s",
        "-warmup",
        f"{warmup}s",
        "-timeout",
        f"{timeout_s}s",
        "-json",
        "-",
    ]
    if payload.kind == "grpc":
        argv += ["-protocol", "grpc", "-target", server.grpc_target]
        if grpc_values is None:
            raise LoadError("ibload over gRPC needs the tensor's values (grpc_values)")
        argv += ["-connections", str(connections), "-data", json.dumps(grpc_values)]
    elif payload.kind == "json":
        argv += ["-protocol", "rest-json", "-raw", "-body", str(payload.header_file)]
        argv += ["-target", server.base_url]
    else:
        raise LoadError(f"ibload takes JSON or gRPC payloads, not {payload.kind}")
    if rate > 0:
        argv += ["-rate", f"{rate:.0f}", "-max-inflight", str(max_inflight)]
    else:
        argv += ["-concurrency", str(concurrency)]
    env = {**os.environ, "GOMAXPROCS": str(procs)} if procs else None
    with _Meter(server) as meter:
        done = _run(argv, timeout=warmup + duration + timeout_s + 60, env=env)
    report = json.loads(done.stdout)
    errors: dict[str, int] = {}
    for kind, n in (report.get("errors") or {}).items():
        if payload.kind == "grpc" and kind != "DROPPED":
            kind = f"gRPC {_GRPC_NAMES.get(kind, kind)}"
        errors[kind] = errors.get(kind, 0) + n
    requests = int(report["requests"])
    ok = int(report["ok"])
    if ok == 0:
        raise LoadError(f"{series}: no successful response; errors {errors}\n{server.log_tail(10)}")
    seconds = requests / report["requests_per_s"] if report["requests_per_s"] else duration
    every = report.get("latency_all_ms") or report["latency_ms"]
    dropped = errors.get("DROPPED", 0)
    sent_rps = (requests - dropped) / duration
    total_s = warmup + duration
    return Point(
        series=series,
        client="ibload" + (" raw" if payload.kind == "json" else ""),
        concurrency=concurrency if rate <= 0 else max_inflight,
        rps=report["requests_per_s"],
        p50_ms=every["p50"],
        p90_ms=every["p90"],
        p99_ms=every["p99"],
        requests=requests,
        ok=ok,
        errors=errors,
        client_cpu=meter.client,
        server_cpu=meter.server_cpu,
        other_cpu=meter.other,
        duration_s=seconds,
        payload_bytes=payload.size,
        offered_rps=rate,
        goodput=ok / seconds,
        ok_p99_ms=report["latency_ms"]["p99"],
        extra={
            "sent_rps": sent_rps,
            # CPU per request sent: the client's CPU over warm-up and window together,
            # divided by the requests it sent meanwhile (the window's rate for both).
            "client_us_per_request": 1e6 * meter.client * meter.wall / max(1.0, sent_rps * total_s),
            "gomaxprocs": procs,
            # Open loop: how late the client itself sent requests (included in latency).
            "send_lag_p99_ms": (report.get("send_lag_ms") or {}).get("p99", 0.0),
            # p50/p99 of the failed requests by kind: a 429 is answered on admission, so its
            # latency is the time the request waited before the server looked at it.
            "latency_by_kind_ms": {
                k: {"p50": v["p50"], "p99": v["p99"]}
                for k, v in (report.get("latency_by_kind_ms") or {}).items()
            },
        },
    )
