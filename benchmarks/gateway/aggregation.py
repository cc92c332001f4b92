"""Scenario 6: batch aggregation at the gateway, on vs off, in front of an upstream whose
model does not batch (no dynamic_batching: one model call per request).

The gateway merges concurrent ModelInfer calls of one model and signature into one upstream
call (`batching.models`), so the load is gRPC. Fronts: direct to the upstream, the gateway
without aggregation, the gateway with it; they take turns per concurrency.
"""

from __future__ import annotations

import contextlib

from benchmarks.context import Target
from benchmarks.gateway import plots, tables
from benchmarks.gateway.balancers import Front
from benchmarks.gateway.balancers import Target as Upstream
from benchmarks.gateway.bench import MODEL, Bench, LoadError, Section
from benchmarks.gateway.fleet import Fleet, build_repository
from benchmarks.gateway.load import Run

__all__ = ["scenario_6"]

_MAX_BATCH = 64
_DELAY_MS = 1.0


def _find(runs: list[Run], front: str, concurrency: int) -> Run | None:
    return next((r for r in runs if r.front == front and r.concurrency == concurrency), None)


def scenario_6(bench: Bench) -> Section:
    """Batch aggregation at the gateway on vs off, one non-batching upstream (gRPC)."""
    section = Section(
        "g6",
        "G6. Batch aggregation at the gateway, on vs off, one upstream without batching "
        "(gRPC ModelInfer iris_onnx)",
    )
    if bench.gateway_missing:
        section.notes.append(f"Not measured: {bench.gateway_missing}.")
        return section
    concurrencies = [1, 64] if bench.quick else [1, 16, 64]
    repository = build_repository(bench.work, batching=False)
    batching = (
        "batching:\n  models:\n"
        f"    {MODEL}: {{max_batch_size: {_MAX_BATCH}, max_queue_delay: {_DELAY_MS:g}ms}}"
    )
    with Fleet(repository, bench.work / "logs", 1, prefix="plain") as fleet:
        up = fleet.upstreams[0]
        targets = [Upstream(up.name, up.rest_address, up.grpc_address)]
        with contextlib.ExitStack() as stack:
            fronts: list[Front] = [bench.start_front("direct", targets, "")]
            for label, extra in (("off", ""), ("on", batching)):
                front = bench.start_front(
                    "gateway", targets, "p2c-ewma", label=f"aggregation-{label}", extra=extra
                )
                front.name = f"gateway, aggregation {label}"
                stack.callback(front.stop)
                fronts.append(front)
            for turn, concurrency in enumerate(concurrencies):
                order = fronts[turn % len(fronts) :] + fronts[: turn % len(fronts)]
                for front in order:
                    try:
                        run = bench.measure(front, protocol="gRPC", concurrency=concurrency)
                    except LoadError as exc:
                        section.notes.append(f"{front.name} c={concurrency}: failed: {exc}")
                        continue
                    run.upstreams_cpu = 0.0  # not the fleet's: this scenario's own upstream
                    section.runs.append(run)
    section.tables.append(tables.healthy(section.runs))
    section.plot = plots.healthy(section, bench.plots / "gateway-g6.png")
    for concurrency in concurrencies:
        on = _find(section.runs, "gateway, aggregation on", concurrency)
        off = _find(section.runs, "gateway, aggregation off", concurrency)
        if on is None or off is None:
            continue
        measured = (
            f"{on.rps / off.rps:.2f}x req/s ({on.rps:,.0f} vs {off.rps:,.0f}); p50 "
            f"{on.p50_ms:.2f} vs {off.p50_ms:.2f} ms, p99 {on.p99_ms:.1f} vs {off.p99_ms:.1f} ms"
        )
        if concurrency == 1:
            added = on.p50_ms - off.p50_ms
            section.targets.append(
                Target(
                    "gateway batch aggregation: added p50 at gRPC c=1 (nothing to merge)",
                    f"≤ its max_queue_delay ({_DELAY_MS:g} ms), as the server's batcher",
                    f"+{added:.2f} ms; " + measured,
                    added <= _DELAY_MS,
                    gap=f"{added - _DELAY_MS:.2f} ms over",
                )
            )
            continue
        section.targets.append(
            Target(
                f"gateway batch aggregation on vs off, gRPC c={concurrency}",
                "≥ 1x req/s (it helps in front of a model that does not batch)",
                measured,
                on.rps >= off.rps,
                gap=f"{on.rps / off.rps:.2f}x",
            )
        )
    section.notes.append(
        f"One upstream serving iris_onnx without dynamic_batching; the gateway's aggregation: "
        f"max_batch_size {_MAX_BATCH}, max_queue_delay {_DELAY_MS:g} ms. ibload over gRPC, "
        "closed loop. The c=1 row shows the aggregation's cost when nothing can be merged."
    )
    return section
