"""Scenario 12, part two: a full rollout under load, recorded per second and per version.

Python clients keep the `echo` model (the ReleaseEcho test runtime) busy and record each
response: when, how long, its status and which version answered (`model_version`, or the
version an error names). A poller records the rollout's status (phase, step, weights)
from `GET /v1/rollouts/echo`. Version 2, a good candidate, is promoted through shadow,
canary 10, 50 and 100; then version 3, which fails half of its calls, is started at
weight 20 and rolled back by the analysis. The audit log gives the transitions and the
rollback time; the plot shows weight, error rate and p99 over time per version.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.context import Context, ScenarioResult, Target
from benchmarks.loadgen import Point
from benchmarks.procs import Server

__all__ = ["ECHO", "full_rollout", "write_echo_model"]

ECHO = "echo"
_WORKERS = 8
_INTERVAL_S = 1.0
_FAILURE_LIMIT = 2
_BAD_WEIGHT = 20
_VERSION_IN_ERROR = re.compile(r"version (\d+)")
_GOOD = {
    "candidate": 2,
    "steps": [
        {"shadow": {"duration": "3s", "sample": 1.0}},
        {"canary": {"weight": 10, "duration": "3s"}},
        {"canary": {"weight": 50, "duration": "3s"}},
        {"canary": {"weight": 100, "duration": "3s"}},
    ],
    "analysis": {
        "interval": f"{_INTERVAL_S:g}s",
        "min_requests": 20,
        "failure_limit": _FAILURE_LIMIT,
        "checks": [
            {"error_rate": {"max": 0.02, "max_ratio_to_baseline": 2.0}},
            {"agreement": {"min": 0.99}},
        ],
    },
}
_BAD = {
    "candidate": 3,
    "steps": [
        {"canary": {"weight": _BAD_WEIGHT, "duration": "1m"}},
        {"canary": {"weight": 100, "duration": "1m"}},
    ],
    "analysis": {
        "interval": f"{_INTERVAL_S:g}s",
        "min_requests": 10,
        "failure_limit": _FAILURE_LIMIT,
        "checks": [{"error_rate": {"max": 0.05}}],
    },
}
_COLOURS = {"1": "tab:blue", "2": "tab:green", "3": "tab:red", "?": "tab:grey"}


def write_echo_model(repo: Path) -> None:
    """echo: versions 1 (baseline), 2 (the same answers), 3 (fails half of its calls)."""
    model = repo / ECHO
    for version in (1, 2, 3):
        (model / str(version)).mkdir(parents=True, exist_ok=True)
        (model / str(version) / "value.txt").write_text("1")
    (model / "3" / "behaviour.json").write_text(json.dumps({"fail_ratio": 0.5}))
    (model / "config.yaml").write_text(
        "runtime: tests.support.release_runtimes:ReleaseEcho\n"
        "version_policy: {specific: {versions: [1]}}\n"
    )


@dataclass
class _Recorder:
    """Client-side records (end time, latency s, status, version) and server-side polls."""

    url: str
    responses: list[tuple[float, float, int, str]] = field(default_factory=list)
    polls: list[tuple[float, dict[str, Any] | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> _Recorder:
        for target in [self._load] * _WORKERS + [self._poll]:
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _load(self) -> None:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]}
        path = f"{self.url}/v2/models/{ECHO}/infer"
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.time()
                try:
                    answer = client.post(path, json=body)
                    status, text = answer.status_code, answer.text
                except httpx.HTTPError as exc:
                    status, text = 0, str(exc)
                ended = time.time()
                if status == 200:
                    version = str(json.loads(text).get("model_version", "?"))
                else:
                    match = _VERSION_IN_ERROR.search(text)
                    version = match.group(1) if match else "?"
                self.responses.append((ended, ended - started, status, version))

    def _poll(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(0.2):
                try:
                    answer = client.get(f"{self.url}/v1/rollouts/{ECHO}")
                except httpx.HTTPError:
                    continue
                status = answer.json() if answer.status_code == 200 else None
                self.polls.append((time.time(), status))


def _wait(url: str, phase: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/v1/rollouts/{ECHO}", timeout=30)
        if answer.status_code == 200 and answer.json()["phase"] == phase:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the rollout of {ECHO} did not reach {phase} in {timeout:.0f} s")


def _start(url: str, spec: dict[str, Any]) -> None:
    answer = httpx.post(f"{url}/v1/rollouts", json={"model": ECHO, **spec}, timeout=120)
    if answer.status_code != 201:
        raise RuntimeError(f"rollout of {ECHO} not started: {answer.text}")


def full_rollout(ctx: Context, result: ScenarioResult, server: Server) -> None:
    """Promote version 2, roll back version 3, under load; record, tabulate, plot."""
    url = server.base_url
    settle = 1.5 if ctx.quick else 3.0
    recorder = _Recorder(url).start()
    try:
        time.sleep(settle)
        _start(url, _GOOD)
        _wait(url, "promoted", 180)
        time.sleep(settle)
        _start(url, _BAD)
        _wait(url, "aborted", 120)
        time.sleep(settle)
    finally:
        recorder.stop()
    events = httpx.get(f"{url}/v1/rollouts/{ECHO}/history", timeout=30).json()["events"]
    _summarise(result, recorder, events)
    if not result.error:
        result.plot = _plot(
            recorder, events, ctx.work / "plots" / "scenario12.png", result.title.split(";")[0]
        )


def _phases(
    events: list[dict[str, Any]], first: float, last: float
) -> list[tuple[str, float, float]]:
    """(label, from, to) of the load's phases, from the audit log's transitions."""
    ids = list(dict.fromkeys(e["rollout"] for e in events))
    good = [e for e in events if e["rollout"] == ids[0]]
    bad = [e for e in events if e["rollout"] == ids[-1]]
    good_start = next(e["at"] for e in good if e["event"] == "started")
    promoted = next(e["at"] for e in good if e["event"] == "promoted")
    bad_start = next(e["at"] for e in bad if e["event"] == "started")
    aborted = next(e["at"] for e in bad if e["event"] == "aborted")
    return [
        ("version 1 only", first, good_start),
        ("good rollout: 2 started → promoted", good_start, promoted),
        ("version 2 promoted", promoted, bad_start),
        (f"bad rollout: 3 at weight {_BAD_WEIGHT} → aborted", bad_start, aborted),
        ("after the rollback", aborted, last),
    ]


def _summarise(result: ScenarioResult, recorder: _Recorder, events: list[dict[str, Any]]) -> None:
    responses = sorted(recorder.responses)
    if not responses or len({e["rollout"] for e in events}) < 2:
        result.error = "the full rollout recorded no responses or fewer than two rollouts"
        return
    phases = _phases(events, responses[0][0], responses[-1][0])
    for label, start, end in phases:
        window = [r for r in responses if start <= r[0] < end]
        if not window:
            continue
        latency_ms = np.array([r[1] * 1000 for r in window])
        seconds = max(1e-9, end - start)
        errors: dict[str, int] = {}
        versions: dict[str, int] = {}
        for _, _, status, version in window:
            versions[version] = versions.get(version, 0) + 1
            if status != 200:
                key = f"HTTP {status} (v{version})" if status else "client error"
                errors[key] = errors.get(key, 0) + 1
        ok = sum(1 for r in window if r[2] == 200)
        result.points.append(
            Point(
                series=label,
                client=f"python httpx x{_WORKERS}",
                concurrency=_WORKERS,
                rps=len(window) / seconds,
                p50_ms=float(np.percentile(latency_ms, 50)),
                p90_ms=float(np.percentile(latency_ms, 90)),
                p99_ms=float(np.percentile(latency_ms, 99)),
                requests=len(window),
                ok=ok,
                errors=errors,
                client_cpu=0.0,
                server_cpu=0.0,
                duration_s=seconds,
                goodput=ok / seconds,
                extra={"answered_by_version": versions},
            )
        )
    _, good_start, promoted = phases[1]
    _, bad_start, aborted = phases[3]
    good_failed = sum(1 for r in responses if good_start <= r[0] <= promoted and r[2] != 200)
    during = [r for r in responses if bad_start <= r[0] <= aborted]
    failed = [r for r in responses if r[2] != 200]
    late = [r for r in failed if r[0] > aborted + 0.5]  # after the abort, once in flight ended
    expected = len(during) * _BAD_WEIGHT / 100 * 0.5
    took = aborted - bad_start
    bound = _INTERVAL_S * _FAILURE_LIMIT + _INTERVAL_S
    result.targets.append(
        Target(
            "echo: a good candidate promoted under load (shadow → 10 → 50 → 100)",
            "promoted, no failed request",
            f"promoted {promoted - good_start:.1f} s after its start; {good_failed} of "
            f"{sum(1 for r in responses if good_start <= r[0] <= promoted):,} requests failed",
            good_failed == 0,
        )
    )
    result.targets.append(
        Target(
            f"echo: a candidate failing 50 % at weight {_BAD_WEIGHT} rolled back",
            f"rollback ≤ interval x failure_limit + interval = {bound:g} s; failed requests "
            "bounded by the weight",
            f"{took:.2f} s from its start to `aborted` in the audit log; {len(failed)} failed "
            f"client requests, {len(late)} after the abort (expected ≈ {expected:.0f}: "
            f"{len(during):,} requests x {_BAD_WEIGHT} % x 50 %)",
            took <= bound and not late,
            gap="" if took <= bound else f"{took - bound:.2f} s over",
        )
    )
    why = next((e["detail"].get("why", "") for e in events if e["event"] == "aborted"), "")
    result.notes.append(
        f"Full rollout: {_WORKERS} Python clients (httpx, one request at a time each) on the "
        "echo model (ReleaseEcho, y = x + 1 in every version), every response recorded with "
        "its version (`model_version`, or the version named in the error); the rollout's "
        "status polled every 0.2 s. Version 2 (good, same answers): shadow 3 s at sample 1.0 "
        "with an agreement check, canary 10, 50, 100 for 3 s each, analysis every "
        f"{_INTERVAL_S:g} s (min 20 requests, error rate ≤ 0.02 and ≤ 2x the baseline's). "
        f"Version 3 (fails every other call) at weight {_BAD_WEIGHT}, analysis every "
        f"{_INTERVAL_S:g} s, min 10 requests, failure_limit {_FAILURE_LIMIT}, error rate ≤ 0.05. "
        f"The abort's reason in the audit log: {why!r}. The rows above are the phases of "
        "that run (CPU not measured for them)."
    )


def _per_second(recorder: _Recorder, t0: float) -> dict[str, dict[int, list[tuple[float, int]]]]:
    """version → second → [(latency ms, status)]."""
    table: dict[str, dict[int, list[tuple[float, int]]]] = {}
    for ended, latency, status, version in recorder.responses:
        second = int(ended - t0)
        table.setdefault(version, {}).setdefault(second, []).append((latency * 1000, status))
    return table


def _plot(recorder: _Recorder, events: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not recorder.responses:
        return None
    t0 = min(r[0] for r in recorder.responses)
    figure, (weights, errors, p99) = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True)
    # Server side: the weights the rollout reports (before the first rollout, v1 has all).
    lines: dict[str, tuple[list[float], list[float]]] = {"1": ([], [])}
    for at, status in recorder.polls:
        shares = status["weights"] if status is not None else {"1": 100.0}
        if status is not None and status["phase"] == "promoted":
            shares = {str(status["candidate"]): 100.0, str(status["baseline"]): 0.0}
        for version in set(lines) | set(shares):
            xs, ys = lines.setdefault(version, ([], []))
            xs.append(at - t0)
            ys.append(float(shares.get(version, 0.0)))
    for version, (xs, ys) in sorted(lines.items()):
        weights.step(xs, ys, where="post", color=_COLOURS.get(version), label=f"v{version} weight")
    table = _per_second(recorder, t0)
    totals: dict[int, int] = {}
    for seconds in table.values():
        for second, rows in seconds.items():
            totals[second] = totals.get(second, 0) + len(rows)
    for version, seconds in sorted(table.items()):
        colour = _COLOURS.get(version, "tab:grey")
        xs = sorted(seconds)
        share = [100 * len(seconds[s]) / totals[s] for s in xs]
        weights.plot(
            [x + 0.5 for x in xs],
            share,
            "o",
            ms=3,
            color=colour,
            alpha=0.6,
            label=f"v{version} answers (client)",
        )
        rate = [100 * sum(1 for _, st in seconds[s] if st != 200) / len(seconds[s]) for s in xs]
        errors.plot([x + 0.5 for x in xs], rate, "o-", ms=3, color=colour, label=f"v{version}")
        ok = [(s, [ms for ms, st in seconds[s] if st == 200]) for s in xs]
        ok = [(s, v) for s, v in ok if v]
        p99.plot(
            [s + 0.5 for s, _ in ok],
            [float(np.percentile(v, 99)) for _, v in ok],
            "o-",
            ms=3,
            color=colour,
            label=f"v{version}",
        )
    candidates = {
        e["rollout"]: e["detail"].get("candidate") for e in events if e["event"] == "started"
    }
    for event in events:
        if event["event"] in ("started", "promoted", "aborted"):
            x = event["at"] - t0
            for axes in (weights, errors, p99):
                axes.axvline(x, color="black", linestyle=":", linewidth=0.8)
            label = f"{event['event']} v{candidates.get(event['rollout'], '?')}"
            weights.annotate(
                label,
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                va="top",
                ha="right",
            )
    weights.set_ylabel("weight / share of answers %")
    weights.set_ylim(-5, 105)
    errors.set_ylabel("client error rate % (per s)")
    p99.set_ylabel("p99 latency ms (per s, ok)")
    p99.set_yscale("log")
    p99.set_xlabel("seconds since the load started")
    for axes in (weights, errors, p99):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    weights.set_title(title + ": weight, error rate and p99 per version", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
