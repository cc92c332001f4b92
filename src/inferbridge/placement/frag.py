"""GPU fragmentation as defined by Weng et al., "Beware of Fragmentation" (ATC '23).

A node's free GPU milli is a *fragment* for a task shape when that task cannot use it:
the node lacks CPU, lacks a GPU with enough free share, has the wrong GPU type, or the
task needs no GPU at all. When the task fits, only the GPUs whose free share is below the
task's per-GPU ask are fragments. The *fragmentation amount* of a node is the expectation
of that over the workload's distribution of task shapes (its "typical tasks": the most
frequent shapes covering 95 % of tasks); the *fragmentation ratio* of a cluster is its
amount over its free GPU milli. This mirrors `NodeGpuShareFragAmount` of
hkust-adsl/kubernetes-scheduler-simulator (`pkg/utils/frag.go`), vectorised over nodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inferbridge.placement.state import ClusterState, Shape

__all__ = ["TypicalShapes", "typical_shapes"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TypicalShapes:
    """Task shapes with their frequencies (summing to 1), as arrays."""

    shapes: tuple[Shape, ...]
    freq: FloatArray
    cpu: npt.NDArray[np.int64]
    milli: npt.NDArray[np.int64]
    num: npt.NDArray[np.int64]

    @classmethod
    def of(cls, weighted: Iterable[tuple[Shape, float]]) -> TypicalShapes:
        pairs = list(weighted)
        if not pairs:
            raise ValueError("no typical shapes")
        shapes = tuple(shape for shape, _ in pairs)
        freq = np.array([weight for _, weight in pairs], dtype=np.float64)
        freq = freq / freq.sum()
        return cls(
            shapes,
            freq,
            np.array([s.cpu_milli for s in shapes], dtype=np.int64),
            np.array([s.gpu_milli for s in shapes], dtype=np.int64),
            np.array([s.gpus for s in shapes], dtype=np.int64),
        )

    def access(self, state: ClusterState) -> npt.NDArray[np.bool_]:
        """[type id (+ a last row for GPU-less nodes), shape]: may the shape use that type."""
        return np.stack([state.type_mask(s.gpu_types) for s in self.shapes], axis=1)

    def amount(
        self,
        cpu_left: npt.NDArray[np.int64],
        gpu_left: npt.NDArray[np.int64],
        access_rows: npt.NDArray[np.bool_],
    ) -> FloatArray:
        """Fragmentation amount (milli-GPU) of each of M node states.

        `cpu_left` [M], `gpu_left` [M, G] free milli per GPU, `access_rows` [M, T] whether
        the state's GPU type admits each typical shape.
        """
        total = gpu_left.sum(axis=1).astype(np.float64)
        fits_gpu = gpu_left[:, None, :] >= self.milli[None, :, None]  # [M, T, G]
        can_host = fits_gpu.sum(axis=2) >= self.num[None, :]
        satisfied = (
            can_host
            & (cpu_left[:, None] >= self.cpu[None, :])
            & access_rows
            & (self.milli > 0)[None, :]
        )
        # Satisfied: only GPUs too small for the shape's per-GPU ask are fragments.
        partial = (gpu_left[:, None, :] * ~fits_gpu).sum(axis=2).astype(np.float64)
        per_shape = np.where(satisfied, partial, total[:, None])
        # Row by row (not a matrix product) so a node's amount never depends on the batch.
        amount: FloatArray = (per_shape * self.freq[None, :]).sum(axis=1)
        return amount


def shape_key(shape: Shape) -> tuple[int, int, int, str]:
    return (shape.cpu_milli, shape.gpu_milli, shape.gpus, "|".join(shape.gpu_types))


def typical_shapes(workload: Iterable[Shape], coverage: float = 0.95) -> TypicalShapes:
    """The most frequent shapes covering `coverage` of the tasks, renormalised.

    Same selection as the simulator's `GetTypicalPods` (popularity threshold 95 %, step 1):
    shapes sorted by decreasing count (ties: the larger shape first), taken until the
    cumulative count reaches the threshold.
    """
    # Memory plays no part in fragmentation (the simulator's shapes have none).
    counts = Counter(Shape(s.cpu_milli, 0, s.gpus, s.gpu_milli, s.gpu_types) for s in workload)
    if not counts:
        raise ValueError("empty workload")
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda item: (item[1], shape_key(item[0])), reverse=True)
    chosen: list[tuple[Shape, float]] = []
    cumulative = 0
    for shape, count in ordered:
        if cumulative >= coverage * total:
            break
        chosen.append((shape, float(count)))
        cumulative += count
    return TypicalShapes.of(chosen)
