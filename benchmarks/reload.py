"""Scenario 8: reloads under load (issue #10's zero-gap swap), measured beside steady load.

One server in explicit model control, iris_onnx over REST JSON at c=64 (wrk), in rounds
that alternate a steady point with a point during which the model is reloaded from disk
every half second (each reload loads a new instance beside the serving one, swaps, drains
and unloads the old). The targets: no failed request during the reloads, and what the
reloads cost in throughput and p99, as ratios of the steady points of the same run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from benchmarks import loadgen, payloads
from benchmarks.context import NOISY_CPU, Context, ScenarioResult, ServerSession, Target
from benchmarks.loadgen import Point
from benchmarks.procs import Server
from benchmarks.repos import IRIS_ROW

__all__ = ["scenario_8"]

_TOP = 64
_ROUNDS = 4
_RELOAD_EVERY_S = 0.5
_MODEL = "iris_onnx"


def _point(ctx: Context, series: str, reload: bool) -> Callable[[Server], Point]:
    payload = payloads.rest_json(ctx.payload_dir, _MODEL, "input", IRIS_ROW)

    def run(server: Server) -> Point:
        stop = threading.Event()
        outcomes: list[int] = []

        def reloader() -> None:
            url = f"{server.base_url}/v2/repository/models/{_MODEL}/load"
            with httpx.Client(timeout=60) as client:
                while not stop.wait(_RELOAD_EVERY_S):
                    outcomes.append(client.post(url).status_code)

        thread = threading.Thread(target=reloader, daemon=True)
        if reload:
            thread.start()
        try:
            point = loadgen.wrk(
                ctx.tools,
                server,
                payload,
                series=series,
                concurrency=_TOP,
                duration=ctx.duration,
                warmup=ctx.warmup,
            )
        finally:
            stop.set()
            if reload:
                thread.join()
        point.extra["reloads"] = len(outcomes)
        point.extra["reloads_failed"] = sum(1 for code in outcomes if code != 200)
        return point

    return run


def scenario_8(ctx: Context) -> ScenarioResult:
    """Reloads under load: iris_onnx REST JSON at c=64, steady vs a reload every 0.5 s."""
    result = ScenarioResult(
        "s8", f"8. Reloads under load: iris_onnx REST JSON (wrk), c={_TOP}, steady vs reloading"
    )
    rounds = 1 if ctx.quick else _ROUNDS
    extra = ("--model-control-mode", "explicit", "--load-model", _MODEL)
    with ServerSession(
        result,
        "inferbridge batching on, explicit model control",
        lambda: ctx.start_inferbridge("on", [_MODEL], extra=extra, label="explicit"),
        ctx.retry,
    ) as session:
        pairs: list[tuple[Point, Point]] = []
        for number in range(1, rounds + 1):
            order = (False, True) if number % 2 else (True, False)
            taken: dict[bool, Point] = {}
            for reload in order:
                series = "reloading" if reload else "steady"
                point = session.measure(
                    f"{series} round {number} c={_TOP}", _point(ctx, series, reload)
                )
                if point is not None:
                    taken[reload] = point
            if len(taken) == 2:
                pairs.append((taken[True], taken[False]))
    _targets(result, pairs)
    return result


def _targets(result: ScenarioResult, pairs: list[tuple[Point, Point]]) -> None:
    name = f"iris_onnx REST: reloads every {_RELOAD_EVERY_S:g} s under load, c={_TOP}"
    if not pairs:
        result.targets.append(Target(name, "no failed request", "missing point", None))
        return
    reloads = sum(int(r.extra.get("reloads", 0)) for r, _ in pairs)
    failed_reloads = sum(int(r.extra.get("reloads_failed", 0)) for r, _ in pairs)
    requests = sum(r.requests for r, _ in pairs)
    failed = sum(r.requests - r.ok for r, _ in pairs)
    errors = ", ".join(sorted({e for r, _ in pairs for e in r.errors})) or "none"
    quiet = [(a, b) for a, b in pairs if max(a.other_cpu, b.other_cpu) <= NOISY_CPU] or pairs
    reloading_rps = sum(a.rps for a, _ in quiet) / len(quiet)
    steady_rps = sum(b.rps for _, b in quiet) / len(quiet)
    reloading_p99 = max(a.p99_ms for a, _ in quiet)
    steady_p99 = max(b.p99_ms for _, b in quiet)
    result.targets.append(
        Target(
            name,
            "no failed request during the reloads",
            f"{failed} of {requests:,} requests failed ({errors}) during {reloads} reloads "
            f"({failed_reloads} reloads failed); while reloading "
            f"{reloading_rps / steady_rps:.3f}x the steady req/s ({reloading_rps:,.0f} vs "
            f"{steady_rps:,.0f}), p99 {reloading_p99:.1f} vs {steady_p99:.1f} ms",
            failed == 0 and failed_reloads == 0 and reloads > 0,
        )
    )
    result.notes.append(
        "One server (batching on, the Go gateway, --model-control-mode explicit). In the "
        f"reloading points a client POSTs /v2/repository/models/{_MODEL}/load every "
        f"{_RELOAD_EVERY_S:g} s; each reload loads a new instance beside the serving one on a "
        "worker thread, swaps, drains and unloads the old one. Rounds alternate which point "
        "goes first; the ratios use the rounds where other work took at most "
        f"{NOISY_CPU} cores (all rounds if none)."
    )
