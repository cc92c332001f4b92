"""Markdown tables of the gateway scenarios (printed as they are, and put in RESULTS.md)."""

from __future__ import annotations

from collections.abc import Iterable

from benchmarks.context import NOISY_CPU
from benchmarks.gateway.load import Run

__all__ = ["faults", "healthy", "success"]


def _other(run: Run) -> str:
    return f"{run.other_cpu:.2f}{' (noisy)' if run.other_cpu > NOISY_CPU else ''}"


def healthy(runs: Iterable[Run]) -> str:
    runs = list(runs)
    direct = {(r.protocol, r.concurrency): r for r in runs if r.front == "direct"}
    head = (
        "| front | proto | conc. | req/s | vs direct | p50 ms | p99 ms | p50 added ms | ok "
        "| errors | client CPU | front CPU | front CPU µs/req | upstreams CPU | other CPU "
        "| req/s each round |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|---|\n"
    )
    rows = []
    for r in sorted(runs, key=lambda r: (r.protocol, r.concurrency)):
        # What the front spends per request: on shared cores this moves less than req/s,
        # and every µs of it is taken from the upstreams it shares them with.
        per_req = f"{r.front_cpu * 1e6 / r.rps:.0f}" if r.front_cpu and r.rps else "-"
        base = direct.get((r.protocol, r.concurrency))
        ratio = f"{r.rps / base.rps:.2f}x" if base and base.rps else "-"
        added = f"{r.p50_ms - base.p50_ms:+.3f}" if base and r is not base else "-"
        rows.append(
            f"| {r.front} | {r.protocol} | {r.concurrency} | {r.rps:,.0f} | {ratio} "
            f"| {r.p50_ms:.3f} | {r.p99_ms:.2f} | {added} | {r.ok:,} | {r.errors_text()} "
            f"| {r.client_cpu:.2f} | {r.front_cpu:.2f} | {per_req} | {r.upstreams_cpu:.2f} "
            f"| {_other(r)} | {_rounds(r)} |"
        )
    return head + "\n".join(rows) + "\n"


def _rounds(r: Run) -> str:
    return ", ".join(f"{v:,.0f}" for v in r.extra.get("rounds_rps", [r.rps]))


def front_cost(runs: Iterable[Run]) -> str:
    """Fronts over one static upstream: req/s and the front's CPU per request, each against
    nginx's at the same concurrency."""
    runs = sorted(runs, key=lambda r: (r.concurrency, r.front))
    nginx = {r.concurrency: r for r in runs if r.front == "nginx"}
    head = (
        "| front | conc. | req/s | vs nginx | front CPU µs/req | vs nginx | µs/req each round "
        "| req/s each round |\n|---|--:|--:|--:|--:|--:|---|---|\n"
    )
    rows = []
    for r in runs:
        us = r.front_cpu * 1e6 / r.rps if r.rps else 0.0
        base = nginx.get(r.concurrency)
        base_us = base.front_cpu * 1e6 / base.rps if base and base.rps else 0.0
        rps_ratio = f"{r.rps / base.rps:.2f}x" if base and base.rps else "-"
        us_ratio = f"{us / base_us:.2f}x" if base_us else "-"
        each = ", ".join(f"{v:.0f}" for v in r.extra.get("rounds_front_us", [us]))
        rows.append(
            f"| {r.front} | {r.concurrency} | {r.rps:,.0f} | {rps_ratio} | {us:.0f} | {us_ratio} "
            f"| {each} | {_rounds(r)} |"
        )
    return head + "\n".join(rows) + "\n"


def faults(runs: Iterable[Run], window_label: str) -> str:
    """Fault runs: the whole run, and the fault window alone (extra['window'])."""
    head = (
        f"| front | conc. | req/s | p50 ms | p99 ms | failed | errors | {window_label}: req/s "
        f"| {window_label}: failed | {window_label}: worst 1-s p99 ms | other CPU |\n"
        "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|\n"
    )
    rows = []
    for r in runs:
        w = r.extra.get("window", {})
        rows.append(
            f"| {r.front} | {r.concurrency} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.failed:,} of {r.requests:,} | {r.errors_text()} | {w.get('rps', 0):,.0f} "
            f"| {w.get('failed', 0):,} of {w.get('requests', 0):,} "
            f"| {w.get('worst_p99_ms', 0):.1f} "
            f"| {_other(r)} |"
        )
    return head + "\n".join(rows) + "\n"


def success(runs: Iterable[Run], baseline: dict[str, Run]) -> str:
    """Runs against a degraded pool, each beside its own healthy baseline (by front name)."""
    head = (
        "| front | conc. | success rate | failed | errors | req/s | p50 ms | p99 ms "
        "| healthy p99 ms | p99 vs healthy | share to the faulty upstream | other CPU |\n"
        "|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for r in runs:
        base = baseline.get(r.front)
        healthy_p99 = f"{base.p99_ms:.2f}" if base else "-"
        ratio = f"{r.p99_ms / base.p99_ms:.1f}x" if base and base.p99_ms else "-"
        share = r.extra.get("faulty_share")
        rows.append(
            f"| {r.front} | {r.concurrency} | {100 * r.success_rate:.3f} % | {r.failed:,} of "
            f"{r.requests:,} | {r.errors_text()} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {healthy_p99} | {ratio} | {'-' if share is None else f'{100 * share:.1f} %'} "
            f"| {_other(r)} |"
        )
    return head + "\n".join(rows) + "\n"
