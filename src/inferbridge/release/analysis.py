"""The analysis of one window: the candidate's and baseline's own figures, each check's
verdict and the figures behind it.

Figures come from the versions' `VersionStats` (counters by failure reason, and the
durations of successful requests sampled into `latency_window` while a rollout watches
them) and from the shadow's comparisons. Nothing here touches the hot path: a `Watch` swaps
the sample lists once per interval.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferbridge.observability.stats import VersionStats
from inferbridge.release.shadow import ShadowCounts
from inferbridge.release.spec import (
    AgreementCheck,
    AnalysisSpec,
    Check,
    ErrorRateCheck,
    LatencyCheck,
    PrometheusCheck,
)

__all__ = ["Analysis", "CheckResult", "Figures", "Watch", "judge"]

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass(slots=True)
class _Tick:
    """What one version did during one interval."""

    successes: int
    failures: dict[str, int]
    latencies: list[float]


@dataclass(frozen=True, slots=True)
class Figures:
    """One version's figures over a window."""

    requests: int
    failures: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None

    def errors(self, reasons: Sequence[str]) -> int:
        return sum(self.failures.get(r, 0) for r in reasons)

    def error_rate(self, reasons: Sequence[str]) -> float:
        return self.errors(reasons) / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": {k: v for k, v in sorted(self.failures.items()) if v},
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }


class _VersionWatch:
    def __init__(self, stats: VersionStats, ticks: int) -> None:
        self.stats = stats
        self._last_success = stats.success.count
        self._last_failures = dict(stats.failures)
        stats.latency_window = []
        self._ticks: deque[_Tick] = deque(maxlen=ticks)

    def tick(self) -> None:
        stats = self.stats
        latencies = stats.latency_window or []
        stats.latency_window = []
        successes = stats.success.count - self._last_success
        failures = {
            reason: count - self._last_failures.get(reason, 0)
            for reason, count in stats.failures.items()
        }
        self._last_success = stats.success.count
        self._last_failures = dict(stats.failures)
        self._ticks.append(_Tick(successes, failures, latencies))

    def figures(self) -> Figures:
        successes = sum(t.successes for t in self._ticks)
        failures: dict[str, int] = {}
        for t in self._ticks:
            for reason, count in t.failures.items():
                failures[reason] = failures.get(reason, 0) + count
        samples = [s for t in self._ticks for s in t.latencies]
        p50 = p99 = None
        if samples:
            p50, p99 = (float(q) * 1000 for q in np.quantile(samples, [0.5, 0.99]))
        return Figures(successes + sum(failures.values()), failures, p50, p99)

    def close(self) -> None:
        self.stats.latency_window = None


class Watch:
    """Samples the baseline's and candidate's figures, one tick per analysis interval, and
    keeps the last `window / interval` ticks."""

    def __init__(
        self, baseline: VersionStats | None, candidate: VersionStats | None, spec: AnalysisSpec
    ) -> None:
        ticks = max(1, round(spec.window_s / spec.interval))
        self.baseline = _VersionWatch(baseline, ticks) if baseline is not None else None
        self.candidate = _VersionWatch(candidate, ticks) if candidate is not None else None
        self.shadow: deque[ShadowCounts] = deque(maxlen=ticks)

    def tick(self, shadow: ShadowCounts | None) -> None:
        for watch in (self.baseline, self.candidate):
            if watch is not None:
                watch.tick()
        self.shadow.append(shadow if shadow is not None else ShadowCounts())

    def figures(self) -> tuple[Figures, Figures, ShadowCounts]:
        empty = Figures(0, {}, None, None)
        baseline = self.baseline.figures() if self.baseline is not None else empty
        candidate = self.candidate.figures() if self.candidate is not None else empty
        return baseline, candidate, _merge(self.shadow)

    def close(self) -> None:
        for watch in (self.baseline, self.candidate):
            if watch is not None:
                watch.close()


def _merge(windows: Sequence[ShadowCounts]) -> ShadowCounts:
    total = ShadowCounts()
    for counts in windows:
        total.add(counts)
    return total


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str
    verdict: str  # pass, fail, skip
    why: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "verdict": self.verdict, "why": self.why, **self.figures}


@dataclass(frozen=True, slots=True)
class Analysis:
    """One window's figures and verdicts. `verdict`: pass, fail, or inconclusive (too few
    requests to judge; it neither passes a step nor counts towards the failure limit)."""

    at: float  # wall-clock seconds
    step: int
    verdict: str
    why: str
    baseline: Figures
    candidate: Figures
    shadow: ShadowCounts
    checks: tuple[CheckResult, ...]
    reference: Figures | None = None  # the baseline figures the ratios used

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "at": self.at,
            "step": self.step,
            "verdict": self.verdict,
            "why": self.why,
            "baseline": self.baseline.to_json(),
            "candidate": self.candidate.to_json(),
            "checks": [c.to_json() for c in self.checks],
        }
        if self.shadow.sent or self.shadow.dropped:
            document["shadow"] = self.shadow.to_json()
        if self.reference is not None and self.reference is not self.baseline:
            document["baseline_reference"] = self.reference.to_json()
        return document


def judge(
    spec: AnalysisSpec,
    step: int,
    baseline: Figures,
    candidate: Figures,
    shadow: ShadowCounts,
    reference: Figures | None,
    external: dict[int, CheckResult],
) -> Analysis:
    """Apply every check to one window. `reference` is the last baseline window with enough
    requests (ratios need one when the baseline gets no traffic, as at weight 100);
    `external` holds the results of checks that ask another system (Prometheus), by index."""
    now = time.time()
    if reference is None or baseline.requests >= max(1, spec.min_requests):
        reference = baseline
    judged = candidate.requests  # shadow copies count here too: they are its requests
    if judged < spec.min_requests:
        why = f"too few requests to judge: {judged} of min_requests {spec.min_requests}"
        return Analysis(now, step, "inconclusive", why, baseline, candidate, shadow, (), reference)
    results: list[CheckResult] = []
    for index, check in enumerate(spec.checks):
        if index in external:
            results.append(external[index])
        else:
            results.append(_apply(check, spec, candidate, reference, shadow))
    failed = [r for r in results if r.verdict == FAIL]
    # Every check skipped (no traffic to judge, no series yet): no evidence either way,
    # unless the spec asked to judge without a minimum of requests.
    if results and spec.min_requests > 0 and all(r.verdict == SKIP for r in results):
        why = "no check could judge: " + "; ".join(f"{r.check}: {r.why}" for r in results)
        return Analysis(
            now, step, "inconclusive", why, baseline, candidate, shadow, tuple(results), reference
        )
    if failed:
        verdict, why = "fail", "; ".join(f"{r.check}: {r.why}" for r in failed)
    else:
        verdict = "pass"
        why = "; ".join(f"{r.check}: {r.why}" for r in results) or "no checks"
    return Analysis(now, step, verdict, why, baseline, candidate, shadow, tuple(results), reference)


def _apply(
    check: Check,
    spec: AnalysisSpec,
    candidate: Figures,
    baseline: Figures,
    shadow: ShadowCounts,
) -> CheckResult:
    if isinstance(check, ErrorRateCheck):
        return _error_rate(check, candidate, baseline)
    if isinstance(check, LatencyCheck):
        return _latency(check, spec, candidate, baseline)
    if isinstance(check, AgreementCheck):
        return _agreement(check, shadow)
    assert isinstance(check, PrometheusCheck)  # evaluated by the controller
    return CheckResult("prometheus", SKIP, "not evaluated")


def _error_rate(check: ErrorRateCheck, candidate: Figures, baseline: Figures) -> CheckResult:
    spec = check.error_rate
    rate = candidate.error_rate(spec.reasons)
    base_rate = baseline.error_rate(spec.reasons)
    figures = {
        "candidate": rate,
        "baseline": base_rate,
        "candidate_errors": candidate.errors(spec.reasons),
        "candidate_requests": candidate.requests,
    }
    if candidate.requests == 0:
        return CheckResult("error_rate", SKIP, "the candidate answered no requests", figures)
    problems = []
    if spec.max is not None and rate > spec.max:
        problems.append(f"error rate {rate:.4f} above max {spec.max}")
    if spec.max_ratio_to_baseline is not None:
        if baseline.requests == 0:
            pass  # no baseline to compare with yet: only the absolute bound applies
        else:
            # A baseline with no errors in its window counts as one error: otherwise any
            # single candidate error would be an infinite ratio.
            reference = max(base_rate, 1 / baseline.requests)
            limit = spec.max_ratio_to_baseline * reference
            figures["limit"] = limit
            if rate > limit:
                problems.append(
                    f"error rate {rate:.4f} above {spec.max_ratio_to_baseline}x the baseline's "
                    f"{base_rate:.4f}"
                )
    if problems:
        return CheckResult("error_rate", FAIL, "; ".join(problems), figures)
    return CheckResult("error_rate", PASS, f"error rate {rate:.4f}", figures)


def _latency(
    check: LatencyCheck, spec: AnalysisSpec, candidate: Figures, baseline: Figures
) -> CheckResult:
    bound = check.spec
    name = "latency_p99" if check.quantile == 0.99 else "latency_p50"
    ours = candidate.p99_ms if check.quantile == 0.99 else candidate.p50_ms
    theirs = baseline.p99_ms if check.quantile == 0.99 else baseline.p50_ms
    figures = {"candidate_ms": ours, "baseline_ms": theirs}
    if ours is None:
        return CheckResult(name, SKIP, "the candidate answered no requests successfully", figures)
    problems = []
    if bound.max_ms is not None and ours > bound.max_ms:
        problems.append(f"{ours:.2f} ms above max_ms {bound.max_ms}")
    if bound.max_ratio_to_baseline is not None and theirs is not None:
        limit = bound.max_ratio_to_baseline * theirs
        figures["limit_ms"] = limit
        if ours > limit:
            problems.append(
                f"{ours:.2f} ms above {bound.max_ratio_to_baseline}x the baseline's {theirs:.2f} ms"
            )
    if problems:
        return CheckResult(name, FAIL, "; ".join(problems), figures)
    return CheckResult(name, PASS, f"{ours:.2f} ms", figures)


def _agreement(check: AgreementCheck, shadow: ShadowCounts) -> CheckResult:
    spec = check.agreement
    if shadow.compared == 0:
        return CheckResult("agreement", SKIP, "no shadow comparisons in the window")
    rate = shadow.agreed / shadow.compared
    figures: dict[str, Any] = {
        "agreement": rate,
        "compared": shadow.compared,
        "outputs": {name: diff.to_json() for name, diff in sorted(shadow.outputs.items())},
    }
    problems = []
    if rate < spec.min:
        problems.append(f"agreement {rate:.4f} below min {spec.min}")
    if spec.max_abs_diff is not None:
        worst = max((d.max_abs_diff for d in shadow.outputs.values()), default=0.0)
        figures["max_abs_diff"] = worst
        if worst > spec.max_abs_diff:
            problems.append(f"max abs diff {worst:.6g} above {spec.max_abs_diff}")
    if problems:
        return CheckResult("agreement", FAIL, "; ".join(problems), figures)
    return CheckResult("agreement", PASS, f"agreement {rate:.4f}", figures)
