"""The read-only views the fleet API answers: one node (`fleet nodes`), the deployments'
status (`fleet status`), a rollout's progress, and the routing table the gateway follows.
Each is a function of the `FleetState`; none changes it."""

from __future__ import annotations

import time
from typing import Any

from inferbridge.fleet.errors import NotFound
from inferbridge.fleet.observed import Observed
from inferbridge.fleet.reconciler import rollout_wave_nodes
from inferbridge.fleet.state import FleetState

__all__ = ["node_view", "rollout_view", "routing_view", "status_view"]


def node_view(state: FleetState, name: str) -> dict[str, Any]:
    doc = state.nodes.get(name)
    if doc is None:
        raise NotFound(f"unknown node {name!r}")
    observed = state.observed[name]
    return {
        "name": name,
        "state": "Ready" if observed.ready else "NotReady",
        "labels": doc.get("labels", {}),
        "capacity": doc.get("capacity", {}),
        "server_url": doc.get("server_url", ""),
        "server_grpc": doc.get("server_grpc", ""),
        **({"principal": doc["principal"]} if "principal" in doc else {}),
        "last_heartbeat_s": round(time.monotonic() - observed.last_seen, 3),
        "heartbeat_interval_s": observed.interval_s,
        "server": observed.server,
        "conditions": conditions(state, observed),
        "assigned": state.assignments.get(name, {}),
        "models": {
            m: {"version": o.version, "state": o.state, "reason": o.reason}
            for m, o in sorted(observed.models.items())
        },
        "metrics": observed.metrics,
        "disk": observed.disk,
        "events": observed.events[-10:],
        # The replica its agent talks to ("" while no replica has said yet).
        **({"control_plane": reached_through(state, observed)} if state.identity else {}),
    }


def conditions(state: FleetState, observed: Observed) -> list[dict[str, Any]]:
    """What is wrong with the node beyond NotReady: `ServerDown` (fleet.conditions)."""
    condition = observed.server_watch.condition(time.monotonic(), state.wall_clock())
    return [] if condition is None else [condition]


def reached_through(state: FleetState, observed: Observed) -> str:
    """The replica the node's agent talks to ("" while none has said)."""
    return state.identity if observed.direct else observed.relayed_by


def status_view(state: FleetState) -> dict[str, Any]:
    deployments = []
    for model, spec in sorted(state.deployments.items()):
        status = state.status.get(model)
        entry = {**spec.model_dump(), **(status.as_dict() if status else {"state": "Pending"})}
        rollout = state.rollouts.get(model)
        if rollout is not None:
            entry["rollout"] = rollout_progress(state, rollout)
        deployments.append(entry)
    return {
        "deployments": deployments,
        "nodes": {
            "total": len(state.nodes),
            "ready": sum(1 for o in state.observed.values() if o.ready),
            # Nodes whose agent heartbeats but whose server is down (ServerDown).
            "server_down": sorted(
                n for n, o in state.observed.items() if o.server_watch.down_since is not None
            ),
        },
    }


def rollout_view(state: FleetState, model: str) -> dict[str, Any]:
    rollout = state.rollouts.get(model)
    if rollout is None:
        raise NotFound(f"no rollout of {model!r}")
    return rollout_progress(state, rollout)


def rollout_progress(state: FleetState, rollout: dict[str, Any]) -> dict[str, Any]:
    """A rollout document with which of its nodes are done, pending or failed."""
    model, target = rollout["model"], int(rollout["version"])
    wave = int(rollout["wave"])
    upgraded = set(rollout_wave_nodes(rollout, min(wave, len(rollout["waves"]) - 1)))
    done, pending = [], []
    failed: dict[str, str] = dict(rollout.get("failed_nodes", {}))
    for name in rollout["nodes"]:
        seen = state.observed[name].models.get(model) if name in state.observed else None
        if name in failed:
            continue
        if seen is not None and seen.version == target and seen.state == "FAILED":
            failed[name] = seen.reason
        elif seen is not None and seen.version == target and seen.state == "READY":
            done.append(name)
        elif name in upgraded:
            pending.append(name)
    return {
        "model": model,
        "from_version": rollout["from_version"],
        "version": target,
        "state": rollout["state"],
        "reason": rollout.get("reason", ""),
        "wave": wave + 1,
        "waves": rollout["waves"],
        "health_gate_s": rollout["health_gate_s"],
        "nodes": len(rollout["nodes"]),
        "done": done,
        "pending": pending,
        "failed": failed,
        **({"analysis": rollout["analysis_result"]} if "analysis_result" in rollout else {}),
    }


def routing_view(state: FleetState) -> dict[str, Any]:
    """Which Ready nodes serve which model versions right now (for the gateway): each
    entry has the node's REST `url`, and its `grpc` HOST:PORT when it registered one."""
    models: dict[str, list[dict[str, Any]]] = {}
    for name, observed in sorted(state.observed.items()):
        if not observed.ready or not observed.server_ready:
            continue
        doc = state.nodes.get(name)
        if doc is None:  # a record seen before the node's document
            continue
        address: dict[str, str] = {"url": doc.get("server_url", "")}
        if doc.get("server_grpc"):
            address["grpc"] = doc["server_grpc"]
        for model, seen in sorted(observed.models.items()):
            if seen.state == "READY":
                models.setdefault(model, []).append(
                    {"node": name, "version": seen.version, **address}
                )
    return {"models": models}
