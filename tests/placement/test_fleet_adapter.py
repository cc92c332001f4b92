"""The engine behind the fleet control plane's PlacementPolicy seam."""

from __future__ import annotations

from inferbridge.fleet.policy import Candidate, PlacementPolicy
from inferbridge.fleet.spec import Accelerator, Capacity, Resources
from inferbridge.placement import Request
from inferbridge.placement.fleet import EnginePlacementPolicy, node_of

GIB = 2**30


def candidate(name: str, gpus: int, allocated_gpu: float = 0.0, cpu: float = 32) -> Candidate:
    return Candidate(
        name=name,
        capacity=Capacity(
            cpu=cpu, memory=128 * GIB, accelerators=[Accelerator(type="A10", count=gpus)]
        ),
        allocated=Resources(cpu=2, memory=8 * GIB),
        gpu_allocated={"A10": allocated_gpu} if allocated_gpu else {},
    )


def test_it_is_a_placement_policy() -> None:
    policy: PlacementPolicy = EnginePlacementPolicy("fgd")
    assert hasattr(policy, "place")


def test_fractions_allocated_are_taken_as_packed_devices() -> None:
    node = node_of(candidate("a", 4, allocated_gpu=1.25))
    assert node.gpu_free == (0, 750, 1000, 1000)
    assert (node.cpu_free_milli, node.memory_free_mib) == (30000, 120 * 1024)


def test_replicas_go_to_distinct_nodes_and_fill_split_gpus_first() -> None:
    candidates = [
        candidate("fresh", 4),
        candidate("split", 4, allocated_gpu=0.5),
        candidate("other", 4),
    ]
    # The arrivals FGD expects: half-GPU replicas and whole-GPU ones.
    workload = [Request.share("s", 1000, 1024, 500), Request.whole("w", 4000, 1024, 1)]
    policy = EnginePlacementPolicy("fgd", workload)
    placement = policy.place(Resources(cpu=1, memory=GIB, gpu=0.5), 2, candidates)
    assert len(set(placement.nodes)) == 2
    assert placement.nodes[0] == "split"
    assert placement.reason == ""


def test_too_few_nodes_says_why() -> None:
    candidates = [candidate("a", 1), candidate("b", 0)]
    placement = EnginePlacementPolicy().place(
        Resources(cpu=1, memory=GIB, gpu=1, gpu_type="A10"), 2, candidates
    )
    assert placement.nodes == ["a"]
    assert "anti-affinity" in placement.reason and "gpu-type" in placement.reason
    assert EnginePlacementPolicy().place(Resources(cpu=1), 1, []).reason
