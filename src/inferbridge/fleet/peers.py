"""A replica's side of the replication between control-plane replicas (etcd only; the
loop that drives it is fleet.replication): the records it publishes of the nodes whose
agents talk to it, and the changes it follows from the others — their documents and
their records of the nodes they hear (relayed observations)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inferbridge.fleet.errors import InvalidSpec
from inferbridge.fleet.observed import Observed
from inferbridge.fleet.spec import DeploymentSpec, Manifest
from inferbridge.fleet.state import FleetState

if TYPE_CHECKING:
    from inferbridge.fleet.etcd import Event

__all__ = ["REPUBLISH_S", "apply_events", "heard_directly", "mark_unpublished", "take_published"]

logger = logging.getLogger("inferbridge.fleet.controlplane")

#: How often a replica republishes an unchanged node's record (its figures), seconds.
REPUBLISH_S = 5.0


def heard_directly(state: FleetState, name: str, observed: Observed, changed: bool) -> None:
    """The node's agent talks to this replica: publish its state for the others when it
    changed, when it just moved here, and every `REPUBLISH_S` (fresh figures)."""
    if not state.replicating:
        return
    moved = not observed.direct
    observed.direct, observed.relayed_by = True, ""
    if changed or moved or time.monotonic() - observed.published_at >= REPUBLISH_S:
        state.to_publish.add(name)


def take_published(state: FleetState, published_at: float) -> list[tuple[str, dict[str, Any]]]:
    """The records of the nodes heard here whose state the others have not seen yet
    (`mark_unpublished` puts them back when writing them failed)."""
    now = time.monotonic()
    records = []
    for name in sorted(state.to_publish):
        observed = state.observed.get(name)
        if observed is None or not observed.direct:
            continue
        observed.published_at = now
        records.append((name, observed.record_of(state.identity, published_at)))
    state.to_publish.clear()
    return records


def mark_unpublished(state: FleetState, names: list[str] | None = None) -> None:
    """Publish these nodes (all heard here when None) again at the next round."""
    if names is None:
        names = [n for n, o in state.observed.items() if o.direct]
    state.to_publish.update(names)


def apply_events(
    state: FleetState, events: Sequence[Event], *, leading: bool, snapshot: bool = False
) -> None:
    """Changes another replica made in the store (or all of it, `snapshot`). Nodes and
    the records of what their agents report are taken from anyone; a leader takes
    nothing else (it wrote the rest itself and keeps it in memory)."""
    assignments: dict[str, dict[str, int]] | None = None
    changed_nodes: set[str] = set()
    recorded: set[str] = set()
    for event in events:
        if event.kind == "observed":
            recorded.add(event.key)
            _apply_record(state, event.key, event.doc)
        elif event.kind == "nodes":
            if event.doc is not None:
                _apply_node(state, event.key, event.doc)
        elif leading:
            continue
        elif event.kind == "assignments":
            if assignments is None:
                assignments = dict(state.assignments)  # copied once a batch, not swapped
            if event.doc is None:
                assignments.pop(event.key, None)
            else:
                raw = event.doc.get("models", {})
                assignments[event.key] = {m: int(v) for m, v in raw.items()}
            changed_nodes.add(event.key)
        elif event.kind == "artifacts":
            if event.doc is None:
                state.artifacts.pop(event.key, None)
            else:
                state.artifacts[event.key] = Manifest.model_validate(event.doc)
            changed_nodes.update(state.observed)
        elif event.kind == "deployments":
            if event.doc is None:
                state.deployments.pop(event.key, None)
            else:
                state.deployments[event.key] = DeploymentSpec.model_validate(event.doc)
        elif event.kind == "rollouts":
            if event.doc is None:
                state.rollouts.pop(event.key, None)
            else:
                state.rollouts[event.key] = event.doc
    if snapshot:  # records gone while this replica did not watch
        for name, observed in state.observed.items():
            if observed.relayed_by and name not in recorded:
                _apply_record(state, name, None)
    if assignments is not None:
        state.assignments = assignments
    for name in changed_nodes:
        if state.etags.pop(name, None) is not None or name in state.observed:
            state.wake(name)
    state.dirty.set()


def _apply_node(state: FleetState, name: str, doc: dict[str, Any]) -> None:
    state.nodes[name] = doc
    state.capacities.pop(name, None)
    if name not in state.observed:
        # Registered through another replica: its record tells how it is.
        state.observed[name] = Observed(
            time.monotonic(), float(doc.get("heartbeat_interval_s", 1.0))
        )


def _apply_record(state: FleetState, name: str, record: dict[str, Any] | None) -> None:
    observed = state.observed.get(name)
    if record is None:
        # The relaying replica is gone (its lease expired) or the agent moved: the node
        # gets one liveness window to show up somewhere.
        if observed is not None and observed.relayed_by:
            observed.relayed_by = ""
            observed.last_seen = time.monotonic()
        return
    by = str(record.get("by", ""))
    if by == state.identity:
        return  # its own record, read back
    if observed is None:
        observed = state.observed[name] = Observed(
            time.monotonic(), float(record.get("interval_s", 1.0))
        )
    try:
        changed = observed.take_record(record, by, time.monotonic())
    except InvalidSpec as exc:
        logger.warning("node %s: a malformed record from %s: %s", name, by, exc.message)
        return
    state.set_ready(name, observed, bool(record.get("ready")))
    state.observe_server(name, observed)
    if changed:
        state.dirty.set()
