"""Scenarios 2-4: faults in the upstream pool, per front and balancer.

2. One upstream SIGKILLed mid-run, restarted 10 s later: failed requests and p99 in the
   window. 3. One upstream slowed by 100 ms: p99 of the whole against the same front's
   healthy p99; then Linkerd's shape (every upstream that fits, one slowed past the
   client's deadline): success rate. 4. One upstream answering 503 to half its inferences:
   success rate, and how much traffic still reaches it.
Faults come from benchmarks/faults (the gateway's fault-injecting proxy) in front of the
upstream's REST port.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Sequence

from benchmarks.context import Target
from benchmarks.gateway import plots, tables
from benchmarks.gateway.balancers import BALANCERS, Front, gateway_counters
from benchmarks.gateway.balancers import Target as Upstream
from benchmarks.gateway.bench import Bench, LoadError, Section
from benchmarks.gateway.load import Run

__all__ = ["scenario_2", "scenario_3", "scenario_4"]

_CONCURRENCY = 16
_KILL_AT_S = 4.0
_DOWN_FOR_S = 10.0
_SLOW_MS = 100.0
#: Linkerd's published test: one of 11 backends slowed to 2 s, a 1 s timeout.
_LINKERD_SLOW_MS = 2000.0
_LINKERD_DEADLINE_S = 1.0
_LINKERD_TARGET = 0.999
#: Health checks (and the gateway's discovery) wait longer than the slow upstream's delay,
#: so that it stays in rotation and the balancer alone decides (as in Linkerd's test):
#: with the default 1 s check timeout, health checks take it out and every balancer wins.
_LINKERD_CHECK_TIMEOUT_S = 5.0


def _pairs(bench: Bench, which: Sequence[str]) -> list[tuple[str, str]]:
    """(kind, balancer) per front asked for, in the order of `which` (ewma, least, rr;
    best: each front's best balancer alone)."""
    if list(which) == ["best"]:
        return _best(bench)
    pairs = []
    for kind in ("gateway", "nginx", "haproxy"):
        if not bench.wanted(kind):
            continue
        for key in which:
            balance = BALANCERS[kind][key]
            if balance:
                pairs.append((kind, balance))
    return pairs


def _best(bench: Bench) -> list[tuple[str, str]]:
    """Each front with its best balancer: the gateway's peak EWMA, the others' least-conn."""
    return [
        (kind, BALANCERS[kind]["ewma"] or BALANCERS[kind]["least"])
        for kind in ("gateway", "nginx", "haproxy")
        if bench.wanted(kind)
    ]


def _window(run: Run, start: float, end: float) -> dict[str, float]:
    """Sum of the timeline's slices that overlap [start, end) seconds."""
    slices = [s for s in run.timeline if s["start_s"] + 1 > start and s["start_s"] < end]
    requests = sum(s["requests"] for s in slices)
    ok = sum(s["ok"] for s in slices)
    return {
        "requests": requests,
        "failed": requests - ok,
        "rps": requests / max(1, len(slices)),
        "worst_p99_ms": max((s["p99_ms"] for s in slices), default=0.0),
    }


def _inferences_seen(target: Upstream) -> int:
    """Inference requests the fault proxy in front of `target` has received so far."""
    url = f"http://{target.rest}/_faults/log"
    with urllib.request.urlopen(url, timeout=30) as response:
        log = json.loads(response.read())
    return sum(1 for entry in log if entry.get("path", "").endswith("/infer") and "fault" in entry)


def _gateway_counters(section: Section, front: Front, run: Run | None) -> None:
    """After a gateway run: its retry / failure / ejection counters, as a note."""
    if run is None or not front.name.startswith("gateway"):
        return
    counters = gateway_counters(front)
    run.extra["gateway_counters"] = counters
    text = ", ".join(f"{k} {v:g}" for k, v in sorted(counters.items())) or "all zero"
    section.notes.append(f"{front.name} ({run.extra.get('scenario', 'run')}) counters: {text}.")


def _measured(bench: Bench, section: Section, label: str, measure: Callable[[], Run]) -> Run | None:
    try:
        run = measure()
    except LoadError as exc:
        section.notes.append(f"{label}: failed: {exc}")
        print(f"bench:   {label}: FAILED {str(exc)[:300]}", flush=True)
        return None
    section.runs.append(run)
    return run


def scenario_2(bench: Bench) -> Section:
    """One upstream SIGKILLed mid-run and restarted 10 s later (REST, c=16)."""
    section = Section(
        "g2",
        f"G2. Failover: one of 3 upstreams SIGKILLed at {_KILL_AT_S:g} s, restarted "
        f"{_DOWN_FOR_S:g} s later (REST, c={_CONCURRENCY})",
    )
    victim = bench.fleet.upstreams[1]
    targets = bench.targets(3)
    duration = bench.fault_duration
    for kind, balance in _best(bench):
        bench.settle()
        events: dict[str, float] = {}

        def during(events: dict[str, float] = events) -> None:
            origin = time.monotonic() + bench.warmup
            time.sleep(max(0.0, origin + _KILL_AT_S - time.monotonic()))
            victim.kill()
            events["kill"] = time.monotonic() - origin
            time.sleep(max(0.0, origin + _KILL_AT_S + _DOWN_FOR_S - time.monotonic()))
            events["restart"] = time.monotonic() - origin
            victim.restart()
            events["ready"] = time.monotonic() - origin

        with bench.front(kind, targets, balance) as front:
            run = _measured(
                bench,
                section,
                front.name,
                lambda: bench.measure(
                    front,
                    concurrency=_CONCURRENCY,
                    duration=duration,
                    timeline=True,
                    during=during,
                ),
            )
            _gateway_counters(section, front, run)
        if run is None:
            continue
        end = min(duration, events.get("ready", duration) + 2.0)
        run.extra["events_s"] = events
        run.extra["window_s"] = (events.get("kill", _KILL_AT_S), end)
        run.extra["window"] = _window(run, events.get("kill", _KILL_AT_S), end)
    bench.settle()
    section.tables.append(tables.faults(section.runs, "kill → ready + 2 s"))
    for run in section.runs:
        ev = run.extra.get("events_s", {})
        section.notes.append(
            f"{run.front}: killed at {ev.get('kill', 0):.1f} s, restart begun at "
            f"{ev.get('restart', 0):.1f} s, ready at {ev.get('ready', 0):.1f} s."
        )
    for run in section.runs:
        if run.front.startswith("gateway"):
            section.targets.append(
                Target(
                    "gateway: failed requests with an upstream SIGKILLed and restarted",
                    "0 (retries within budget)",
                    f"{run.failed:,} of {run.requests:,} ({run.errors_text()}); worst 1-s p99 in "
                    f"the window {run.extra.get('window', {}).get('worst_p99_ms', 0):.1f} ms",
                    run.failed == 0,
                    gap=f"{run.failed:,} failed",
                )
            )
    section.plot = plots.timeline(section.title, section.runs, bench.plots / "gateway-g2.png")
    section.notes.append(
        "nginx: passive max_fails=1 fail_timeout=10s, proxy_next_upstream error timeout "
        "http_502/503/504 non_idempotent, 2 tries. HAProxy: httpchk every 2 s (fall 2, rise 2), "
        "retries 2, retry-on conn-failure empty-response response-timeout 503, option "
        "redispatch. The dashed lines in the plot are each front's kill, restart and ready "
        "again; the window columns run from the kill to 2 s after ready."
    )
    return section


def _degraded(
    bench: Bench,
    section: Section,
    *,
    upstreams: int,
    delay_ms: float,
    error_rate: float,
    which: Sequence[str],
    deadline_s: float,
    healthy_baseline: bool,
    duration: float,
    label: str,
    check_timeout_s: float = 0.0,
) -> tuple[list[Run], dict[str, Run]]:
    """Per front: a run with the last upstream behind a fault proxy (and a healthy one)."""
    runs: list[Run] = []
    baseline: dict[str, Run] = {}
    plain = bench.targets(upstreams)
    for kind, balance in _pairs(bench, which):
        bench.settle()
        if healthy_baseline:
            with bench.front(kind, plain, balance, deadline_s=deadline_s) as front:
                run = _measured(
                    bench,
                    section,
                    f"{front.name} healthy",
                    lambda: bench.measure(front, concurrency=_CONCURRENCY, timeout_s=deadline_s),
                )
                if run is not None:
                    run.extra["healthy"] = True
                    section.runs.remove(run)
                    baseline[run.front] = run
        with (
            bench.fault_proxy(plain[-1], delay_ms=delay_ms, error_rate=error_rate) as faulty,
            bench.front(
                kind,
                [*plain[:-1], faulty],
                balance,
                deadline_s=deadline_s,
                check_timeout_s=check_timeout_s,
            ) as front,
        ):
            before = _inferences_seen(faulty)
            run = _measured(
                bench,
                section,
                f"{front.name} {label}",
                lambda: bench.measure(
                    front,
                    concurrency=_CONCURRENCY,
                    duration=duration,
                    timeline=True,
                    timeout_s=deadline_s,
                ),
            )
            after = _inferences_seen(faulty)
            if run is not None:
                run.extra["scenario"] = label
            _gateway_counters(section, front, run)
        if run is not None:
            reached = after - before
            run.extra["faulty_share"] = reached / max(1, run.requests)
            run.extra["faulty_inferences"] = reached
            run.extra["scenario"] = label
            runs.append(run)
    return runs, baseline


def scenario_3(bench: Bench) -> Section:
    """One upstream slowed by 100 ms; then Linkerd's shape (one slowed past the deadline)."""
    section = Section(
        "g3",
        f"G3. Slow upstream: one of 3 delayed {_SLOW_MS:g} ms; Linkerd's shape: one of "
        f"{len(bench.fleet.upstreams)} delayed {_LINKERD_SLOW_MS / 1000:g} s, deadline "
        f"{_LINKERD_DEADLINE_S:g} s (REST, c={_CONCURRENCY})",
    )
    which = ["ewma", "least", "rr"]
    slow, baseline = _degraded(
        bench,
        section,
        upstreams=3,
        delay_ms=_SLOW_MS,
        error_rate=0.0,
        which=which,
        deadline_s=10.0,
        healthy_baseline=True,
        duration=bench.fault_duration / 2,
        label=f"1 of 3 slowed {_SLOW_MS:g} ms",
    )
    section.tables.append(
        f"One of 3 upstreams {_SLOW_MS:g} ms slower:\n\n" + tables.success(slow, baseline)
    )
    for run in slow:
        base = baseline.get(run.front)
        if run.front.startswith("gateway p2c-ewma") and base is not None:
            section.targets.append(
                Target(
                    f"gateway p2c-ewma: p99 with one upstream {_SLOW_MS:g} ms slow",
                    "≤ 2x the healthy p99",
                    f"{run.p99_ms / base.p99_ms:.2f}x ({run.p99_ms:.1f} vs {base.p99_ms:.1f} ms); "
                    f"{100 * run.extra['faulty_share']:.1f} % of requests to the slow one",
                    run.p99_ms <= 2 * base.p99_ms,
                    gap=f"{run.p99_ms / base.p99_ms:.1f}x",
                )
            )
    count = len(bench.fleet.upstreams)
    linkerd, _ = _degraded(
        bench,
        section,
        upstreams=count,
        delay_ms=_LINKERD_SLOW_MS,
        error_rate=0.0,
        which=which,
        deadline_s=_LINKERD_DEADLINE_S,
        healthy_baseline=False,
        duration=bench.fault_duration / 2,
        label=f"1 of {count} slowed {_LINKERD_SLOW_MS / 1000:g} s",
        check_timeout_s=_LINKERD_CHECK_TIMEOUT_S,
    )
    section.tables.append(
        f"Linkerd's shape: one of {count} upstreams {_LINKERD_SLOW_MS / 1000:g} s slow, the "
        f"client's deadline {_LINKERD_DEADLINE_S:g} s (ibload -timeout; the fronts' own "
        f"upstream timeout the same; health checks time out after {_LINKERD_CHECK_TIMEOUT_S:g} "
        "s, so the slow upstream stays in rotation and the balancer alone decides):\n\n"
        + tables.success(linkerd, {})
    )
    for run in linkerd:
        if run.front.startswith("gateway p2c-ewma"):
            section.targets.append(
                Target(
                    f"gateway p2c-ewma: success rate, 1 of {count} upstreams past the deadline",
                    f"≥ {100 * _LINKERD_TARGET:g} % (Linkerd's peak EWMA)",
                    f"{100 * run.success_rate:.3f} % ({run.failed:,} of {run.requests:,} failed)",
                    run.success_rate >= _LINKERD_TARGET,
                    gap=f"{100 * run.success_rate:.3f} %",
                )
            )
    section.plot = plots.timeline(section.title, slow + linkerd, bench.plots / "gateway-g3.png")
    section.notes.append(
        "The slow upstream sits behind benchmarks/faults (every request through it delayed, "
        "health checks included: a front that checks health sees the same slow server). "
        "'share to the faulty upstream' = inference attempts "
        "the fault proxy received / requests the client sent (retries count as attempts). "
        "Each front's healthy p99 is its own run over the same upstreams without the fault "
        "proxy, just before. Open source nginx has no latency-aware balancer (least_conn is "
        "its best); HAProxy's leastconn likewise."
    )
    return section


def scenario_4(bench: Bench) -> Section:
    """One upstream answering 503 to half its inference requests."""
    section = Section(
        "g4",
        "G4. Erroring upstream: one of 3 answers 503 to half its inferences "
        f"(REST, c={_CONCURRENCY})",
    )
    runs, _ = _degraded(
        bench,
        section,
        upstreams=3,
        delay_ms=0.0,
        error_rate=0.5,
        which=["best"],
        deadline_s=10.0,
        healthy_baseline=False,
        duration=bench.fault_duration,
        label="1 of 3 answers 503 half the time",
    )
    section.tables.append(tables.success(runs, {}))
    for run in runs:
        if run.front.startswith("gateway"):
            section.targets.append(
                Target(
                    "gateway: success rate with one upstream answering 503 to half",
                    "100 % (retries on 503; the breaker ejects it)",
                    f"{100 * run.success_rate:.3f} %; {100 * run.extra['faulty_share']:.1f} % of "
                    "requests still reached the erroring upstream",
                    run.failed == 0,
                    gap=f"{run.failed:,} failed",
                )
            )
    section.plot = plots.timeline(section.title, runs, bench.plots / "gateway-g4.png")
    section.notes.append(
        "A 503 from the fault proxy is fast (it never reaches the upstream): a least-loaded "
        "balancer that does not penalise errors sends it more traffic, not less. nginx retries "
        "it on the next upstream (proxy_next_upstream http_503) and counts it towards "
        "max_fails; HAProxy retries it (retry-on 503). The fault proxy answers half of every "
        "front's health checks (and the gateway's discovery) 503 too, so active health "
        "checks flap."
    )
    return section
