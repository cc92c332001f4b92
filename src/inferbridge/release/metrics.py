"""The rollout families of `/metrics`, built at scrape time from the controller's reports."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from inferbridge.release.controller import RolloutReport

__all__ = ["PHASES", "rollout_families"]

#: Values of the `phase` label of inferbridge_rollout_phase.
PHASES = ("progressing", "paused", "aborted", "promoted")


def rollout_families(reports: Iterable[RolloutReport]) -> list[Metric]:
    step = GaugeMetricFamily(
        "inferbridge_rollout_step", "Index of the rollout's current step.", labels=("model",)
    )
    phase = GaugeMetricFamily(
        "inferbridge_rollout_phase",
        "1 for the rollout's phase, 0 for the others.",
        labels=("model", "phase"),
    )
    weight = GaugeMetricFamily(
        "inferbridge_rollout_weight",
        "Percent of the model's unversioned requests routed to each version.",
        labels=("model", "version"),
    )
    verdicts = CounterMetricFamily(
        "inferbridge_rollout_analysis",
        "Analysis windows judged, by verdict (pass, fail, inconclusive).",
        labels=("model", "verdict"),
    )
    shadow = CounterMetricFamily(
        "inferbridge_shadow_requests",
        "Shadow copies: sent to the candidate, dropped (too many in flight), failed.",
        labels=("model", "outcome"),
    )
    comparisons = CounterMetricFamily(
        "inferbridge_shadow_comparisons",
        "Shadow answers compared with the primary's, per output: agreed or disagreed.",
        labels=("model", "output", "result"),
    )
    max_diff = GaugeMetricFamily(
        "inferbridge_shadow_max_abs_diff",
        "Largest absolute difference of a float output seen in the shadow comparisons.",
        labels=("model", "output"),
    )
    for report in reports:
        model = report.model
        step.add_metric([model], report.step)
        for name in PHASES:
            phase.add_metric([model, name], 1.0 if name == report.phase else 0.0)
        for version, share in sorted(report.weights.items()):
            weight.add_metric([model, str(version)], share)
        for verdict, count in sorted(report.verdicts.items()):
            verdicts.add_metric([model, verdict], count)
        counts = report.shadow
        shadow.add_metric([model, "sent"], counts.sent)
        shadow.add_metric([model, "dropped"], counts.dropped)
        shadow.add_metric([model, "failed"], counts.failed)
        for output, diff in sorted(counts.outputs.items()):
            comparisons.add_metric([model, output, "agreed"], diff.agreed)
            comparisons.add_metric([model, output, "disagreed"], diff.compared - diff.agreed)
            max_diff.add_metric([model, output], diff.max_abs_diff)
    return [step, phase, weight, verdicts, shadow, comparisons, max_diff]
