"""The cluster as numpy arrays, one row per node, so filters and scores run over all nodes
at once; `commit` applies one placement and bumps that node's epoch so cached per-shape
scores know which rows to recompute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inferbridge.placement.model import MILLI, Node, PlacementInputError

__all__ = ["AFFINITY_SHARE", "ClusterState", "Shape"]

IntArray = npt.NDArray[np.int64]
AFFINITY_SHARE = 0
"""Column of `ClusterState.affinity` counting GPU-sharing tasks; column k counts k-GPU tasks."""


@dataclass(frozen=True, slots=True)
class Shape:
    """The resource part of a request: what scores and resource filters depend on."""

    cpu_milli: int
    memory_mib: int
    gpus: int
    gpu_milli: int
    gpu_types: tuple[str, ...] = ()

    @property
    def total_gpu_milli(self) -> int:
        return self.gpus * self.gpu_milli

    @property
    def is_share(self) -> bool:
        return self.gpus == 1 and self.gpu_milli < MILLI

    @property
    def affinity_column(self) -> int:
        """GpuClustering's tag of the task: 0 = share, k = k whole GPUs, -1 = no GPU."""
        if self.gpus == 0:
            return -1
        return AFFINITY_SHARE if self.is_share else self.gpus


class ClusterState:
    """Free resources of every node. Rows follow the order of `nodes`."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        if not nodes:
            raise PlacementInputError("cluster: no nodes")
        names = [node.name for node in nodes]
        if len(set(names)) != len(names):
            seen: set[str] = set()
            duplicate = next(name for name in names if name in seen or seen.add(name))  # type: ignore[func-returns-value]
            raise PlacementInputError(f"cluster: node {duplicate!r} is listed twice")
        self.nodes = list(nodes)
        self.names = names
        self.index = {name: row for row, name in enumerate(names)}
        count = len(nodes)
        self.max_gpus = max(1, max(node.gpus for node in nodes))
        self.cpu_cap: IntArray = np.array([n.cpu_milli for n in nodes], dtype=np.int64)
        self.mem_cap: IntArray = np.array([n.memory_mib for n in nodes], dtype=np.int64)
        self.cpu_left: IntArray = np.array(
            [n.cpu_milli if n.cpu_free_milli is None else n.cpu_free_milli for n in nodes],
            dtype=np.int64,
        )
        self.mem_left: IntArray = np.array(
            [n.memory_mib if n.memory_free_mib is None else n.memory_free_mib for n in nodes],
            dtype=np.int64,
        )
        self.gpu_count: IntArray = np.array([n.gpus for n in nodes], dtype=np.int64)
        # Absent GPUs hold 0 free milli, so they never fit and never count as free.
        self.gpu_left: IntArray = np.zeros((count, self.max_gpus), dtype=np.int64)
        for row, node in enumerate(nodes):
            free = node.gpu_free if node.gpu_free is not None else (MILLI,) * node.gpus
            self.gpu_left[row, : node.gpus] = free
        self.gpu_types = sorted({n.gpu_type for n in nodes if n.gpus})
        type_ids = {name: i for i, name in enumerate(self.gpu_types)}
        # -1: no GPU (indexes the last row of per-type tables, reserved for "no type").
        self.gpu_type_id: IntArray = np.array(
            [type_ids[n.gpu_type] if n.gpus else -1 for n in nodes], dtype=np.int64
        )
        self.affinity: IntArray = np.zeros((count, self.max_gpus + 1), dtype=np.int64)
        self.epoch: IntArray = np.zeros(count, dtype=np.int64)
        self.total_gpus = int(self.gpu_count.sum())

    def __len__(self) -> int:
        return len(self.names)

    def type_mask(self, gpu_types: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Per GPU type id, plus a last row for GPU-less nodes: may `gpu_types` run there."""
        if not gpu_types:
            return np.ones(len(self.gpu_types) + 1, dtype=bool)
        allowed = set(gpu_types)
        return np.array([name in allowed for name in self.gpu_types] + [False], dtype=bool)

    def exclusive_gpus(self, row: int, count: int) -> tuple[int, ...]:
        """The first `count` fully free GPUs of a node, by device index."""
        free = np.flatnonzero(self.gpu_left[row] == MILLI)
        return tuple(int(g) for g in free[:count])

    def commit(self, row: int, shape: Shape, gpus: Sequence[int]) -> None:
        """Take `shape`'s resources on node `row`, GPU milli from devices `gpus`."""
        self.cpu_left[row] -= shape.cpu_milli
        self.mem_left[row] -= shape.memory_mib
        for device in gpus:
            self.gpu_left[row, device] -= shape.gpu_milli
        column = shape.affinity_column
        if column >= 0:
            self.affinity[row, min(column, self.max_gpus)] += 1
        self.epoch[row] += 1

    def allocated_gpu_milli(self) -> int:
        return int(self.gpu_count.sum() * MILLI - self.gpu_left.sum())
