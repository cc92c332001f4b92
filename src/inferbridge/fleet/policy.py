"""Where replicas go: the placement policy seam and a simple capacity-aware policy.

The control plane asks a `PlacementPolicy` for `count` more nodes for one replica demand,
given the candidate nodes (already filtered by label selector and readiness) with what is
allocated on each. The simple policy here filters by free capacity and spreads by the
least allocated share; the placement engine (`inferbridge.placement`) can stand behind
the same one-method interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from inferbridge.fleet.spec import Capacity, Resources, format_cpu, format_memory

__all__ = ["Candidate", "Placement", "PlacementPolicy", "SpreadPolicy"]

_EPSILON = 1e-9


@dataclass(frozen=True)
class Candidate:
    """A node that may take a replica: its capacity and what is allocated on it."""

    name: str
    capacity: Capacity
    allocated: Resources
    #: GPUs allocated per accelerator type (fractions add up).
    gpu_allocated: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    """The nodes chosen (best first) and, when fewer than asked, why."""

    nodes: list[str]
    reason: str = ""


class PlacementPolicy(Protocol):
    def place(self, demand: Resources, count: int, candidates: Sequence[Candidate]) -> Placement:
        """Choose up to `count` distinct nodes for replicas needing `demand` each."""
        ...


def _gpu_free(node: Candidate, gpu_type: str | None) -> float:
    free = 0.0
    for accelerator in node.capacity.accelerators:
        if gpu_type is None or accelerator.type == gpu_type:
            free += accelerator.count - node.gpu_allocated.get(accelerator.type, 0.0)
    return free


def _shortfall(demand: Resources, node: Candidate) -> str | None:
    """Which resource `node` lacks for `demand`, as it reads in a reason, or None."""
    if demand.cpu > node.capacity.cpu - node.allocated.cpu + _EPSILON:
        return f"cpu {format_cpu(demand.cpu)} free"
    if demand.memory > node.capacity.memory - node.allocated.memory:
        return f"memory {format_memory(demand.memory)} free"
    if demand.gpu > 0 and demand.gpu > _gpu_free(node, demand.gpu_type) + _EPSILON:
        kind = f"gpu_type={demand.gpu_type} with " if demand.gpu_type else ""
        return f"{kind}{demand.gpu:g} GPU free"
    return None


class SpreadPolicy:
    """Fit first, then the node with the smallest allocated share (spreads replicas)."""

    def place(self, demand: Resources, count: int, candidates: Sequence[Candidate]) -> Placement:
        fitting = [c for c in candidates if _shortfall(demand, c) is None]
        fitting.sort(key=lambda c: (_share(c), c.name))
        chosen = [c.name for c in fitting[:count]]
        if len(chosen) == count:
            return Placement(chosen)
        if not candidates:
            return Placement(chosen, "no Ready node matches the selector")
        lacking = sorted(
            {s for c in candidates if c.name not in chosen and (s := _shortfall(demand, c))}
        )
        if not lacking:
            return Placement(chosen, f"only {len(candidates)} node(s) match the selector")
        prefix = "no node has" if not chosen else "no further node has"
        return Placement(chosen, f"{prefix} {' / '.join(lacking)}")


def _share(node: Candidate) -> float:
    shares = []
    if node.capacity.cpu:
        shares.append(node.allocated.cpu / node.capacity.cpu)
    if node.capacity.memory:
        shares.append(node.allocated.memory / node.capacity.memory)
    return max(shares, default=0.0)
