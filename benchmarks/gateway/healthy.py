"""Scenarios 1 and 5: three healthy upstreams behind each front, REST and gRPC.

Every front runs at once (idle, each costs next to nothing) and they take turns point by
point, the order rotating per concurrency, so that drift in the machine's load hits them
alike. Direct is one upstream alone: the ratios say what a front costs, not what three
upstreams add (on two shared cores they add no capacity).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence

from benchmarks.context import Target
from benchmarks.gateway import plots, tables
from benchmarks.gateway.balancers import Front
from benchmarks.gateway.balancers import Target as Upstream
from benchmarks.gateway.bench import Bench, LoadError, Section
from benchmarks.gateway.load import Run
from benchmarks.gateway.static_upstream import StaticUpstream

__all__ = ["scenario_1", "scenario_5"]

_UPSTREAMS = 3
#: Added p50 at concurrency 1 the issue allows the gateway (milliseconds).
_ADDED_P50_MS = 0.15
#: Concurrencies of the front-cost table (scenario 1).
_COST_CONCURRENCIES = (16, 64)


#: The fronts other than direct, each with the balancer these scenarios give it.
_BALANCED = (("gateway", "p2c-ewma"), ("nginx", "least_conn"), ("haproxy", "leastconn"))


def _start_balanced(
    bench: Bench, stack: contextlib.ExitStack, targets: list[Upstream], label: str, name: str
) -> list[Front]:
    """Each wanted front of _BALANCED over `targets`, stopped with `stack`; `name` is its
    name with {kind} in it ("" keeps the front's own)."""
    fronts = []
    for kind, balance in _BALANCED:
        if bench.wanted(kind):
            front = bench.start_front(kind, targets, balance, label=label)
            if name:
                front.name = name.format(kind=kind)
            stack.callback(front.stop)
            fronts.append(front)
    return fronts


def _fronts(bench: Bench, stack: contextlib.ExitStack) -> list[Front]:
    targets = bench.targets(_UPSTREAMS)
    direct = bench.start_front("direct", targets, "")
    return [direct, *_start_balanced(bench, stack, targets, "", "")]


def _single(bench: Bench, stack: contextlib.ExitStack) -> list[Front]:
    """Each front over one upstream (the one direct uses): what the hop itself adds at
    concurrency 1, without spreading the requests over three idle-between-requests
    upstreams (each then wakes up cold for every request)."""
    return _start_balanced(bench, stack, bench.targets(1), "single", "{kind}, 1 upstream")


def _measure_rounds(
    bench: Bench,
    section: Section,
    protocol: str,
    concurrencies: Sequence[int],
    fronts_at: Callable[[int], list[Front]],
) -> list[Run]:
    """Every front of `fronts_at(concurrency)` at every concurrency, `bench.rounds` times
    over, the order rotating each turn; one median run (median_run) per front and
    concurrency. A point that fails is noted and left out."""
    measured: dict[tuple[str, int], list[Run]] = {}
    turn = 0
    for _ in range(bench.rounds):
        for concurrency in concurrencies:
            order = fronts_at(concurrency)
            order = order[turn % len(order) :] + order[: turn % len(order)]
            turn += 1
            for front in order:
                try:
                    run = bench.measure(front, protocol=protocol, concurrency=concurrency)
                except LoadError as exc:
                    section.notes.append(f"{front.name} c={concurrency}: failed: {exc}")
                    print(f"bench:   {front.name} c={concurrency}: FAILED {str(exc)[:300]}")
                    continue
                measured.setdefault((front.name, concurrency), []).append(run)
    return [median_run(runs) for runs in measured.values()]


def _healthy(bench: Bench, section: Section, protocol: str, concurrencies: list[int]) -> None:
    """Every front at every concurrency, `bench.rounds` times over; a point's row is its
    median round by req/s, with every round's req/s."""
    with contextlib.ExitStack() as stack:
        fronts = _fronts(bench, stack)
        single = _single(bench, stack)
        section.runs.extend(
            _measure_rounds(
                bench,
                section,
                protocol,
                concurrencies,
                lambda c: fronts + single if c == 1 else fronts,
            )
        )
    section.tables.append(tables.healthy(section.runs))
    section.plot = plots.healthy(section, bench.plots / f"gateway-{section.key}.png")


def median_run(runs: list[Run]) -> Run:
    """The run with the median req/s (the lower of the middle two for an even count),
    carrying every round's req/s and front CPU per request in its extra."""
    median = sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]
    median.extra["rounds_rps"] = [r.rps for r in runs]
    median.extra["rounds_front_us"] = [
        r.front_cpu * 1e6 / r.rps if r.rps and r.front_cpu else 0.0 for r in runs
    ]
    return median


def _front_cost(bench: Bench, section: Section) -> None:
    """Each front alone in front of a static upstream (nginx answering a canned
    inference): the CPU it spends per request, with nothing else busy on the machine."""
    upstream = StaticUpstream(bench.work)
    try:
        targets = [upstream.start()]
        with contextlib.ExitStack() as stack:
            fronts = _start_balanced(bench, stack, targets, "static", "{kind}")
            if not fronts:
                return
            runs = _measure_rounds(bench, section, "REST", _COST_CONCURRENCIES, lambda _: fronts)
    except RuntimeError as exc:
        section.notes.append(f"front cost on a static upstream: failed: {exc}")
        return
    finally:
        upstream.stop()
    section.extra["front_cost"] = [dataclasses.asdict(r) for r in runs]
    section.tables.append(
        "What each front spends per request in front of a static upstream (one nginx worker "
        "answering every inference with a canned response; no Python on the machine), REST "
        "JSON, median of the rounds:\n\n" + tables.front_cost(runs)
    )


def _find(runs: list[Run], front: str, concurrency: int) -> Run | None:
    return next(
        (r for r in runs if r.front.startswith(front) and r.concurrency == concurrency), None
    )


def _targets(bench: Bench, section: Section, concurrencies: list[int]) -> None:
    runs = section.runs
    if bench.gateway_missing:
        section.targets.append(
            Target(f"{section.key}: gateway", "see the issue", bench.gateway_missing, None)
        )
        return
    direct, gateway = _find(runs, "direct", 1), _find(runs, "gateway, 1 upstream", 1)
    if direct and gateway:
        added = gateway.p50_ms - direct.p50_ms
        peers = [p for p in (_find(runs, "nginx, 1", 1), _find(runs, "haproxy, 1", 1)) if p]
        section.targets.append(
            Target(
                f"gateway: added p50 at concurrency 1 ({section.extra['protocol']}, one "
                "upstream behind it)",
                f"≤ {_ADDED_P50_MS} ms",
                f"+{added:.3f} ms (p50 {gateway.p50_ms:.3f} vs direct {direct.p50_ms:.3f} ms); "
                + ", ".join(f"{p.front} +{p.p50_ms - direct.p50_ms:.3f} ms" for p in peers),
                added <= _ADDED_P50_MS,
                gap=f"{added - _ADDED_P50_MS:.3f} ms over",
            )
        )
    for concurrency in concurrencies[1:]:
        gateway = _find(runs, "gateway p2c", concurrency)
        peers = [
            p for p in (_find(runs, "nginx", concurrency), _find(runs, "haproxy", concurrency)) if p
        ]
        if gateway is None or not peers:
            continue
        best = max(peers, key=lambda p: p.rps)
        section.targets.append(
            Target(
                f"gateway: throughput vs nginx and HAProxy, {section.extra['protocol']} "
                f"c={concurrency}",
                "≥ 1x the better of the two",
                ", ".join(f"{gateway.rps / p.rps:.2f}x {p.front}" for p in peers)
                + f" ({gateway.rps:,.0f} vs "
                + ", ".join(f"{p.rps:,.0f}" for p in peers)
                + " req/s)",
                gateway.rps >= best.rps,
                gap=f"{gateway.rps / best.rps:.2f}x of 1x",
            )
        )


def scenario_1(bench: Bench) -> Section:
    """Healthy: REST JSON through each front, concurrency 1, 16 and 64."""
    section = Section("g1", f"G1. Healthy: {_UPSTREAMS} upstreams, REST JSON iris_onnx, per front")
    section.extra["protocol"] = "REST"
    concurrencies = [1, 64] if bench.quick else [1, 16, 64]
    _healthy(bench, section, "REST", concurrencies)
    _targets(bench, section, concurrencies)
    _front_cost(bench, section)
    section.notes.append(
        f"ibload raw HTTP/1.1 engine, closed loop, {bench.warmup:g} s warm-up then "
        f"{bench.duration:g} s per point, {bench.rounds} round(s) of every point (a row is the "
        "median round by req/s; *req/s each round* lists them all); the same JSON body for "
        "every front. Fronts run side by "
        "side and take turns (rotating order per concurrency). `direct` is one upstream alone; "
        "`<front>, 1 upstream` (concurrency 1 only) is that front over that one upstream, for "
        "what the hop adds. Ratios are against direct at the same concurrency."
    )
    return section


def scenario_5(bench: Bench) -> Section:
    """gRPC: the same through each front (nginx grpc_pass, HAProxy proto h2)."""
    section = Section("g5", f"G5. gRPC: {_UPSTREAMS} upstreams, ModelInfer iris_onnx, per front")
    section.extra["protocol"] = "gRPC"
    concurrencies = [1, 64] if bench.quick else [1, 16, 64]
    _healthy(bench, section, "gRPC", concurrencies)
    _targets(bench, section, concurrencies)
    section.notes.append(
        f"{bench.rounds} round(s) of every point; a row is the median round by req/s. "
        "ibload over the Go SDK's gRPC client (raw_input_contents), closed loop, 1 HTTP/2 "
        "connection per 16 requests in flight (at most 4); nginx `grpc_pass` with "
        "least_conn and keepalive, HAProxy `proto h2` on bind and servers."
    )
    return section
