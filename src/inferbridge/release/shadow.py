"""Shadow traffic: the candidate gets a copy of sampled requests after the primary answered;
its answer never reaches the client and is compared with the primary's.

The copy is started only once the primary has its outputs, as a task of its own, so the
primary's answer never waits for it. At most `limit` copies run at once; a copy offered
beyond that is dropped and counted, so a slow candidate cannot pile work up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from inferbridge.errors import InferBridgeError
from inferbridge.observability.stats import failure_reason

if TYPE_CHECKING:
    from inferbridge.models.served import ServingVersion

__all__ = ["OutputDiff", "Shadow", "ShadowCounts", "compare_outputs"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class OutputDiff:
    """Comparisons of one output: how many agreed, and (floats) the absolute differences."""

    compared: int = 0
    agreed: int = 0
    max_abs_diff: float = 0.0
    sum_abs_diff: float = 0.0  # of the per-request mean absolute difference

    def to_json(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "agreed": self.agreed,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.sum_abs_diff / self.compared if self.compared else 0.0,
        }


@dataclass(slots=True)
class ShadowCounts:
    """Cumulative shadow figures; the analysis takes them per window (`take`)."""

    sent: int = 0
    dropped: int = 0
    failed: int = 0  # the candidate raised
    compared: int = 0
    agreed: int = 0  # every output agreed
    outputs: dict[str, OutputDiff] = field(default_factory=dict)

    def add(self, other: ShadowCounts) -> None:
        """Fold another window's counts into these."""
        self.sent += other.sent
        self.dropped += other.dropped
        self.failed += other.failed
        self.compared += other.compared
        self.agreed += other.agreed
        for name, diff in other.outputs.items():
            into = self.outputs.setdefault(name, OutputDiff())
            into.compared += diff.compared
            into.agreed += diff.agreed
            into.max_abs_diff = max(into.max_abs_diff, diff.max_abs_diff)
            into.sum_abs_diff += diff.sum_abs_diff

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "dropped": self.dropped,
            "failed": self.failed,
            "compared": self.compared,
            "agreed": self.agreed,
            "agreement": self.agreed / self.compared if self.compared else None,
            "outputs": {name: diff.to_json() for name, diff in sorted(self.outputs.items())},
        }


def compare_outputs(
    primary: Mapping[str, np.ndarray[Any, Any]],
    candidate: Mapping[str, np.ndarray[Any, Any]],
    *,
    atol: float,
    rtol: float,
) -> dict[str, tuple[bool, float, float]]:
    """Per output the primary has: (agreed, max abs diff, mean abs diff). Integers, booleans
    and strings (labels) agree when equal; floats when within atol + rtol * |primary|. A
    missing output or another shape disagrees, with an infinite difference for floats."""
    results: dict[str, tuple[bool, float, float]] = {}
    for name, expected in primary.items():
        got = candidate.get(name)
        if got is None or np.shape(got) != np.shape(expected):
            results[name] = (False, float("inf"), float("inf"))
            continue
        expected_arr, got_arr = np.asarray(expected), np.asarray(got)
        if expected_arr.dtype.kind in "fc" or got_arr.dtype.kind in "fc":
            if expected_arr.size == 0:
                results[name] = (True, 0.0, 0.0)
                continue
            try:
                diff = np.abs(expected_arr.astype(np.float64) - got_arr.astype(np.float64))
            except (TypeError, ValueError):
                results[name] = (False, float("inf"), float("inf"))
                continue
            limit = atol + rtol * np.abs(expected_arr.astype(np.float64))
            agreed = bool(np.all(diff <= limit))
            results[name] = (agreed, float(diff.max()), float(diff.mean()))
        else:
            results[name] = (bool(np.array_equal(expected_arr, got_arr)), 0.0, 0.0)
    return results


class Shadow:
    """Copies sampled requests of one model to its candidate version."""

    def __init__(
        self,
        candidate: int,
        sample: float,
        *,
        limit: int,
        atol: float,
        rtol: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.candidate = candidate
        self.sample = sample
        self.limit = limit
        self.atol = atol
        self.rtol = rtol
        self.counts = ShadowCounts()
        self.inflight = 0
        self._rng = rng
        self._tasks: set[asyncio.Task[None]] = set()

    def offer(
        self,
        candidate: ServingVersion | None,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        primary: Mapping[str, np.ndarray[Any, Any]],
    ) -> None:
        """Start a copy of one answered request, unless it is not sampled or too many run."""
        if candidate is None or candidate.draining:
            return
        if self.sample < 1.0 and self._rng() >= self.sample:
            return
        if self.inflight >= self.limit:
            self.counts.dropped += 1
            return
        self.inflight += 1
        self.counts.sent += 1
        candidate.inflight += 1
        task = asyncio.ensure_future(self._run(candidate, dict(inputs), primary))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        candidate: ServingVersion,
        inputs: dict[str, np.ndarray[Any, Any]],
        primary: Mapping[str, np.ndarray[Any, Any]],
    ) -> None:
        start = time.monotonic()
        try:
            outputs = await candidate.scheduler.submit(inputs)
        except InferBridgeError as error:
            self.counts.failed += 1
            candidate.stats.request_failed(time.monotonic() - start, failure_reason(error))
            return
        except asyncio.CancelledError:
            candidate.stats.request_failed(time.monotonic() - start, "canceled")
            raise
        except Exception:
            self.counts.failed += 1
            candidate.stats.request_failed(time.monotonic() - start, "backend")
            return
        finally:
            self.inflight -= 1
            candidate.leave()
        candidate.stats.request_succeeded(time.monotonic() - start)
        results = compare_outputs(primary, outputs, atol=self.atol, rtol=self.rtol)
        self.counts.compared += 1
        if all(agreed for agreed, _, _ in results.values()):
            self.counts.agreed += 1
        for name, (agreed, max_diff, mean_diff) in results.items():
            diff = self.counts.outputs.get(name)
            if diff is None:
                diff = self.counts.outputs[name] = OutputDiff()
            diff.compared += 1
            diff.agreed += agreed
            diff.max_abs_diff = max(diff.max_abs_diff, max_diff)
            diff.sum_abs_diff += mean_diff

    def take(self) -> ShadowCounts:
        """The counts since the last take (the analysis reads one window at a time)."""
        counts, self.counts = self.counts, ShadowCounts()
        return counts

    async def close(self) -> None:
        """Cancel the copies still running (the rollout ended or moved past shadowing)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
