"""How the control plane's process runs Python's cyclic garbage collector
(`inferbridge fleet serve --gc-freeze MODE --gc-thresholds G0,G1,G2 --gc-full-every S`).

A full (generation 2) collection walks every tracked object of the heap with the event loop
held: over a thousand nodes' state that is 100+ ms, longer than the heartbeat target. Freezing
(`gc.freeze()`) moves the objects alive at that moment out of the collector's sight, so the
next full collections walk only what was allocated since. What a freeze costs: a reference
cycle among frozen objects is not collected until they are unfrozen, so `each-full` unfreezes
and runs one full collection at a controlled time every `full_every_s` (the only long pause
left), which collects those cycles too: memory stays bounded.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["FREEZE_MODES", "GcController", "GcPolicy", "GcPolicyError"]

logger = logging.getLogger(__name__)

FREEZE_MODES = ("never", "start", "each-full")
"""`never`: Python's collector as it is; `start`: freeze once the state is loaded; `each-full`:
freeze after start-up and after every full collection, with a controlled full collection of
everything every `full_every_s`."""


class GcPolicyError(ValueError):
    """A --gc-* setting that cannot be applied (the message names it and what is expected)."""


@dataclass(frozen=True)
class GcPolicy:
    freeze: str = "each-full"
    """One of FREEZE_MODES."""
    thresholds: tuple[int, int, int] | None = None
    """`gc.set_threshold(G0, G1, G2)`; None keeps Python's (700, 10, 10)."""
    full_every_s: float = 600.0
    """With `each-full`: unfreeze and collect everything every this many seconds (0: never,
    and a cycle among frozen objects is never collected)."""

    def __post_init__(self) -> None:
        if self.freeze not in FREEZE_MODES:
            raise GcPolicyError(
                f"--gc-freeze {self.freeze!r}: expected one of {', '.join(FREEZE_MODES)}"
            )
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

    @classmethod
    def parse(cls, freeze: str, thresholds: str, full_every_s: str | float) -> GcPolicy:
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
        return cls(freeze=freeze, thresholds=levels, full_every_s=every)


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
        gc.callbacks.append(self._time_full)
        self._timing = True
        if self.policy.thresholds is not None:
            self._previous_thresholds = gc.get_threshold()
            gc.set_threshold(*self.policy.thresholds)

    def started(self) -> None:
        """The initial state is loaded: what is alive now is the long-lived core."""
        if self.policy.freeze == "never":
            return
        gc.collect()
        self._freeze()
        if self.policy.freeze == "each-full":
            self._loop = asyncio.get_running_loop()
            gc.callbacks.append(self._after_collection)
            self._callback_installed = True

    async def run(self) -> None:
        if self.policy.freeze != "each-full" or not self.policy.full_every_s:
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
            "policy": self.policy.freeze,
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
