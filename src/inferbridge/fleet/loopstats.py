"""How long the control plane's event loop is held, for /v1/fleet/health: heartbeat
handling times, the loop's lag, reconciliation passes' longest holds, full GC pauses.

A pass over a thousand nodes yields between chunks (`PassTimer.pause`); the timer notes
the longest CPU time a chunk held the loop, a figure that does not depend on the
machine's load.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import time
from typing import Any

__all__ = ["LoopFigures", "PassTimer"]

_LAG_PROBE_S = 0.05


class PassTimer:
    """The longest CPU time one chunk of a pass held the loop without yielding."""

    def __init__(self) -> None:
        self._began = self._max = 0.0

    def begin(self) -> None:
        self._began, self._max = time.thread_time(), 0.0

    def lap(self) -> None:
        """End a chunk (before an await that is not the pass's own work)."""
        self._max = max(self._max, time.thread_time() - self._began)

    def resume(self) -> None:
        self._began = time.thread_time()

    async def pause(self) -> None:
        """Yield to the loop between two chunks of a pass."""
        self.lap()
        await asyncio.sleep(0)
        self.resume()

    def longest(self) -> float:
        return max(self._max, time.thread_time() - self._began)


class LoopFigures:
    """Recent samples, summarised by `as_dict` (p50/p99/max in ms)."""

    def __init__(self) -> None:
        self.heartbeat_s: collections.deque[float] = collections.deque(maxlen=20000)
        self.loop_lag_s: collections.deque[float] = collections.deque(maxlen=4000)
        self.loop_cpu_s: collections.deque[float] = collections.deque(maxlen=4000)
        #: Per reconciliation pass, the longest CPU time it held the loop without yielding.
        self.pass_hold_s: collections.deque[float] = collections.deque(maxlen=4000)
        #: Pauses of Python's cyclic garbage collector (full collections hold the loop too).
        self.gc_pause_s: collections.deque[float] = collections.deque(maxlen=4000)
        self._gc_began = 0.0

    def _time_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
        elif info.get("generation") == 2:
            self.gc_pause_s.append(time.perf_counter() - self._gc_began)

    def watch_gc(self) -> None:
        gc.callbacks.append(self._time_gc)

    def unwatch_gc(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._time_gc)

    async def sample_loop_lag(self) -> None:
        """Runs until cancelled. 20 samples a second: the largest lag seen is close to
        the longest time one callback held the loop (what delays every heartbeat queued
        behind it), plus the time the OS did not run the process. The loop thread's CPU
        time in each window counts only the first, whatever the machine's load."""
        while True:
            began, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(_LAG_PROBE_S)
            self.loop_lag_s.append(max(0.0, time.perf_counter() - began - _LAG_PROBE_S))
            self.loop_cpu_s.append(time.thread_time() - cpu)

    def as_dict(self) -> dict[str, Any]:
        return {
            "heartbeat": _summary(self.heartbeat_s),
            "loop_lag": _summary(self.loop_lag_s),
            # CPU time the loop's thread used in one probe window (50 ms plus its lag).
            "loop_cpu_per_window": _summary(self.loop_cpu_s),
            "reconcile_hold": _summary(self.pass_hold_s),
            "gc_full_collection": _summary(self.gc_pause_s),
        }


def _summary(values: collections.deque[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    p50 = ordered[int(0.5 * (len(ordered) - 1))]
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return {
        "count": len(ordered),
        "p50_ms": round(p50 * 1000, 3),
        "p99_ms": round(p99 * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }
