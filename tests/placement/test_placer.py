"""The public API: batches, unplaced reasons, labels, taints, anti-affinity, explain."""

from __future__ import annotations

import pytest

from inferbridge.placement import (
    FILTERS,
    Node,
    PlacementInputError,
    Placer,
    Request,
    Taint,
    Toleration,
)


def cluster() -> list[Node]:
    return [
        Node("gpu-a", 64000, 262144, 8, "A10", labels={"zone": "a"}),
        Node("gpu-b", 64000, 262144, 8, "A10", labels={"zone": "b"}),
        Node(
            "t4", 32000, 131072, 2, "T4", labels={"zone": "a"}, taints=(Taint("dedicated", "ml"),)
        ),
        Node("cpu", 96000, 393216, 0, labels={"zone": "b"}),
    ]


def test_a_request_that_fits_nowhere_comes_back_with_reasons_per_filter() -> None:
    request = Request.whole("huge", 1000, 1024, 8, gpu_types=("T4", "A10"))
    first, second, third = Placer().place(cluster(), [request, request, request])
    assert first.placed and second.placed
    assert not third.placed and third.node is None
    assert third.rejected == {
        "node-selector": 0,
        "taints": 1,
        "anti-affinity": 0,
        "gpu-type": 1,
        "cpu": 0,
        "memory": 0,
        "gpu": 2,
    }
    assert list(third.rejected) == list(FILTERS)
    assert "0/4 nodes are available: 1 taints, 1 gpu-type, 2 gpu" in third.reason()


def test_node_selector_and_tolerations() -> None:
    pinned = Request.share("pinned", 1000, 1024, 500, node_selector={"zone": "a"})
    tolerant = Request.share(
        "tolerant",
        1000,
        1024,
        500,
        gpu_types=("T4",),
        tolerations=(Toleration("dedicated", "Equal", "ml"),),
    )
    intolerant = Request.share("intolerant", 1000, 1024, 500, gpu_types=("T4",))
    decisions = Placer().place(cluster(), [pinned, tolerant, intolerant])
    assert decisions[0].node in {"gpu-a", "t4"}
    assert decisions[1].node == "t4"
    assert decisions[2].node is None and decisions[2].rejected["taints"] == 1


def test_replicas_of_a_deployment_spread_with_anti_affinity() -> None:
    replicas = [
        Request.share(f"llm-{i}", 2000, 8192, 250, deployment="llm", anti_affinity=True)
        for i in range(4)
    ]
    decisions = Placer("fgd").place(cluster(), replicas)
    # Only gpu-a and gpu-b can host them (t4 is tainted, cpu has no GPU): one replica each.
    assert {d.node for d in decisions[:2]} == {"gpu-a", "gpu-b"}
    for late in decisions[2:]:
        assert late.node is None
        assert late.rejected["anti-affinity"] == 2


def test_anti_affinity_counts_as_a_filter() -> None:
    nodes = [Node("only", 64000, 65536, 8, "A10")]
    replicas = [
        Request.share(f"r{i}", 100, 100, 100, deployment="d", anti_affinity=True) for i in range(2)
    ]
    first, second = Placer().place(nodes, replicas)
    assert first.node == "only"
    assert second.rejected["anti-affinity"] == 1


def test_a_batch_of_thousands_in_one_call() -> None:
    nodes = [Node(f"n{i}", 96000, 786432, 8, "G2") for i in range(200)]
    requests = [Request.share(f"r{i}", 2000, 4096, 250 + 50 * (i % 10)) for i in range(3000)]
    decisions = Placer("fgd").place(nodes, requests)
    assert len(decisions) == 3000
    assert all(d.placed for d in decisions)
    per_gpu: dict[tuple[str, int], int] = {}
    for d, r in zip(decisions, requests, strict=True):
        assert d.node is not None
        key = (d.node, d.gpus[0])
        per_gpu[key] = per_gpu.get(key, 0) + r.gpu_milli
    assert max(per_gpu.values()) <= 1000


def test_explain_says_which_filter_and_the_scores() -> None:
    session = Placer("best-fit").session(cluster())
    request = Request.share("r", 1000, 1024, 500, gpu_types=("A10",))
    why_not = session.explain(request, "t4")
    assert why_not.failed == ("taints", "gpu-type")
    assert why_not.score is None and why_not.best_node in {"gpu-a", "gpu-b"}
    why = session.explain(request, "gpu-b")
    assert why.feasible and why.score is not None
    assert why.free["gpu_milli"] == [1000] * 8
    assert set(session.scores(request)) == {"gpu-a", "gpu-b"}
    with pytest.raises(PlacementInputError, match="unknown node 'nope'"):
        session.explain(request, "nope")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Request("r", -1), "cpu_milli must be a non-negative integer"),
        (lambda: Request("r", 1, gpus=2, gpu_milli=500), "only, not 2"),
        (lambda: Request("r", 1, gpus=1, gpu_milli=0), "gpu_milli must be 1-1000"),
        (lambda: Node("n", 1, 1, 2, ""), "gpu_type is required"),
        (lambda: Node("n", 1, 1, 2, "T4", gpu_free=(1000,)), "gpu_free has 1 entries"),
        (lambda: Node("n", 1, 1, 1, "T4", gpu_free=(2000,)), r"gpu_free\[0\] must be 0-1000"),
        (lambda: Placer("best"), "unknown placement policy 'best'"),
        (
            lambda: Placer().place([Node("a", 1, 1), Node("a", 1, 1)], []),
            "node 'a' is listed twice",
        ),
    ],
)
def test_bad_input_is_a_clear_error(build: object, message: str) -> None:
    with pytest.raises(PlacementInputError, match=message):
        build()  # type: ignore[operator]
