"""How the control plane's process runs Python's cyclic garbage collector
(`inferbridge fleet serve --gc MODE --gc-thresholds G0,G1,G2 --gc-full-every S`).

A full (generation 2) collection walks every tracked object of the heap with the event loop
held: with a thousand nodes and their 2,000 open requests that is ~80 ms of CPU here (100-350
ms of wall time on a loaded machine), longer than the heartbeat target, a few times a minute.
Freezing (`gc.freeze()`) moves the objects alive at that moment out of the collector's sight.
`scheduled` (the default) freezes what start-up left, turns the automatic full collections
off and runs one, of everything, every `full_every_s`: the only long pause left, at a known
rate, and it still collects every reference cycle (memory stays bounded: the cycles made
meanwhile wait for it). docs/fleet.md, "Garbage collection", has the measurements.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["GC_MODES", "GcController", "GcPolicy", "GcPolicyError"]

logger = logging.getLogger(__name__)

GC_MODES = ("python", "freeze", "freeze-each-full", "scheduled")
"""`python`: Python's collector as it is; `freeze`: freeze once the state is loaded;
`freeze-each-full`: also after every automatic full collection, with a full collection of
everything every `full_every_s`; `scheduled`: freeze once the state is loaded, no automatic
full collections, a full collection of everything every `full_every_s`."""

_NEVER = 2**31 - 1
"""A generation-2 threshold the count of generation-1 collections never reaches."""


class GcPolicyError(ValueError):
    """A --gc-* setting that cannot be applied (the message names it and what is expected)."""


@dataclass(frozen=True)
class GcPolicy:
    mode: str = "scheduled"
    """One of GC_MODES."""
    thresholds: tuple[int, int, int] | None = None
    """`gc.set_threshold(G0, G1, G2)`; None keeps Python's (700, 10, 10). `scheduled`
    replaces G2 (no automatic full collections)."""
    full_every_s: float = 300.0
    """`scheduled` and `freeze-each-full`: unfreeze and collect everything every this many
    seconds (0, with `freeze-each-full` only: never, and a cycle among frozen objects is
    never collected)."""

    def __post_init__(self) -> None:
        if self.mode not in GC_MODES:
            raise GcPolicyError(f"--gc {self.mode!r}: expected one of {', '.join(GC_MODES)}")
        if self.thresholds is not None and (
            len(self.thresholds) != 3 or any(t < 0 for t in self.thresholds)
        ):
            raise GcPolicyError(
                f"--gc-thresholds {self.thresholds!r}: expected three integers >= 0"
            )
        if not self.full_every_s >= 0:  # also refuses NaN
            raise GcPolicyError(
                f"--gc-full-every {self.full_every_s!r}: expected seconds >= 0 (0 = never)"
            )
        if self.mode == "scheduled" and not self.full_every_s:
            raise GcPolicyError(
                "--gc scheduled --gc-full-every 0: scheduled needs seconds > 0 (it runs no "
                "other full collection); use --gc freeze-each-full for none at all"
            )

    @classmethod
    def parse(cls, mode: str, thresholds: str, full_every_s: str | float) -> GcPolicy:
        """From the command line: `thresholds` is "" (Python's), "python" or "G0,G1,G2";
        `full_every_s` seconds."""
        try:
            every = float(full_every_s)
        except ValueError:
            raise GcPolicyError(
                f"--gc-full-every {full_every_s!r}: expected seconds >= 0 (0 = never)"
            ) from None
        levels: tuple[int, int, int] | None = None
        if thresholds.strip() not in ("", "python"):
            parts = [p.strip() for p in thresholds.split(",")]
            try:
                numbers = [int(p) for p in parts]
            except ValueError:
                numbers = []
            if len(numbers) != 3:
                raise GcPolicyError(
                    f"--gc-thresholds {thresholds!r}: expected three integers G0,G1,G2 "
                    "(e.g. 700,10,10, Python's) or 'python'"
                )
            levels = (numbers[0], numbers[1], numbers[2])
        return cls(mode=mode, thresholds=levels, full_every_s=every)


class GcController:
    """Applies a GcPolicy to this process: `apply()` before the state is read, `started()`
    once it is, `run()` as a task for the controlled collections, `close()` at the end."""

    def __init__(self, policy: GcPolicy, clock: Callable[[], float] = time.perf_counter):
        self.policy = policy
        self._clock = clock
        self._previous_thresholds: tuple[int, int, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callback_installed = False
        self.freezes = 0
        self.controlled: list[tuple[float, int]] = []
        """(seconds the loop was held, unreachable objects found) per controlled collection."""
        self.full: list[tuple[float, float]] = []
        """(wall seconds, CPU seconds of the collecting thread) per full collection: the CPU
        time is what the collection costs whatever the machine's load."""
        self._began = (0.0, 0.0)
        self._timing = False

    def apply(self) -> None:
        """Before the state is read: the thresholds (and the full collections' timing)."""
        gc.callbacks.append(self._time_full)
        self._timing = True
        levels = self.policy.thresholds
        if self.policy.mode == "scheduled":
            g0, g1, _ = levels or gc.get_threshold()
            levels = (g0, g1, _NEVER)
        if levels is not None:
            self._previous_thresholds = gc.get_threshold()
            gc.set_threshold(*levels)

    def started(self) -> None:
        """The initial state is loaded: what is alive now is the long-lived core."""
        if self.policy.mode == "python":
            return
        gc.collect()
        self._freeze()
        if self.policy.mode == "freeze-each-full":
            self._loop = asyncio.get_running_loop()
            gc.callbacks.append(self._after_collection)
            self._callback_installed = True

    async def run(self) -> None:
        """The scheduled full collections (returns at once for modes without them)."""
        if self.policy.mode not in ("freeze-each-full", "scheduled"):
            return
        if not self.policy.full_every_s:
            return
        while True:
            await asyncio.sleep(self.policy.full_every_s)
            self.collect_all()

    def collect_all(self) -> int:
        """Unfreeze, collect every generation (the loop is held for it), freeze again."""
        began = self._clock()
        gc.unfreeze()
        found = gc.collect()
        self._freeze()
        held = self._clock() - began
        self.controlled.append((held, found))
        logger.info(
            "fleet gc: controlled full collection: %.1f ms, %d unreachable objects collected",
            held * 1000,
            found,
        )
        return found

    def close(self) -> None:
        if self._timing:
            gc.callbacks.remove(self._time_full)
            self._timing = False
        if self._callback_installed:
            gc.callbacks.remove(self._after_collection)
            self._callback_installed = False
        if self._previous_thresholds is not None:
            gc.set_threshold(*self._previous_thresholds)
            self._previous_thresholds = None

    def summary(self) -> dict[str, Any]:
        """For the log at shutdown: what the collector did over the run."""
        stats = gc.get_stats()
        return {
            "policy": self.policy.mode,
            "thresholds": list(gc.get_threshold()),
            "collections": [s["collections"] for s in stats],
            "collected": [s["collected"] for s in stats],
            "frozen_objects": gc.get_freeze_count(),
            "full": _summary([w for w, _ in self.full], [c for _, c in self.full]),
            "freezes": self.freezes,
            "controlled": [
                {"ms": round(held * 1000, 1), "found": found} for held, found in self.controlled
            ],
        }

    def _freeze(self) -> None:
        gc.freeze()
        self.freezes += 1

    def _time_full(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._began = (self._clock(), time.thread_time())
        else:
            wall, cpu = self._began
            self.full.append((self._clock() - wall, time.thread_time() - cpu))

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Called inside the collector (on whichever thread allocated): freeze from the loop.
        loop = self._loop
        if phase == "stop" and info.get("generation") == 2 and loop and not loop.is_closed():
            loop.call_soon_threadsafe(self._freeze)


def _summary(wall: list[float], cpu: list[float]) -> dict[str, Any]:
    def ms(values: list[float], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000, 1)

    return {
        "count": len(wall),
        "wall_ms_p50_max": [ms(wall, 0.5), ms(wall, 1.0)],
        "cpu_ms_p50_max": [ms(cpu, 0.5), ms(cpu, 1.0)],
    }
