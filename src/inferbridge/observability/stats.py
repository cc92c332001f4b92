"""Per model version statistics, kept on the event loop with no locks.

One `VersionStats` per served version. The dataplane records each request's outcome and
duration; the scheduler reports each executed batch (`BatchTiming`). Everything is plain
integer arithmetic on the event loop's thread, so the hot path takes no lock and looks no
label up: the Prometheus collector and Triton's statistics extension read these counters
when asked, never per request.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inferbridge.batching.scheduler import BatchTiming
from inferbridge.errors import (
    CallerGoneError,
    DeadlineExceeded,
    InferBridgeError,
    InvalidInput,
    QueueFull,
)

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "DURATION_BUCKETS_S",
    "FAILURE_REASONS",
    "Histogram",
    "WINDOW_SAMPLES",
    "VersionStats",
    "failure_reason",
]

#: Histogram bounds (seconds) of the request, queue and compute durations.
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
#: Histogram bounds of the executed batch size (rows).
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: The most request durations one analysis window keeps per version (the rest are counted
#: but not sampled).
WINDOW_SAMPLES = 200_000
#: `reason` label values of a failed request.
FAILURE_REASONS = ("rejected", "canceled", "timeout", "invalid", "backend")


def failure_reason(error: InferBridgeError) -> str:
    """The `reason` label of a request that failed with a domain error."""
    if isinstance(error, QueueFull):
        return "rejected"
    if isinstance(error, CallerGoneError):
        return "canceled"
    if isinstance(error, DeadlineExceeded):
        return "timeout"
    if isinstance(error, InvalidInput):
        return "invalid"
    return "backend"


class Histogram:
    """Cumulative-at-read histogram: one count per bucket (the last is +Inf) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, cumulative count) pairs as Prometheus writes them, +Inf last."""
        total = 0
        pairs: list[tuple[str, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            pairs.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return pairs

    @property
    def count(self) -> int:
        return sum(self.counts)


class _Duration:
    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9) * count

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class _BatchDurations:
    count: int = 0
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0


class VersionStats:
    """Counters of one model version (Triton's statistics) and, when `histograms` is on,
    the distributions behind the Prometheus histograms."""

    def __init__(self, *, histograms: bool = True) -> None:
        self.success = _Duration()
        self.fail = _Duration()
        self.queue = _Duration()
        self.compute_input = _Duration()
        self.compute_infer = _Duration()
        self.compute_output = _Duration()
        self.failures: dict[str, int] = dict.fromkeys(FAILURE_REASONS, 0)
        self.inference_count = 0  # rows
        self.execution_count = 0  # batches
        self.last_inference_ms = 0
        self.batches: dict[int, _BatchDurations] = {}
        self.histograms = histograms
        self.request_s = Histogram(DURATION_BUCKETS_S)
        self.queue_s = Histogram(DURATION_BUCKETS_S)
        self.compute_input_s = Histogram(DURATION_BUCKETS_S)
        self.compute_infer_s = Histogram(DURATION_BUCKETS_S)
        self.compute_output_s = Histogram(DURATION_BUCKETS_S)
        self.batch_size = Histogram(BATCH_SIZE_BUCKETS)
        #: Set by a rollout's analysis: each successful request's duration is appended here
        #: (up to WINDOW_SAMPLES) until the analysis takes the list and puts a fresh one.
        self.latency_window: list[float] | None = None

    # -- recorded by the dataplane, once per request -------------------------------------

    def request_succeeded(self, seconds: float) -> None:
        self.success.add(seconds)
        if self.histograms:
            self.request_s.observe(seconds)
        window = self.latency_window
        if window is not None and len(window) < WINDOW_SAMPLES:
            window.append(seconds)

    def request_failed(self, seconds: float, reason: str) -> None:
        self.fail.add(seconds)
        self.failures[reason] = self.failures.get(reason, 0) + 1
        if self.histograms:
            self.request_s.observe(seconds)

    # -- reported by the scheduler, once per executed batch -------------------------------

    def batch_done(self, batch: BatchTiming) -> None:
        requests = len(batch.queue_waits)
        input_s = batch.joined - batch.started
        infer_s = batch.ran - batch.joined
        output_s = batch.ended - batch.ran
        for wait in batch.queue_waits:
            self.queue.ns += int(wait * 1e9)
        self.queue.count += requests
        self.execution_count += 1
        self.last_inference_ms = time.time_ns() // 1_000_000
        if batch.failed:
            return
        self.inference_count += batch.rows
        # Triton counts compute time per request: each request of a batch is charged the
        # batch's duration.
        self.compute_input.add(input_s, requests)
        self.compute_infer.add(infer_s, requests)
        self.compute_output.add(output_s, requests)
        durations = self.batches.get(batch.rows)
        if durations is None:
            durations = self.batches[batch.rows] = _BatchDurations()
        durations.count += 1
        durations.input_ns += int(input_s * 1e9)
        durations.infer_ns += int(infer_s * 1e9)
        durations.output_ns += int(output_s * 1e9)
        if self.histograms:
            for wait in batch.queue_waits:
                self.queue_s.observe(wait)
            self.compute_input_s.observe(input_s)
            self.compute_infer_s.observe(infer_s)
            self.compute_output_s.observe(output_s)
            self.batch_size.observe(batch.rows)

    # -- read --------------------------------------------------------------------------

    def to_json(self, name: str, version: str) -> dict[str, Any]:
        """Triton's statistics extension document of this version."""
        empty = {"count": 0, "ns": 0}
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_json(),
                "fail": self.fail.to_json(),
                "queue": self.queue.to_json(),
                "compute_input": self.compute_input.to_json(),
                "compute_infer": self.compute_infer.to_json(),
                "compute_output": self.compute_output.to_json(),
                "cache_hit": dict(empty),
                "cache_miss": dict(empty),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": {"count": d.count, "ns": d.input_ns},
                    "compute_infer": {"count": d.count, "ns": d.infer_ns},
                    "compute_output": {"count": d.count, "ns": d.output_ns},
                }
                for size, d in sorted(self.batches.items())
            ],
        }
