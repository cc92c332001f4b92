"""The placement engine behind the fleet control plane's `PlacementPolicy` seam.

`inferbridge.fleet.policy.PlacementPolicy` asks for `count` distinct nodes for replicas
needing `demand` each, given candidate nodes with what is allocated on them.
`EnginePlacementPolicy` answers with a policy of this package (FGD by default), the
replicas of one call kept on distinct nodes by anti-affinity.

Translation: CPU cores to milli-cores, memory bytes to MiB; a node's GPUs are its first
accelerator type (`Capacity.accelerators`; other types on the same node are ignored); the
fleet tracks GPUs allocated per type as a sum of fractions, so the devices are assumed
packed (whole GPUs used first, the remainder on one GPU). A demand of `gpu < 1` is a
share of one GPU; `gpu >= 1` asks for whole GPUs (rounded up).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from inferbridge.placement.model import MILLI, Node, Request
from inferbridge.placement.placer import Placer

if TYPE_CHECKING:
    from inferbridge.fleet.policy import Candidate, Placement
    from inferbridge.fleet.spec import Resources

__all__ = ["EnginePlacementPolicy", "node_of", "request_of"]

MIB = 2**20


def node_of(candidate: Candidate) -> Node:
    capacity = candidate.capacity
    cpu = round(capacity.cpu * 1000)
    memory = capacity.memory // MIB
    accelerators = [a for a in capacity.accelerators if a.count > 0]
    gpus, gpu_type, gpu_free = 0, "", None
    if accelerators:
        gpus, gpu_type = accelerators[0].count, accelerators[0].type
        used = round(candidate.gpu_allocated.get(gpu_type, 0.0) * MILLI)
        free = []
        for _ in range(gpus):
            take = min(used, MILLI)
            free.append(MILLI - take)
            used -= take
        gpu_free = tuple(free)
    allocated = candidate.allocated
    return Node(
        name=candidate.name,
        cpu_milli=cpu,
        memory_mib=memory,
        gpus=gpus,
        gpu_type=gpu_type,
        gpu_free=gpu_free,
        cpu_free_milli=max(0, min(cpu, cpu - round(allocated.cpu * 1000))),
        memory_free_mib=max(0, min(memory, memory - -(-allocated.memory // MIB))),
    )


def request_of(demand: Resources, name: str, deployment: str) -> Request:
    cpu = round(demand.cpu * 1000)
    memory = -(-demand.memory // MIB)
    types = (demand.gpu_type,) if demand.gpu_type else ()
    common = {"deployment": deployment, "anti_affinity": True}
    if demand.gpu <= 0:
        return Request(name, cpu, memory, **common)  # type: ignore[arg-type]
    if demand.gpu < 1:
        milli = max(1, round(demand.gpu * MILLI))
        return Request(name, cpu, memory, 1, milli, types, **common)  # type: ignore[arg-type]
    return Request(name, cpu, memory, math.ceil(demand.gpu), MILLI, types, **common)  # type: ignore[arg-type]


class EnginePlacementPolicy:
    """A `PlacementPolicy` (see `inferbridge.fleet.policy`) backed by the placement engine."""

    def __init__(self, policy: str = "fgd", workload: Sequence[Request] | None = None) -> None:
        self.placer = Placer(policy, workload)

    def place(self, demand: Resources, count: int, candidates: Sequence[Candidate]) -> Placement:
        from inferbridge.fleet.policy import Placement

        if not candidates:
            return Placement([], "no Ready node matches the selector")
        requests = [request_of(demand, f"replica-{i}", "replicas") for i in range(count)]
        decisions = self.placer.place([node_of(c) for c in candidates], requests)
        chosen = [d.node for d in decisions if d.node is not None]
        if len(chosen) == count:
            return Placement(chosen)
        first_unplaced = next(d for d in decisions if d.node is None)
        return Placement(chosen, first_unplaced.reason().split(": ", 1)[-1])
