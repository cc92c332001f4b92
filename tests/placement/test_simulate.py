"""The trace reader and a short replay with the paper's protocol, deterministic per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferbridge.placement import PlacementInputError
from inferbridge.placement.frag import typical_shapes
from inferbridge.placement.simulate import discretise, inflate, simulate
from inferbridge.placement.trace import read_nodes, read_tasks

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def trace() -> tuple[list, list]:
    return read_nodes(DATA / "nodes.csv"), read_tasks(DATA / "tasks.csv")


def test_the_sample_reads(trace: tuple[list, list]) -> None:
    nodes, tasks = trace
    assert len(nodes) == 60 and len(tasks) == 400
    assert any(t.shape.gpu_types for t in tasks)  # gpuspec10 has type constraints
    assert all(t.shape.gpus <= 1 or t.shape.gpu_milli == 1000 for t in tasks)


def test_inflation_stops_at_the_target(trace: tuple[list, list]) -> None:
    nodes, tasks = trace
    total = sum(n.gpus for n in nodes)
    arrivals = inflate(tasks, total, 1.3, np.random.default_rng(42))
    demand = sum(t.shape.total_gpu_milli for t in arrivals)
    assert sorted(t.name for t in arrivals[: len(tasks)]) == sorted(t.name for t in tasks)
    assert demand <= 1.3 * total * 1000 + 8000
    assert demand > 1.3 * total * 1000 - 8000


@pytest.mark.parametrize("policy", ["random", "best-fit", "fgd", "fgd-plus"])
@pytest.mark.parametrize("seed", [42, 43])
def test_a_short_replay_is_deterministic_per_seed(
    trace: tuple[list, list], policy: str, seed: int
) -> None:
    nodes, tasks = trace
    first = simulate(nodes, tasks, policy, seed, limit=300)
    again = simulate(nodes, tasks, policy, seed, limit=300)
    assert first.tasks == 300
    assert np.array_equal(first.allocated_milli, again.allocated_milli)
    assert first.curve() == again.curve()
    # Allocation never exceeds what arrived, nor the capacity.
    assert (first.allocated_milli <= first.arrived_milli).all()
    assert first.allocated_milli[-1] <= first.total_gpus * 1000
    assert (first.frag_milli >= 0).all()


def test_fgd_beats_random_on_the_sample(trace: tuple[list, list]) -> None:
    nodes, tasks = trace
    fgd = simulate(nodes, tasks, "fgd", 42).curve()
    rnd = simulate(nodes, tasks, "random", 42).curve()
    assert fgd[130] > rnd[130]


def test_discretise_takes_the_mean_per_whole_percent() -> None:
    arrived = np.array([0, 40, 60, 100, 140])  # of 10000: 0, 0.4, 0.6, 1.0, 1.4 %
    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert discretise(arrived, 10000, values, top=3) == {0: 0.5, 1: 3.0, 2: 3.0}


def test_typical_shapes_cover_95_percent(trace: tuple[list, list]) -> None:
    _, tasks = trace
    typical = typical_shapes(t.shape for t in tasks)
    assert abs(typical.freq.sum() - 1) < 1e-9
    assert all(s.memory_mib == 0 for s in typical.shapes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,cpu_milli,memory_mib,num_gpu\nt,1,1,0\n", "missing column"),
        (
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\nt,abc,1,0,0\n",
            r":2: cpu_milli must be an integer",
        ),
        (
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\nt,1,1,2,500\n",
            r":2: gpu_milli 500 with num_gpu 2",
        ),
        ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\nt,1,1,1,0\n", r":2: gpu_milli must be > 0"),
        ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n", "no tasks"),
    ],
)
def test_malformed_task_rows_name_the_line_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "tasks.csv"
    path.write_text(text)
    with pytest.raises(PlacementInputError, match=message):
        read_tasks(path)


def test_malformed_node_rows_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "nodes.csv"
    path.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,1000,1024,2,\n")
    with pytest.raises(PlacementInputError, match=r"nodes.csv:2: model is required"):
        read_nodes(path)
