"""PNG plots: per front, requests/s and p99 against concurrency (healthy) or over time
(fault scenarios, from ibload's -timeline, the fault window shaded)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.gateway.load import Run

__all__ = ["healthy", "timeline"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def healthy(section: Any, path: Path) -> Path | None:
    runs: list[Run] = section.runs
    if not runs:
        return None
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    fronts: dict[str, list[Run]] = {}
    for r in runs:
        fronts.setdefault(r.front, []).append(r)
    for name, points in fronts.items():
        points.sort(key=lambda r: r.concurrency)
        xs = [r.concurrency for r in points]
        left.plot(xs, [r.rps for r in points], marker="o", label=name)
        right.plot(xs, [max(r.p99_ms, 1e-3) for r in points], marker="o", label=name)
    for axes, label in ((left, "requests/s"), (right, "p99 latency (ms, log)")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("concurrency (closed loop)")
        axes.set_ylabel(label)
        axes.grid(True, which="both", alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=7)
    figure.suptitle(section.title, fontsize=10)
    figure.tight_layout()
    return _save(figure, plt, path)


def timeline(
    title: str, runs: Sequence[Run], path: Path, window: tuple[float, float] | None = None
) -> Path | None:
    """Requests/s (ok and failed) and p99 per second, one line per front; a run's fault
    events (extra['events_s']: seconds into its window) are dashed lines in its colour."""
    runs = [r for r in runs if r.timeline]
    if not runs:
        return None
    plt = _pyplot()
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for r in runs:
        xs = [s["start_s"] for s in r.timeline]
        (line,) = top.plot(xs, [s["ok"] for s in r.timeline], label=r.front)
        middle.plot(
            xs, [s["requests"] - s["ok"] for s in r.timeline], color=line.get_color(), label=r.front
        )
        bottom.plot(xs, [max(s["p99_ms"], 1e-3) for s in r.timeline], color=line.get_color())
        # Fault events of this run (kill, restart begun, ready again) as dashed lines.
        for axes in (top, middle, bottom):
            for at in (r.extra.get("events_s") or {}).values():
                axes.axvline(at, color=line.get_color(), linestyle="--", alpha=0.5)
    if window is not None:
        for axes in (top, middle, bottom):
            axes.axvspan(window[0], window[1], color="grey", alpha=0.15)
    top.set_ylabel("successful requests/s")
    middle.set_ylabel("failed requests/s")
    bottom.set_ylabel("p99 per second (ms, log)")
    bottom.set_yscale("log")
    bottom.set_xlabel("seconds into the measured window (requests by the time they were sent)")
    for axes in (top, middle, bottom):
        axes.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=7, loc="lower left")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, plt, path)


def _save(figure: Any, plt: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
