"""Replaying a trace with the FGD paper's protocol ("workload inflation").

Per seed, as `hkust-adsl/kubernetes-scheduler-simulator` does (`SortClusterPods`,
`TunePodsByNodeTotalResource`, `syncClusterResourceList`, `SchedulePods`):

1. the trace's tasks, sorted by name, are shuffled;
2. more tasks are drawn from the trace uniformly with replacement and appended until the
   next draw would take the arrived GPU demand past `inflation` x the cluster's GPU
   capacity (the simulator compares the draw's *per-GPU* share there, and so do we);
3. the node order is shuffled;
4. tasks arrive one by one and never leave; one that fits nowhere fails and is not retried.

After each arrival it records the arrived GPU demand (failed tasks included), the GPU milli
allocated, and the cluster's fragmentation amount. `discretise` turns that into the cached
curves' format: the mean value at each whole percent of arrived demand (0-130).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inferbridge.placement.engine import Engine
from inferbridge.placement.frag import TypicalShapes, typical_shapes
from inferbridge.placement.model import MILLI, Node
from inferbridge.placement.policies import FragmentationGradientDescent, make_policy
from inferbridge.placement.state import ClusterState
from inferbridge.placement.trace import Task

__all__ = ["Replay", "SimulationResult", "discretise", "inflate", "simulate"]


@dataclass(frozen=True)
class SimulationResult:
    """Per-step series of one replay (step 0 is the empty cluster)."""

    policy: str
    seed: int
    total_gpus: int
    arrived_milli: npt.NDArray[np.int64]
    allocated_milli: npt.NDArray[np.int64]
    frag_milli: npt.NDArray[np.float64]
    idle_milli: npt.NDArray[np.int64]
    failed: int
    tasks: int
    seconds: float
    cpu_seconds: float

    def curve(self, series: str = "alloc") -> dict[int, float]:
        """`alloc` (% of GPU capacity allocated), `frag` (fragmentation amount, % of
        capacity) or `frag_ratio` (% of idle GPU), per whole percent of arrived demand."""
        capacity = self.total_gpus * MILLI
        if series == "alloc":
            values = np.round(self.allocated_milli / capacity * 100, 2)
            return discretise(self.arrived_milli, capacity, values)
        if series == "frag":
            curve = discretise(self.arrived_milli, capacity, self.frag_milli, rounding=None)
            return {k: round(100 * v / capacity, 2) for k, v in curve.items()}
        if series == "frag_ratio":
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.round(100 * self.frag_milli / self.idle_milli, 2)
            return discretise(self.arrived_milli, capacity, np.nan_to_num(ratio), rounding=None)
        raise ValueError(f"unknown series {series!r}")


def discretise(
    arrived: npt.NDArray[np.int64],
    capacity: int,
    values: npt.NDArray[np.float64],
    rounding: int | None = 2,
    top: int = 130,
) -> dict[int, float]:
    """Mean of `values` over the steps whose arrived demand rounds to each whole percent
    (falling back to +-1 %), as `merge_alloc_discrete.py` does."""
    percent = np.round(arrived / capacity * 100)  # numpy rounds half to even, like Python
    out: dict[int, float] = {}
    for point in range(top + 1):
        chosen = values[percent == point]
        if chosen.size == 0:
            chosen = values[(percent >= point - 1) & (percent <= point + 1)]
            if chosen.size == 0:
                continue
        mean = float(chosen.mean())
        out[point] = round(mean, rounding) if rounding is not None else mean
    return out


def inflate(
    tasks: Sequence[Task], total_gpus: int, inflation: float, rng: np.random.Generator
) -> list[Task]:
    """Steps 1-2 of the protocol: the shuffled trace, then draws until `inflation` x capacity."""
    by_name = sorted(tasks, key=lambda task: task.name)
    order = [by_name[i] for i in rng.permutation(len(by_name))]
    demand = sum(task.shape.total_gpu_milli for task in order)
    target = inflation * total_gpus * MILLI
    draws = 0
    while True:
        task = by_name[int(rng.integers(len(by_name)))]
        if demand + task.shape.gpu_milli > target:
            break
        demand += task.shape.total_gpu_milli
        order.append(Task(f"{task.name}-tuned-{draws}", task.shape))
        draws += 1
    return order


class Replay:
    """One experiment: a cluster, a policy, a seed."""

    def __init__(
        self,
        nodes: Sequence[Node],
        tasks: Sequence[Task],
        policy: str,
        seed: int,
        inflation: float = 1.3,
        typical: TypicalShapes | None = None,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.policy_name = policy
        self.typical = typical or typical_shapes(task.shape for task in tasks)
        total_gpus = sum(node.gpus for node in nodes)
        self.arrivals = inflate(tasks, total_gpus, inflation, self.rng)
        by_name = sorted(nodes, key=lambda node: node.name)
        self.state = ClusterState([by_name[i] for i in self.rng.permutation(len(by_name))])
        self.policy = make_policy(policy, self.typical)
        self.engine = Engine(self.state, self.policy, self.rng)
        # Fragmentation is measured the paper's way for every policy, FGD's machinery reused.
        self._meter = FragmentationGradientDescent(self.typical)

    def run(self) -> SimulationResult:
        started, cpu_started = time.perf_counter(), time.process_time()
        steps = len(self.arrivals) + 1
        arrived = np.zeros(steps, dtype=np.int64)
        allocated = np.zeros(steps, dtype=np.int64)
        frag = np.zeros(steps, dtype=np.float64)
        idle = np.zeros(steps, dtype=np.int64)
        all_rows = np.arange(len(self.state))
        node_frag = self._meter.node_frag(self.state, all_rows).copy()
        frag_total = float(node_frag.sum())
        capacity = self.state.total_gpus * MILLI
        used = 0
        demand = 0
        failed = 0
        frag[0] = frag_total
        idle[0] = capacity
        for step, task in enumerate(self.arrivals, start=1):
            shape = task.shape
            demand += shape.total_gpu_milli
            choice = self.engine.place(shape)
            if choice.row < 0:
                failed += 1
            else:
                used += shape.total_gpu_milli
                row = np.array([choice.row])
                new = float(self._meter.node_frag(self.state, row)[0])
                frag_total += new - node_frag[choice.row]
                node_frag[choice.row] = new
            arrived[step] = demand
            allocated[step] = used
            frag[step] = frag_total
            idle[step] = capacity - used
        return SimulationResult(
            policy=self.policy_name,
            seed=self.seed,
            total_gpus=self.state.total_gpus,
            arrived_milli=arrived,
            allocated_milli=allocated,
            frag_milli=frag,
            idle_milli=idle,
            failed=failed,
            tasks=len(self.arrivals),
            seconds=time.perf_counter() - started,
            cpu_seconds=time.process_time() - cpu_started,
        )


def simulate(
    nodes: Sequence[Node],
    tasks: Sequence[Task],
    policy: str,
    seed: int,
    inflation: float = 1.3,
    limit: int | None = None,
) -> SimulationResult:
    """Replay `tasks` on `nodes` with `policy` and `seed` (the first `limit` arrivals only)."""
    replay = Replay(nodes, tasks, policy, seed, inflation)
    if limit is not None:
        replay.arrivals = replay.arrivals[:limit]
    return replay.run()
