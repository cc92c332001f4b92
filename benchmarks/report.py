"""Tables (printed and markdown), the PNG plots and RESULTS.md."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from benchmarks.ceilings import Ceiling
from benchmarks.context import NOISY_CPU, ScenarioResult, Target
from benchmarks.loadgen import Point

__all__ = ["markdown", "plot", "points_table", "targets_table"]


def _num(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def points_table(points: Iterable[Point]) -> str:
    head = (
        "| series | client | conc. | req/s | p50 ms | p90 ms | p99 ms | ok | errors by kind "
        "| client CPU | server CPU | other CPU | payload B |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|\n"
    )
    rows = []
    for p in points:
        conc = f"{p.concurrency}" if not p.offered_rps else f"open {p.offered_rps:,.0f}/s"
        rows.append(
            f"| {p.series} | {p.client} | {conc} | {_num(p.rps, 0)} | {_num(p.p50_ms, 2)} "
            f"| {_num(p.p90_ms, 2)} | {_num(p.p99_ms, 2)} | {p.ok:,} | {p.errors_text()} "
            f"| {p.client_cpu:.2f}{' (client-bound?)' if p.client_cpu > 0.9 else ''} "
            f"| {p.server_cpu:.2f} "
            f"| {p.other_cpu:.2f}{' (noisy)' if p.other_cpu > NOISY_CPU else ''}"
            f"{' (2nd try)' if p.extra.get('remeasured') else ''} "
            f"| {p.payload_bytes:,} |"
        )
    return head + "\n".join(rows) + "\n"


def ceilings_table(ceilings: Iterable[Ceiling]) -> str:
    head = (
        "| model | runtime | threads | batch | ms per call | rows/s |\n|---|---|--:|--:|--:|--:|\n"
    )
    rows = [
        f"| {c.model} | {c.runtime} | {c.threads} | {c.batch} | {c.ms_per_call:.3f} "
        f"| {c.rows_per_s:,.0f} |"
        for c in ceilings
    ]
    return head + "\n".join(rows) + "\n"


def targets_table(targets: Iterable[Target]) -> str:
    head = "| target | goal | measured | verdict |\n|---|---|---|---|\n"
    rows = [
        f"| {t.name} | {t.goal} | {t.measured}{' — ' + t.note if t.note else ''} "
        f"| **{t.verdict}** |"
        for t in targets
    ]
    return head + "\n".join(rows) + "\n"


def plot(result: ScenarioResult, path: Path) -> Path | None:
    """Throughput (x) against p99 latency (y, log) per series; points labelled by concurrency."""
    if not result.points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    series: dict[str, list[Point]] = {}
    for p in result.points:
        series.setdefault(p.series, []).append(p)
    for name, points in series.items():
        points = sorted(points, key=lambda p: (p.offered_rps, p.concurrency))
        xs = [p.goodput if p.offered_rps else p.rps for p in points]
        ys = [max(p.p99_ms, 1e-3) for p in points]
        axes.plot(xs, ys, marker="o", label=name)
        for p, x, y in zip(points, xs, ys, strict=True):
            tag = f"open {p.offered_rps:,.0f}/s" if p.offered_rps else f"c={p.concurrency}"
            axes.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for ceiling in _best_ceilings(result.ceilings):
        axes.axvline(ceiling.rows_per_s, linestyle=":", color="grey")
        axes.annotate(
            f"{ceiling.model} in-process ({ceiling.threads} thr, batch {ceiling.batch})",
            (ceiling.rows_per_s, 1),
            rotation=90,
            fontsize=7,
            color="grey",
            xycoords=("data", "axes fraction"),
            va="top",
        )
    axes.set_yscale("log")
    xs_all = [p.goodput if p.offered_rps else p.rps for p in result.points]
    if min(xs_all) > 0 and max(xs_all) / min(xs_all) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("throughput (requests/s; goodput for open loop)")
    axes.set_ylabel("p99 latency (ms, log)")
    axes.set_title(result.title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _best_ceilings(ceilings: list[Ceiling]) -> list[Ceiling]:
    """The best batch per model and thread count, when it fits the plot (served models only)."""
    best: dict[tuple[str, int], Ceiling] = {}
    for c in ceilings:
        if c.model != "image":
            continue
        key = (c.model, c.threads)
        if key not in best or c.rows_per_s > best[key].rows_per_s:
            best[key] = c
    return list(best.values())


_GAPS_NOTE = (
    "For the targets not met, what was measured about why is in docs/benchmarks.md "
    "(*Known gaps*), by hand after the latest full run.\n"
)


def markdown(
    results: list[ScenarioResult],
    header: str,
    plot_links: dict[str, str],
) -> str:
    parts = [header]
    every = [t for r in results for t in r.targets]
    parts.append("## Targets\n\n" + targets_table(every))
    if any(t.met is False for t in every):
        parts.append(_GAPS_NOTE)
    for r in results:
        parts.append(f"## {r.title}\n")
        parts.append(
            f"Load average before: {r.load_average[0]:.2f} (1 min); took {r.seconds:.0f} s.\n"
        )
        if r.error:
            parts.append(f"**The scenario failed:** `{r.error}`\n")
        if r.points:
            parts.append(points_table(r.points))
        if r.ceilings:
            parts.append("In-process ceilings:\n\n" + ceilings_table(r.ceilings))
        if r.targets:
            parts.append(targets_table(r.targets))
        for note in r.notes:
            parts.append(f"- {note}")
        if r.key in plot_links:
            parts.append(f"\n![{r.title}]({plot_links[r.key]})\n")
        parts.append("")
    return "\n".join(parts) + "\n"
