"""The soak's bulk traffic: ibload (clients/go/cmd/ibload) streams, one process each.

Capacity is measured on the mix itself, as the soak sends it: every stream runs closed loop
at once, in a short ramp of total concurrencies. Closed loop, a stream's rate is its
concurrency over its latency, so each level shares the concurrency out by the shares times
the latencies the level before measured (Little's law); the rates then come out near the
shares. A level's *mix rate* is the rate at which every stream was served at its share
together, min(rate_i / share_i); the capacity is the best mix rate of the ramp. The soak
then runs every stream open loop at its share of `fraction` x that capacity.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.soak.probes import IRIS_VALUES, rest_bodies
from benchmarks.soak.server import ISOLATED_MODEL, ONNX_MODEL

__all__ = [
    "STREAMS",
    "RampPoint",
    "RunningStreams",
    "Stream",
    "StreamResult",
    "capacity_ramp",
    "run_streams",
    "write_bodies",
]

_TIMEOUT_S = 10.0
_GRPC_CONNECTIONS = 2
#: Open loop: requests in flight at most per stream before ibload counts one as DROPPED.
#: On two shared cores the server stalls for a few hundred ms now and then (it waits for a
#: CPU); 256 ran out within such a stall at ~1,200 requests/s, and a request not sent says
#: nothing about the server.
_MAX_INFLIGHT = 1024


@dataclass(frozen=True)
class Stream:
    name: str
    protocol: str  # ibload's -protocol: rest-json, rest-binary or grpc
    model: str
    body: str | None  # a rest_bodies() key sent as is; None: ibload builds a valid request
    share: float  # of the mix's request rate
    expected: frozenset[str]  # the answer classes that are right for it


_OK, _200 = frozenset({"OK"}), frozenset({"HTTP 200"})
STREAMS: tuple[Stream, ...] = (
    Stream("REST JSON, iris_onnx", "rest-json", ONNX_MODEL, "valid", 0.40, _200),
    Stream("REST binary, iris_onnx", "rest-binary", ONNX_MODEL, None, 0.15, _200),
    Stream("gRPC, iris_onnx", "grpc", ONNX_MODEL, None, 0.25, _OK),
    Stream("REST JSON, iris (isolated)", "rest-json", ISOLATED_MODEL, "valid", 0.08, _200),
    Stream("bad JSON", "rest-json", ONNX_MODEL, "bad JSON", 0.04, frozenset({"HTTP 400"})),
    Stream("wrong shape", "rest-json", ONNX_MODEL, "wrong shape", 0.04, frozenset({"HTTP 400"})),
    Stream("unknown model", "rest-json", "no_such_model", "valid", 0.04, frozenset({"HTTP 404"})),
)


@dataclass(frozen=True)
class RampPoint:
    level: int  # the total concurrency asked for
    concurrency: dict[str, int]  # per stream (each at least 1)
    per_stream: dict[str, float]  # answers of the expected class per second, per stream
    p99_ms: float  # of the REST JSON iris_onnx stream
    errors: dict[str, int]  # answers of another class, all streams

    @property
    def mix_rps(self) -> float:
        """The mix's rate that every stream was served at its share of, at once."""
        return min(self.per_stream[s.name] / s.share for s in STREAMS)

    @property
    def total_rps(self) -> float:
        return sum(self.per_stream.values())


@dataclass
class StreamResult:
    stream: Stream
    rate: float  # open loop: requests/s asked for; closed loop: 0
    report: dict[str, Any]
    answers: Counter[str] = field(default_factory=Counter)

    @property
    def unexpected(self) -> dict[str, int]:
        return {k: v for k, v in self.answers.items() if k not in self.stream.expected}

    @property
    def expected_rps(self) -> float:
        """Answers of the expected class per second of the measured window."""
        requests = int(self.report["requests"])
        if not requests:
            return 0.0
        good = sum(n for k, n in self.answers.items() if k in self.stream.expected)
        return float(self.report["requests_per_s"]) * good / requests


def _argv(
    ibload: str,
    stream: Stream,
    body: Path | None,
    *,
    http_url: str,
    grpc_target: str,
    duration: float,
    warmup: float,
    concurrency: int = 0,
    rate: float = 0.0,
    timeline_s: float = 0.0,
) -> list[str]:
    argv = [ibload, "-protocol", stream.protocol, "-model", stream.model]
    argv += ["-duration", f"{duration:g}s", "-warmup", f"{warmup:g}s"]
    argv += ["-timeout", f"{_TIMEOUT_S:g}s", "-json", "-"]
    if stream.protocol == "grpc":
        argv += ["-target", grpc_target, "-connections", str(_GRPC_CONNECTIONS)]
    else:
        argv += ["-target", http_url, "-raw"]
    if body is not None:
        argv += ["-body", str(body)]
    else:
        argv += ["-data", json.dumps(IRIS_VALUES)]
    if rate > 0:
        argv += ["-rate", f"{rate:.1f}", "-max-inflight", str(_MAX_INFLIGHT)]
    else:
        argv += ["-concurrency", str(concurrency)]
    if timeline_s > 0:
        argv += ["-timeline", f"{timeline_s:g}s"]
    return argv


def _answers(protocol: str, report: dict[str, Any]) -> Counter[str]:
    answers: Counter[str] = Counter()
    if report.get("ok"):
        answers["OK" if protocol == "grpc" else "HTTP 200"] = int(report["ok"])
    for kind, n in (report.get("errors") or {}).items():
        answers[str(kind)] += int(n)
    return answers


def capacity_ramp(
    ibload: str,
    *,
    http_url: str,
    grpc_target: str,
    levels: list[int],
    seconds: float,
    warmup: float,
    work: Path,
) -> list[RampPoint]:
    """The whole mix closed loop at each total concurrency, one level after the other."""
    points: list[RampPoint] = []
    weights = {s.name: s.share for s in STREAMS}
    for level in levels:
        scale = level / sum(weights.values())
        concurrency = {name: max(1, round(w * scale)) for name, w in weights.items()}
        running = _start(
            ibload,
            http_url=http_url,
            grpc_target=grpc_target,
            duration=seconds,
            warmup=warmup,
            work=work / f"ramp-{level}",
            concurrency=concurrency,
        )
        try:
            results = running.wait(timeout=warmup + seconds + _TIMEOUT_S + 60)
        finally:
            running.kill()
        errors: Counter[str] = Counter()
        for r in results:
            errors.update(r.unexpected)
        first = next(r for r in results if r.stream is STREAMS[0]).report
        point = RampPoint(
            level=level,
            concurrency=concurrency,
            per_stream={r.stream.name: r.expected_rps for r in results},
            p99_ms=float((first.get("latency_all_ms") or first["latency_ms"])["p99"]),
            errors=dict(errors),
        )
        print(
            f"soak: ramp c={sum(concurrency.values()):<4} mix {point.mix_rps:>8,.0f} req/s "
            f"(all streams {point.total_rps:,.0f}/s)  REST JSON p99 {point.p99_ms:7.2f} ms  "
            f"other answers {point.errors or 'none'}",
            flush=True,
        )
        points.append(point)
        # Little's law: latency_i = concurrency_i / rate_i; concurrency for rate ~ share.
        weights = {
            s.name: s.share * concurrency[s.name] / max(point.per_stream[s.name], 1e-3)
            for s in STREAMS
        }
    return points


def write_bodies(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, body in rest_bodies().items():
        path = directory / (key.replace(" ", "-") + ".json")
        path.write_bytes(body)
        paths[key] = path
    return paths


@dataclass
class RunningStreams:
    """The soak's ibload processes, started together; `wait` collects their reports."""

    processes: list[tuple[Stream, float, subprocess.Popen[bytes], Path]]

    def wait(self, timeout: float) -> list[StreamResult]:
        results = []
        for stream, rate, process, out in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            text = out.read_text()
            if process.returncode != 0 or not text.strip():
                error = out.with_suffix(".err").read_text()[-600:]
                raise RuntimeError(f"ibload ({stream.name}) exited {process.returncode}: {error}")
            report = json.loads(text)
            results.append(StreamResult(stream, rate, report, _answers(stream.protocol, report)))
        return results

    def kill(self) -> None:
        for _, _, process, _ in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _start(
    ibload: str,
    *,
    http_url: str,
    grpc_target: str,
    duration: float,
    warmup: float,
    work: Path,
    rate: float = 0.0,
    concurrency: dict[str, int] | None = None,
    timeline_s: float = 0.0,
) -> RunningStreams:
    """Every stream: open loop at its share of `rate`, or closed loop at `concurrency`."""
    bodies = write_bodies(work / "bodies")
    started: list[tuple[Stream, float, subprocess.Popen[bytes], Path]] = []
    # One OS thread per load generator: the cheapest on two shared cores (no hand-offs).
    env = {**os.environ, "GOMAXPROCS": "1"}
    try:
        for index, stream in enumerate(STREAMS):
            argv = _argv(
                ibload,
                stream,
                bodies[stream.body] if stream.body is not None else None,
                http_url=http_url,
                grpc_target=grpc_target,
                duration=duration,
                warmup=warmup,
                rate=rate * stream.share,
                concurrency=(concurrency or {}).get(stream.name, 0),
                timeline_s=timeline_s,
            )
            out = work / f"stream-{index}.json"
            with out.open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr:
                process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env)
            started.append((stream, rate * stream.share, process, out))
    except BaseException:
        RunningStreams(started).kill()
        raise
    return RunningStreams(started)


def run_streams(
    ibload: str,
    *,
    http_url: str,
    grpc_target: str,
    total_rate: float,
    duration: float,
    work: Path,
    timeline_s: float,
) -> RunningStreams:
    """Start every stream open loop at its share of `total_rate` for `duration` seconds."""
    return _start(
        ibload,
        http_url=http_url,
        grpc_target=grpc_target,
        duration=duration,
        warmup=0.0,
        work=work,
        rate=total_rate,
        timeline_s=timeline_s,
    )
