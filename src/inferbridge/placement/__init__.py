"""Fragmentation-aware placement of tasks and model replicas on heterogeneous GPU/CPU nodes.

The engine filters and scores every node at once (numpy), with the FGD paper's policies
(random, dotprod, gpu-clustering, gpu-packing, best-fit, fgd) and our own. See
docs/placement.md.

    from inferbridge.placement import Node, Placer, Request
    nodes = [Node("n1", cpu_milli=64000, memory_mib=262144, gpus=8, gpu_type="A10")]
    decisions = Placer("fgd").place(nodes, [Request.share("r1", 4000, 16384, gpu_milli=500)])
"""

from inferbridge.placement.fleet import EnginePlacementPolicy
from inferbridge.placement.model import (
    MILLI,
    Decision,
    Node,
    PlacementInputError,
    Request,
    Taint,
    Toleration,
)
from inferbridge.placement.placer import FILTERS, Explanation, PlacementSession, Placer
from inferbridge.placement.policies import policy_names

__all__ = [
    "FILTERS",
    "MILLI",
    "Decision",
    "EnginePlacementPolicy",
    "Explanation",
    "Node",
    "PlacementInputError",
    "PlacementSession",
    "Placer",
    "Request",
    "Taint",
    "Toleration",
    "policy_names",
]
