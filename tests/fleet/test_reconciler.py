"""The control plane's reconciler and placement policy, on plain data."""

from __future__ import annotations

from typing import Any

from inferbridge.fleet.policy import SpreadPolicy
from inferbridge.fleet.reconciler import ModelObservation, NodeState, VersionFigures, reconcile
from inferbridge.fleet.spec import Accelerator, Capacity, DeploymentSpec

_CAP = Capacity(cpu=4, memory=8 * 1024**3)


def _node(
    name: str, *, ready: bool = True, labels: dict[str, str] | None = None, **kw: Any
) -> NodeState:
    return NodeState(name, labels or {"zone": "a"}, kw.pop("capacity", _CAP), ready, True, **kw)


def _spec(**kw: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate({"model": "iris", "version": 1, **kw})


def test_places_replicas_spread_and_sticky() -> None:
    nodes = {n: _node(n) for n in ("a", "b", "c")}
    out = reconcile({"iris": _spec(replicas=2)}, {}, nodes, {}, SpreadPolicy(), 0)
    placed = sorted(n for n, models in out.assignments.items() if "iris" in models)
    assert len(placed) == 2
    assert out.status["iris"].placed == 2 and not out.status["iris"].pending_reason
    # A second pass keeps them where they are.
    again = reconcile({"iris": _spec(replicas=2)}, {}, nodes, out.assignments, SpreadPolicy(), 1)
    assert again.assignments == out.assignments


def test_not_ready_node_keeps_its_models_while_the_replica_moves() -> None:
    nodes = {n: _node(n) for n in ("a", "b", "c")}
    current = {"a": {"iris": 1}, "b": {}, "c": {}}
    nodes["a"] = _node("a", ready=False)
    out = reconcile({"iris": _spec()}, {}, nodes, current, SpreadPolicy(), 0)
    assert out.assignments["a"] == {"iris": 1}  # never told to unload while unreachable
    moved = [n for n in "bc" if "iris" in out.assignments[n]]
    assert len(moved) == 1 and out.status["iris"].placed == 1
    # Back, it is the surplus replica (Ready the shortest time) and drops it.
    nodes["a"] = _node("a", ready_since=10.0)
    back = reconcile({"iris": _spec()}, {}, nodes, out.assignments, SpreadPolicy(), 1)
    assert "iris" not in back.assignments["a"] and "iris" in back.assignments[moved[0]]


def test_all_means_every_matching_node() -> None:
    nodes = {n: _node(n) for n in ("b", "c")}
    nodes["d"] = _node("d", labels={"zone": "b"})
    every = reconcile(
        {"iris": _spec(replicas="all", selector="zone=a")}, {}, nodes, {}, SpreadPolicy(), 0
    )
    assert sorted(n for n, m in every.assignments.items() if "iris" in m) == ["b", "c"]


def test_unsatisfiable_resources_stay_pending_with_a_reason() -> None:
    gpu = Capacity(cpu=4, memory=2**33, accelerators=[Accelerator(type="A100", count=1)])
    nodes = {"a": _node("a", capacity=gpu), "b": _node("b")}
    out = reconcile(
        {"iris": _spec(resources="cpu=500m,gpu=0.25,gpu_type=T4")}, {}, nodes, {}, SpreadPolicy(), 0
    )
    assert out.status["iris"].placed == 0
    assert out.status["iris"].pending_reason == "no node has gpu_type=T4 with 0.25 GPU free"
    # Fractions add up on one device: four quarter-GPU replicas fill the A100, a fifth waits.
    specs = {f"m{i}": _spec(model=f"m{i}", resources="gpu=0.25,gpu_type=A100") for i in range(5)}
    full = reconcile(specs, {}, nodes, {}, SpreadPolicy(), 0)
    assert sum(s.placed for s in full.status.values()) == 4
    assert full.status["m4"].pending_reason == "no node has gpu_type=A100 with 0.25 GPU free"


def test_cpu_capacity_limits_placement() -> None:
    nodes = {"a": _node("a", capacity=Capacity(cpu=1, memory=2**30))}
    specs = {f"m{i}": _spec(model=f"m{i}", resources="cpu=600m") for i in range(2)}
    out = reconcile(specs, {}, nodes, {}, SpreadPolicy(), 0)
    assert out.status["m0"].placed == 1
    assert out.status["m1"].pending_reason == "no node has cpu 600m free"


def _rollout(**kw: Any) -> dict[str, Any]:
    return {
        "model": "iris",
        "version": 2,
        "from_version": 1,
        "waves": [50.0, 100.0],
        "health_gate_s": 5.0,
        "wave_timeout_s": 60.0,
        "nodes": ["a", "b"],
        "wave": 0,
        "wave_started": 0.0,
        "healthy_since": {},
        "state": "Running",
        "reason": "",
        **kw,
    }


def test_rollout_waves_advance_after_the_health_gate_and_promote() -> None:
    current = {"a": {"iris": 1}, "b": {"iris": 1}}
    spec = {"iris": _spec(replicas=2)}
    nodes = {n: _node(n, models={"iris": ModelObservation(1, "READY")}) for n in "ab"}
    first = reconcile(spec, {"iris": _rollout()}, nodes, current, SpreadPolicy(), 1)
    assert first.assignments == {"a": {"iris": 2}, "b": {"iris": 1}}
    nodes["a"] = _node("a", models={"iris": ModelObservation(2, "READY")})
    seen = reconcile(spec, {"iris": _rollout()}, nodes, first.assignments, SpreadPolicy(), 2)
    rollout = seen.rollouts["iris"]
    assert rollout["wave"] == 0 and rollout["healthy_since"] == {"a": 2}
    later = reconcile(spec, {"iris": rollout}, nodes, seen.assignments, SpreadPolicy(), 7.5)
    assert later.rollouts["iris"]["wave"] == 1
    assert later.assignments == {"a": {"iris": 2}, "b": {"iris": 2}}
    nodes["b"] = _node("b", models={"iris": ModelObservation(2, "READY")})
    step = reconcile(
        spec, {"iris": later.rollouts["iris"]}, nodes, later.assignments, SpreadPolicy(), 8
    )
    done = reconcile(
        spec, {"iris": step.rollouts["iris"]}, nodes, step.assignments, SpreadPolicy(), 14
    )
    assert done.rollouts["iris"]["state"] == "Succeeded"
    assert done.promoted["iris"].version == 2


def test_failed_wave_rolls_every_node_back() -> None:
    current = {"a": {"iris": 2}, "b": {"iris": 1}}
    spec = {"iris": _spec(replicas=2)}
    nodes = {
        "a": _node("a", models={"iris": ModelObservation(2, "FAILED", "digest mismatch")}),
        "b": _node("b", models={"iris": ModelObservation(1, "READY")}),
    }
    out = reconcile(spec, {"iris": _rollout()}, nodes, current, SpreadPolicy(), 1)
    assert out.rollouts["iris"]["state"] == "RolledBack"
    assert "node a: version 2 failed: digest mismatch" in out.rollouts["iris"]["reason"]
    assert out.assignments == {"a": {"iris": 1}, "b": {"iris": 1}}
    assert not out.promoted


def test_wave_timeout_rolls_back() -> None:
    current = {"a": {"iris": 2}, "b": {"iris": 1}}
    nodes = {n: _node(n, models={"iris": ModelObservation(1, "READY")}) for n in "ab"}
    out = reconcile(
        {"iris": _spec(replicas=2)}, {"iris": _rollout()}, nodes, current, SpreadPolicy(), 100
    )
    assert out.rollouts["iris"]["state"] == "RolledBack"
    assert "not ready on version 2 within 60 s" in out.rollouts["iris"]["reason"]


def test_the_placement_engine_stands_behind_the_same_seam() -> None:
    from inferbridge.placement.fleet import EnginePlacementPolicy

    gpu = Capacity(cpu=4, memory=2**33, accelerators=[Accelerator(type="A100", count=1)])
    nodes = {"a": _node("a", capacity=gpu), "b": _node("b")}
    engine = EnginePlacementPolicy("fgd")
    out = reconcile({"iris": _spec(replicas=2)}, {}, nodes, {}, engine, 0)
    assert sorted(n for n, m in out.assignments.items() if "iris" in m) == ["a", "b"]
    specs = {f"m{i}": _spec(model=f"m{i}", resources="gpu=0.25,gpu_type=A100") for i in range(5)}
    full = reconcile(specs, {}, nodes, {}, engine, 0)
    assert sum(s.placed for s in full.status.values()) == 4
    assert full.status["m4"].placed == 0 and full.status["m4"].pending_reason


def test_reconcile_steps_pauses_over_a_large_fleet_and_ends_as_one_pass_does() -> None:
    from inferbridge.fleet.reconciler import CHUNK, reconcile_steps

    nodes = {f"n{i:04d}": _node(f"n{i:04d}") for i in range(1000)}
    deployments = {"iris": _spec(replicas="all"), "ten": _spec(model="ten", replicas=10)}
    whole = reconcile(deployments, {}, nodes, {}, SpreadPolicy(), 0)
    steps = reconcile_steps(deployments, {}, nodes, {}, SpreadPolicy(), 0)
    pauses = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            outcome = done.value
            break
        pauses += 1
    assert outcome.assignments == whole.assignments
    assert {m: s.as_dict() for m, s in outcome.status.items()} == {
        m: s.as_dict() for m, s in whole.status.items()
    }
    # A model of 1,000 replicas is walked in chunks, not in one go.
    assert pauses >= 2 * 1000 // CHUNK
    assert sum(1 for models in outcome.assignments.values() if "ten" in models) == 10


def _analysed_rollout(**kw: Any) -> dict[str, Any]:
    return _rollout(
        waves=[100.0],
        analysis={"min_requests": 20, "error_rate": {"max": 0.05}, "latency_mean": None},
        **kw,
    )


def _serving(version: int, success: int, fail: int, mean_ms: float = 2.0) -> NodeState:
    figures = VersionFigures(version, success, int(success * mean_ms * 1e6), fail)
    models = {"iris": ModelObservation(version, "READY")}
    return _node("a", models=models, figures={"iris": figures})


def _step(rollout: dict[str, Any], node: NodeState, now: float) -> dict[str, Any]:
    out = reconcile(
        {"iris": _spec(replicas=1)},
        {"iris": rollout},
        {"a": node},
        {"a": {"iris": 2}},
        SpreadPolicy(),
        now,
    )
    return out.rollouts.get("iris", rollout)


def test_wave_analysis_rolls_back_a_version_that_fails_too_many_requests() -> None:
    rollout = _analysed_rollout(nodes=["a"])
    # The gate starts from the counters the node reports when it becomes healthy.
    rollout = _step(rollout, _serving(2, success=100, fail=0), 1)
    assert rollout["gate_start"]["a"] == {"success": 100, "success_ns": 200_000_000, "fail": 0}
    waiting = _step(rollout, _serving(2, success=110, fail=2), 2)
    assert waiting["state"] == "Running"
    assert waiting["analysis_result"]["verdict"] == "inconclusive"
    failed = _step(waiting, _serving(2, success=115, fail=10), 3)
    assert failed["state"] == "RolledBack"
    assert (
        "analysis failed: error rate 0.400 > 0.05 over 25 request(s) of version 2"
        in (failed["reason"])
    )
    assert failed["failed_nodes"] == {"a": "analysis: 10/25 failed"}


def test_wave_analysis_passes_a_healthy_version_and_waits_for_enough_requests() -> None:
    rollout = _step(_analysed_rollout(nodes=["a"]), _serving(2, 0, 0), 1)
    # The gate (5 s) is over, but 5 requests are too few to judge: the wave waits.
    rollout = _step(rollout, _serving(2, success=5, fail=0), 7)
    assert rollout["state"] == "Running"
    assert rollout["analysis_result"]["why"] == "5 of 20 requests so far"
    done = _step(rollout, _serving(2, success=60, fail=1), 8)
    assert done["state"] == "Succeeded"
    assert done["analysis_result"]["verdict"] == "pass"


def test_wave_analysis_latency_ratio_against_the_old_version_on_the_same_node() -> None:
    rollout = _rollout(
        waves=[100.0],
        nodes=["a"],
        analysis={
            "min_requests": 10,
            "error_rate": None,
            "latency_mean": {"max_ratio_to_baseline": 1.5},
        },
    )
    old = _node(
        "a",
        models={"iris": ModelObservation(1, "READY")},
        figures={"iris": VersionFigures(1, 100, int(100 * 2e6), 0)},
    )
    rollout = _step(rollout, old, 0.5)
    assert rollout["baseline_ms"] == {"a": 2.0}
    rollout = _step(rollout, _serving(2, 0, 0), 1)
    slow = _step(rollout, _serving(2, success=20, fail=0, mean_ms=8.0), 2)
    assert slow["state"] == "RolledBack"
    assert "is 4.00x version 1's 2.0 ms (at most 1.5x)" in slow["reason"]


def test_a_too_quiet_wave_is_rolled_back_at_its_timeout_saying_why() -> None:
    rollout = _step(_analysed_rollout(nodes=["a"], wave_timeout_s=10.0), _serving(2, 0, 0), 1)
    late = _step(rollout, _serving(2, success=3, fail=0), 20)
    assert late["state"] == "RolledBack"
    assert late["reason"] == "wave 1: analysis: 3 of 20 requests so far within 10 s"
