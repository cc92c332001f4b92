"""Each policy on small hand-made clusters whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from inferbridge.placement import MILLI, Node, Placer, Request
from inferbridge.placement.engine import Engine
from inferbridge.placement.frag import TypicalShapes, typical_shapes
from inferbridge.placement.policies import make_policy, policy_names
from inferbridge.placement.state import ClusterState, Shape

ALL = policy_names()
SCORING = [p for p in ALL if p != "random"]


def placed(policy: str, nodes: list[Node], requests: list[Request], **kw: object) -> list:
    return Placer(policy, **kw).place(nodes, requests)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ALL)
def test_a_multi_gpu_task_needs_a_node_with_that_many_free_gpus(policy: str) -> None:
    nodes = [
        Node("small", 32000, 65536, 2, "T4"),
        Node("half-used", 64000, 262144, 8, "V100", gpu_free=(0, 0, 0, 0, 0, 1000, 1000, 1000)),
        Node("big", 96000, 262144, 8, "V100"),
    ]
    [decision] = placed(policy, nodes, [Request.whole("train", 16000, 65536, 4)])
    assert decision.node == "big"
    assert decision.gpus == (0, 1, 2, 3)


@pytest.mark.parametrize("policy", ALL)
def test_a_gpu_type_constraint_is_a_filter(policy: str) -> None:
    nodes = [Node("t4", 64000, 65536, 2, "T4"), Node("a10", 64000, 65536, 2, "A10")]
    requests = [Request.share(f"r{i}", 1000, 1024, 300, gpu_types=("A10",)) for i in range(4)]
    assert {d.node for d in placed(policy, nodes, requests)} == {"a10"}


@pytest.mark.parametrize("policy", ["fgd", "fgd-plus", "best-fit", "gpu-packing", "dotprod"])
def test_a_share_goes_to_the_already_split_gpu(policy: str) -> None:
    # One node with a GPU half used: a 500-milli share fills it rather than splitting a
    # fresh GPU (on this node or the idle one).
    nodes = [
        Node("split", 32000, 65536, 4, "T4", gpu_free=(1000, 500, 1000, 1000)),
        Node("idle", 32000, 65536, 4, "T4"),
    ]
    workload = [Shape(1000, 0, 1, 500)] * 3 + [Shape(4000, 0, 1, 1000)]
    [decision] = placed(policy, nodes, [Request.share("r", 1000, 1024, 500)], workload=workload)
    assert (decision.node, decision.gpus) == ("split", (1,))


def test_gpu_clustering_keeps_shares_with_shares() -> None:
    nodes = [Node("a", 32000, 65536, 4, "T4"), Node("b", 32000, 65536, 4, "T4")]
    session = Placer("gpu-clustering").session(nodes)
    [whole] = session.place([Request.whole("w", 1000, 1024, 1)])
    shares = session.place([Request.share(f"s{i}", 1000, 1024, 200) for i in range(3)])
    assert {d.node for d in shares} == {"b" if whole.node == "a" else "a"}


def test_fgd_prefers_the_node_whose_leftover_still_fits_the_workload() -> None:
    # The workload is 600-milli shares. A 400 share on "tight" leaves exactly 600 free
    # (still usable); on "loose" (700 free) it would leave 300, a fragment.
    nodes = [
        Node("loose", 32000, 65536, 1, "T4", gpu_free=(700,)),
        Node("tight", 32000, 65536, 1, "T4"),
    ]
    workload = [Shape(1000, 0, 1, 600)]
    [decision] = placed("fgd", nodes, [Request.share("r", 1000, 1024, 400)], workload=workload)
    assert decision.node == "tight"


def test_best_fit_takes_the_fullest_node() -> None:
    nodes = [
        Node("roomy", 64000, 65536, 4, "T4"),
        Node("snug", 8000, 65536, 1, "T4"),
    ]
    [decision] = placed("best-fit", nodes, [Request.whole("r", 4000, 1024, 1)])
    assert decision.node == "snug"


def test_fgd_plus_keeps_cpu_tasks_off_free_gpus_among_ties() -> None:
    nodes = [Node("gpu", 64000, 65536, 8, "T4"), Node("cpu", 64000, 65536, 0)]
    workload = [Shape(1000, 0, 0, 0)]
    [plus] = placed("fgd-plus", nodes, [Request("c", 1000, 1024)], workload=workload)
    assert plus.node == "cpu"


def test_random_is_reproducible_per_seed_and_spreads() -> None:
    nodes = [Node(f"n{i}", 64000, 65536, 8, "T4") for i in range(8)]
    requests = [Request.share(f"r{i}", 100, 100, 100) for i in range(40)]
    first = placed("random", nodes, requests, seed=3)
    again = placed("random", nodes, requests, seed=3)
    assert [d.node for d in first] == [d.node for d in again]
    assert len({d.node for d in first}) > 3


def test_dotprod_score_matches_the_plugin_formula() -> None:
    state = ClusterState([Node("n", 64000, 1, 4, "T4", gpu_free=(1000, 1000, 500, 0))])
    shape = Shape(16000, 0, 1, 500)
    score, _ = make_policy("dotprod", _typical()).score(
        state, np.array([0]), shape, np.random.default_rng()
    )
    dot = (64000 / 128000) * (16000 / 128000) + (2500 / 8000) * (500 / 8000)
    assert score[0] == int(100 * (1 - dot / 2))


def test_gpu_packing_bands() -> None:
    nodes = [
        Node("idle", 32000, 65536, 4, "T4"),
        Node("used", 32000, 65536, 4, "T4", gpu_free=(0, 1000, 1000, 1000)),
        Node("shared", 32000, 65536, 4, "T4", gpu_free=(300, 1000, 1000, 1000)),
    ]
    state = ClusterState(nodes)
    policy = make_policy("gpu-packing", _typical())
    rng = np.random.default_rng()
    share, _ = policy.score(state, np.arange(3), Shape(1000, 0, 1, 200), rng)
    # idle: max(33 - 4 free, 4); used node: 50 - 1 free GPU used;
    # shared: 100 - (300 * 100 // 1000) // 10
    assert list(share) == [29, 49, 97]


def test_engine_cache_matches_a_full_recompute() -> None:
    nodes = [Node(f"n{i}", 32000 + 8000 * (i % 3), 65536, 1 + i % 4, "T4") for i in range(40)]
    shapes = [Shape(1000 * (1 + i % 5), 512, 1, 100 * (1 + i % 9)) for i in range(200)]
    typical = typical_shapes(shapes)

    def run(fresh: bool) -> list[int]:
        state = ClusterState(nodes)
        engine = Engine(state, make_policy("fgd", typical), np.random.default_rng(0))
        rows = []
        for shape in shapes:
            if fresh:
                engine._caches.clear()
            rows.append(engine.place(shape).row)
        return rows

    assert run(False) == run(True)


def _typical() -> TypicalShapes:
    return TypicalShapes.of([(Shape(1000, 0, 1, MILLI), 1.0)])
