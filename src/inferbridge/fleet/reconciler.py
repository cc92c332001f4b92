"""Desired deployments → which node runs which model version: one pure, level-triggered
pass.

`reconcile` compares what is declared (deployments, rollouts) with what is observed (nodes,
their readiness and reported model states) and the current assignments, and returns the
new assignments, each deployment's status and the rollouts' next state. It does no I/O,
so the control plane can run it on every change and tests can run it on plain data.
Assignments are sticky: a replica stays where it is while its node is selected; a NotReady
node keeps its assignments (and is not counted) until it is back or deselected.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from inferbridge.fleet.policy import Candidate, PlacementPolicy
from inferbridge.fleet.spec import Capacity, DeploymentSpec, Resources

__all__ = [
    "DeploymentStatus",
    "ModelObservation",
    "NodeState",
    "VersionFigures",
    "Outcome",
    "reconcile",
    "reconcile_steps",
    "rollout_wave_nodes",
]

#: Nodes handled between two pauses of `reconcile_steps`.
CHUNK = 200

#: {node: {model: version}}
Assignments = dict[str, dict[str, int]]


@dataclass(frozen=True)
class ModelObservation:
    """One model as an agent reports it."""

    version: int
    state: str  # DOWNLOADING, LOADING, READY, FAILED, UNLOADING
    reason: str = ""

    def as_record(self) -> dict[str, Any]:
        """As an agent's heartbeat lists it (without the model's name)."""
        return {"version": self.version, "state": self.state, "reason": self.reason}


@dataclass(frozen=True)
class VersionFigures:
    """A model version's request counters on one node since its server loaded it (the
    `inference_stats` of /v2/models/{m}/versions/{v}/stats, which the agent reports)."""

    version: int
    success: int
    success_ns: int
    fail: int

    def to_json(self) -> dict[str, int]:
        return {"success": self.success, "success_ns": self.success_ns, "fail": self.fail}


@dataclass(frozen=True)
class NodeState:
    """A node as the reconciler sees it."""

    name: str
    labels: Mapping[str, str]
    capacity: Capacity
    ready: bool
    server_ready: bool = False
    models: Mapping[str, ModelObservation] = field(default_factory=dict)
    #: When the node last became Ready (any clock; only the order matters).
    ready_since: float = 0.0
    #: Per model: the reported version's request counters, when the agent sends them.
    figures: Mapping[str, VersionFigures] = field(default_factory=dict)


@dataclass
class DeploymentStatus:
    model: str
    version: int
    wanted: int
    placed: int
    ready: int
    pending_reason: str = ""
    failures: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "wanted": self.wanted,
            "placed": self.placed,
            "ready": self.ready,
            "state": "Ready" if self.ready >= self.wanted and self.wanted else "Pending",
            "pending_reason": self.pending_reason,
            "failures": self.failures,
        }


@dataclass
class Outcome:
    assignments: Assignments
    status: dict[str, DeploymentStatus]
    #: Rollouts whose document changed, by model.
    rollouts: dict[str, dict[str, Any]]
    #: Deployments whose version a finished rollout moved on, by model.
    promoted: dict[str, DeploymentSpec]


def rollout_wave_nodes(rollout: Mapping[str, Any], wave: int) -> list[str]:
    """The nodes that run the new version once wave `wave` (0-based) has started."""
    nodes: list[str] = list(rollout["nodes"])
    percent = float(rollout["waves"][wave])
    return nodes[: max(1, math.ceil(len(nodes) * percent / 100))]


def _selected(node: NodeState, selector: Mapping[str, str]) -> bool:
    return all(node.labels.get(k) == v for k, v in selector.items())


def _add(total: Resources, extra: Resources) -> Resources:
    return Resources(
        cpu=total.cpu + extra.cpu,
        memory=total.memory + extra.memory,
        gpu=total.gpu + extra.gpu,
        gpu_type=None,
    )


class _Allocation:
    """What is allocated per node as replicas are kept and placed."""

    def __init__(self, nodes: Mapping[str, NodeState]) -> None:
        self._nodes = nodes
        self.total: dict[str, Resources] = {n: Resources() for n in nodes}
        self.gpus: dict[str, dict[str, float]] = {n: {} for n in nodes}

    def take(self, node: str, demand: Resources) -> None:
        self.total[node] = _add(self.total[node], demand)
        if demand.gpu:
            gpu_type = demand.gpu_type or _first_gpu_type(self._nodes[node].capacity)
            if gpu_type is not None:
                self.gpus[node][gpu_type] = self.gpus[node].get(gpu_type, 0.0) + demand.gpu

    def candidate(self, node: NodeState) -> Candidate:
        return Candidate(
            node.name, node.capacity, self.total[node.name], dict(self.gpus[node.name])
        )


def _first_gpu_type(capacity: Capacity) -> str | None:
    return next((a.type for a in capacity.accelerators if a.count > 0), None)


def _step_rollout(
    rollout: dict[str, Any],
    nodes: Mapping[str, NodeState],
    hosting: set[str],
    now: float,
) -> dict[str, Any]:
    """Advance a running rollout by what its current wave's nodes report."""
    if rollout.get("state") != "Running":
        return rollout
    model, target, wave = rollout["model"], int(rollout["version"]), int(rollout["wave"])
    healthy: dict[str, float] = dict(rollout.get("healthy_since", {}))
    wave_nodes = [n for n in rollout_wave_nodes(rollout, wave) if n in hosting]
    failure = ""
    failed_nodes: dict[str, str] = {}
    for name in wave_nodes:
        node = nodes.get(name)
        seen = node.models.get(model) if node is not None else None
        if node is None or not node.ready:
            failure = f"node {name} went NotReady during wave {wave + 1}"
            failed_nodes[name] = "NotReady"
            break
        if seen is not None and seen.version == target and seen.state == "FAILED":
            failure = f"node {name}: version {target} failed: {seen.reason}"
            failed_nodes[name] = seen.reason
            break
        if (
            seen is not None
            and seen.version == target
            and seen.state == "READY"
            and node.server_ready
        ):
            healthy.setdefault(name, now)
        else:
            healthy.pop(name, None)
    updated = {**rollout, "healthy_since": healthy}
    gate = float(rollout["health_gate_s"])
    gate_passed = all(name in healthy and now - healthy[name] >= gate for name in wave_nodes)
    analysis = rollout.get("analysis")
    if analysis and not failure:
        verdict = _judge_wave(rollout, analysis, nodes, wave_nodes, healthy)
        updated = {**updated, **verdict.document}
        if verdict.failure:
            failure, failed_nodes = verdict.failure, verdict.failed_nodes
        elif not verdict.enough:
            gate_passed = False  # too few requests yet: the wave waits (up to its timeout)
    if failure:
        return {
            **updated,
            "state": "RolledBack",
            "reason": failure,
            "failed_nodes": failed_nodes,
            "finished": now,
        }
    if gate_passed:
        if wave + 1 >= len(rollout["waves"]):
            return {**updated, "state": "Succeeded", "reason": "", "finished": now}
        return {**updated, "wave": wave + 1, "wave_started": now}
    if now - float(rollout["wave_started"]) > gate + float(rollout["wave_timeout_s"]):
        late = sorted(n for n in wave_nodes if n not in healthy)
        if not late and analysis:
            judged = updated.get("analysis_result", {})
            return {
                **updated,
                "state": "RolledBack",
                "reason": f"wave {wave + 1}: analysis: {judged.get('why', 'no figures')} "
                f"within {rollout['wave_timeout_s']:g} s",
                "failed_nodes": {n: "too few requests to judge" for n in wave_nodes},
                "finished": now,
            }
        return {
            **updated,
            "state": "RolledBack",
            "reason": f"wave {wave + 1}: node(s) {', '.join(late)} not ready on version "
            f"{target} within {rollout['wave_timeout_s']:g} s",
            "failed_nodes": {n: "not ready in time" for n in late},
            "finished": now,
        }
    return updated


@dataclass
class _Verdict:
    document: dict[str, Any]
    enough: bool
    failure: str = ""
    failed_nodes: dict[str, str] = field(default_factory=dict)


def _judge_wave(
    rollout: Mapping[str, Any],
    analysis: Mapping[str, Any],
    nodes: Mapping[str, NodeState],
    wave_nodes: list[str],
    healthy: Mapping[str, float],
) -> _Verdict:
    """The wave's in-server analysis: each node's new-version counters since it became
    healthy, summed over the wave, against the rollout's thresholds. The counters at that
    moment (`gate_start`) and the old version's mean latency per node (`baseline_ms`,
    taken while the node still ran it) live in the rollout document."""
    model, target = rollout["model"], int(rollout["version"])
    source = int(rollout["from_version"])
    starts: dict[str, dict[str, int]] = dict(rollout.get("gate_start", {}))
    baseline: dict[str, float] = dict(rollout.get("baseline_ms", {}))
    for name in rollout["nodes"]:
        node = nodes.get(name)
        figures = node.figures.get(model) if node is not None else None
        if figures is not None and figures.version == source and figures.success:
            baseline[name] = figures.success_ns / figures.success / 1e6
    requests = fails = success = success_ns = 0
    per_node: dict[str, str] = {}
    for name in wave_nodes:
        node = nodes.get(name)
        figures = node.figures.get(model) if node is not None else None
        if name not in healthy or figures is None or figures.version != target:
            starts.pop(name, None)
            continue
        start = starts.get(name)
        if start is None or figures.success < start["success"] or figures.fail < start["fail"]:
            start = starts[name] = figures.to_json()  # the gate starts (or the server restarted)
        d_success = figures.success - start["success"]
        d_fail = figures.fail - start["fail"]
        requests += d_success + d_fail
        fails += d_fail
        success += d_success
        success_ns += figures.success_ns - start["success_ns"]
        per_node[name] = f"{d_fail}/{d_success + d_fail} failed"
    spec_min = int(analysis.get("min_requests", 20))
    result: dict[str, Any] = {"requests": requests, "failed": fails, "min_requests": spec_min}
    document: dict[str, Any] = {"gate_start": starts, "baseline_ms": baseline}
    if requests < spec_min:
        result |= {"verdict": "inconclusive", "why": f"{requests} of {spec_min} requests so far"}
        return _Verdict({**document, "analysis_result": result}, enough=False)
    problems = []
    error_rate = fails / requests
    result["error_rate"] = round(error_rate, 4)
    limit = (analysis.get("error_rate") or {}).get("max")
    if limit is not None and error_rate > float(limit):
        problems.append(
            f"error rate {error_rate:.3f} > {float(limit):g} over {requests} request(s) of "
            f"version {target}"
        )
    latency = analysis.get("latency_mean") or {}
    if latency and success:
        mean_ms = success_ns / success / 1e6
        result["latency_mean_ms"] = round(mean_ms, 3)
        known = [baseline[n] for n in per_node if n in baseline]
        if latency.get("max_ms") is not None and mean_ms > float(latency["max_ms"]):
            problems.append(f"mean latency {mean_ms:.1f} ms > {float(latency['max_ms']):g} ms")
        ratio_limit = latency.get("max_ratio_to_baseline")
        if ratio_limit is not None and known:
            reference = sum(known) / len(known)
            ratio = mean_ms / reference if reference > 0 else 0.0
            result["latency_ratio"] = round(ratio, 3)
            if ratio > float(ratio_limit):
                problems.append(
                    f"mean latency {mean_ms:.1f} ms is {ratio:.2f}x version {source}'s "
                    f"{reference:.1f} ms (at most {float(ratio_limit):g}x)"
                )
    if problems:
        why = "; ".join(problems)
        result |= {"verdict": "fail", "why": why}
        wave = int(rollout["wave"]) + 1
        nodes_said = ", ".join(f"{n}: {v}" for n, v in sorted(per_node.items()))
        return _Verdict(
            {**document, "analysis_result": result},
            enough=True,
            failure=f"wave {wave}: analysis failed: {why} ({nodes_said})",
            failed_nodes={n: f"analysis: {v}" for n, v in per_node.items()},
        )
    result |= {"verdict": "pass", "why": f"{requests} request(s), checks passed"}
    return _Verdict({**document, "analysis_result": result}, enough=True)


def reconcile(
    deployments: Mapping[str, DeploymentSpec],
    rollouts: Mapping[str, dict[str, Any]],
    nodes: Mapping[str, NodeState],
    current: Mapping[str, Mapping[str, int]],
    policy: PlacementPolicy,
    now: float,
) -> Outcome:
    """One reconciliation pass (see the module's docstring), start to end."""
    steps = reconcile_steps(deployments, rollouts, nodes, current, policy, now)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            outcome: Outcome = done.value
            return outcome


def reconcile_steps(
    deployments: Mapping[str, DeploymentSpec],
    rollouts: Mapping[str, dict[str, Any]],
    nodes: Mapping[str, NodeState],
    current: Mapping[str, Mapping[str, int]],
    policy: PlacementPolicy,
    now: float,
) -> Generator[None, None, Outcome]:
    """The same pass, pausing (a bare `yield`) after every `CHUNK` nodes or so of work,
    so that an event loop can run other callbacks in between: over a thousand nodes a
    pass takes 5-30 ms, which would hold every heartbeat queued behind it. The inputs must
    not change while it runs; the `Outcome` is the generator's return value."""
    hosts: dict[str, list[str]] = {model: [] for model in deployments}
    for node_name, models in sorted(current.items()):
        for model in models:
            if model in hosts:
                hosts[model].append(node_name)
    yield

    # Step the rollouts first: their state decides which version each node gets.
    changed_rollouts: dict[str, dict[str, Any]] = {}
    promoted: dict[str, DeploymentSpec] = {}
    for model, current_rollout in rollouts.items():
        if model not in deployments:
            continue
        stepped = _step_rollout(current_rollout, nodes, set(hosts[model]), now)
        if stepped != current_rollout:
            changed_rollouts[model] = stepped
        if stepped.get("state") == "Succeeded" and deployments[model].version != stepped["version"]:
            promoted[model] = deployments[model].model_copy(update={"version": stepped["version"]})
    effective = {**deployments, **promoted}
    active = {**rollouts, **changed_rollouts}

    allocation = _Allocation(nodes)
    kept: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
    wanted: dict[str, int] = {}
    for model, spec in sorted(effective.items()):
        yield
        selected = {n for n in nodes if _selected(nodes[n], spec.selector)}
        eligible = {n for n in selected if nodes[n].ready}
        wanted[model] = len(eligible) if spec.replicas == "all" else int(spec.replicas)
        # Surplus replicas (a node rejoined after its replica was placed elsewhere) go
        # from the nodes Ready the shortest time.
        ready_hosts = sorted(
            (n for n in hosts[model] if n in eligible), key=lambda n: (nodes[n].ready_since, n)
        )
        kept[model] = ready_hosts[: wanted[model]]
        # A NotReady node keeps what it has: it is never told to unload because it was
        # unreachable. Its replicas do not count, so they are placed elsewhere meanwhile.
        held[model] = [n for n in hosts[model] if n in selected and not nodes[n].ready]
        for index, name in enumerate(kept[model] + held[model]):
            if index and index % CHUNK == 0:
                yield
            allocation.take(name, spec.resources)

    status: dict[str, DeploymentStatus] = {}
    placed: dict[str, list[str]] = {}
    for model, spec in sorted(effective.items()):
        yield
        chosen = list(kept[model])
        reason = ""
        missing = wanted[model] - len(chosen)
        if missing > 0:
            taken = set(chosen) | set(held[model])
            candidates = [
                allocation.candidate(nodes[n])
                for n in sorted(nodes)
                if nodes[n].ready and n not in taken and _selected(nodes[n], spec.selector)
            ]
            placement = policy.place(spec.resources, missing, candidates)
            for name in placement.nodes:
                allocation.take(name, spec.resources)
            chosen.extend(placement.nodes)
            reason = placement.reason
        elif wanted[model] == 0:
            reason = "no Ready node matches the selector"
        placed[model] = chosen
        status[model] = DeploymentStatus(model, spec.version, wanted[model], len(chosen), 0, reason)

    assignments: Assignments = {name: {} for name in nodes}
    for model, chosen in placed.items():
        yield
        spec = effective[model]
        rollout = active.get(model)
        upgraded: set[str] = set()
        if rollout is not None and rollout.get("state") == "Running":
            upgraded = set(rollout_wave_nodes(rollout, int(rollout["wave"])))
        for name in held[model]:
            previous = current.get(name, {}).get(model, spec.version)
            assignments[name][model] = previous
        for index, name in enumerate(chosen):
            if index and index % CHUNK == 0:
                yield
            version = int(rollout["version"]) if rollout and name in upgraded else spec.version
            assignments[name][model] = version
            seen = nodes[name].models.get(model)
            if seen is not None and seen.version == version:
                if seen.state == "READY":
                    status[model].ready += 1
                elif seen.state == "FAILED":
                    status[model].failures[name] = seen.reason
    return Outcome(assignments, status, changed_rollouts, promoted)
