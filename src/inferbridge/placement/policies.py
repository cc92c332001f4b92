"""Score policies: each scores a batch of feasible nodes for one task shape and says which
GPU a GPU-sharing task would take on each.

The paper's baselines and FGD follow the plugins of hkust-adsl/kubernetes-scheduler-simulator
(`pkg/simulator/plugin/*_score.go`) to the integer: kube-scheduler scores are int64 in
0-100, and the truncation decides which nodes tie (ties are broken uniformly at random by
the engine, as kube-scheduler's `selectHost` does). Higher is better everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from inferbridge.placement.frag import TypicalShapes
from inferbridge.placement.model import MILLI
from inferbridge.placement.state import ClusterState, Shape

__all__ = ["POLICIES", "Policy", "make_policy", "policy_names"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAX_SPEC_CPU = 128_000  # the simulator's normalisers (one big node: 128 cores, 8 GPUs)
MAX_SPEC_GPU = 8_000
MAX_SCORE = 100


class Policy(Protocol):
    """Scores feasible nodes for one shape. `rows` are node rows that passed every filter."""

    name: str
    uniform: bool
    """True when the policy picks uniformly among feasible nodes (scores are ignored)."""

    def score(
        self, state: ClusterState, rows: IntArray, shape: Shape, rng: np.random.Generator
    ) -> tuple[FloatArray, IntArray]:
        """Scores of `rows` and, for a GPU-sharing shape, the GPU each would use (else -1)."""
        ...

    def normalize(self, scores: FloatArray) -> FloatArray:
        """Final scores from the raw scores of all feasible nodes (kube's NormalizeScore)."""
        ...


def best_fit_gpu(state: ClusterState, rows: IntArray, milli: int) -> IntArray:
    """The GPU with the least free share that still fits (first index on ties)."""
    left = state.gpu_left[rows]
    masked = np.where(left >= milli, left, MILLI + 1)
    chosen: IntArray = np.argmin(masked, axis=1).astype(np.int64)
    return chosen


def _no_gpu(rows: IntArray) -> IntArray:
    return np.full(rows.shape[0], -1, dtype=np.int64)


class _Base:
    name = "base"
    uniform = False

    def gpu_choice(
        self, state: ClusterState, rows: IntArray, shape: Shape, rng: np.random.Generator
    ) -> IntArray:
        return best_fit_gpu(state, rows, shape.gpu_milli) if shape.is_share else _no_gpu(rows)

    def normalize(self, scores: FloatArray) -> FloatArray:
        return scores


class RandomFit(_Base):
    """Any feasible node, uniformly; a sharing task takes a random GPU that fits."""

    name = "random"
    uniform = True

    def score(
        self, state: ClusterState, rows: IntArray, shape: Shape, rng: np.random.Generator
    ) -> tuple[FloatArray, IntArray]:
        if not shape.is_share:
            return np.zeros(rows.shape[0]), _no_gpu(rows)
        fits = state.gpu_left[rows] >= shape.gpu_milli
        keys = np.where(fits, rng.random(fits.shape), -1.0)
        return np.zeros(rows.shape[0]), np.argmax(keys, axis=1).astype(np.int64)


class DotProduct(_Base):
    """Tetris' alignment: 1 - <free, ask> over (CPU, total GPU), normalised by a max node."""

    name = "dotprod"

    def score(
        self, state: ClusterState, rows: IntArray, shape: Shape, rng: np.random.Generator
    ) -> tuple[FloatArray, IntArray]:
        node_cpu = state.cpu_left[rows] / MAX_SPEC_CPU
        node_gpu = state.gpu_left[rows].sum(axis=1) / MAX_SPEC_GPU
        dot = node_cpu * (shape.cpu_milli / MAX_SPEC_CPU) + node_gpu * (
            shape.total_gpu_milli / MAX_SPEC_GPU
        )
        score = np.trunc(MAX_SCORE * (1 - dot / 2))
        return score, self.gpu_choice(state, rows, shape, rng)


class GpuClustering(_Base):
    """Keep tasks of one GPU kind together: nodes hosting only that kind first."""

    name = "gpu-clustering"

    def score(
        self, state: ClusterState, rows: IntArray, shape: Shape, rng: np.random.Generator
    ) -> tuple[FloatArray, IntArray]:
        column = shape.affinity_column
        if column < 0:
            return np.zeros(rows.shape[0]), _no_gpu(rows)
        affinity = state.affinity[rows]
        kinds = (affinity > 0).sum(axis=1)
        same = affinity[:, min(column, state.max_gpus)] > 0
        used = (MAX_SCORE // 4 * (MAX_SPEC_GPU - state.gpu_left[rows].sum(axis=1))) // MAX_SPEC_GPU
        band = np.where(same, np.where(kinds == 1, 3, 2), np.where(kinds == 0, 1, 0))
        score = used + band * (MAX_SCORE // 4)
        return score.astype(np.float64), self.gpu_choice(state, rows, shape, rng)


class GpuPacking(_Base):
    """Prefer already-shared GPUs, then free GPUs on used nodes, then idle nodes."""

    name = "gpu-packing"

    def score(
        self, state: ClusterState, rows: IntArray, shape: Shape, rng: np.random.Generator
    ) -> tuple[FloatArray, IntArray]:
        if shape.gpus == 0:
            return np.zeros(rows.shape[0]), _no_gpu(rows)
        left = state.gpu_left[rows]
        fully_free = (left == MILLI).sum(axis=1)
        idle_node = fully_free == state.gpu_count[rows]
        ordered = np.sort(left, axis=1, kind="stable")
        fits = ordered >= shape.gpu_milli
        chosen = fits & (np.cumsum(fits, axis=1) <= shape.gpus)
        free_to_use = (chosen & (ordered == MILLI)).sum(axis=1)
        ratio = (np.where(chosen, ordered, 0) * 100 // MILLI).sum(axis=1)
        score = np.where(
            idle_node,
            np.maximum(MAX_SCORE // 3 - fully_free, fully_free),
            np.where(
                free_to_use > 0,
                np.maximum(MAX_SCORE // 2 - free_to_use, MAX_SCORE // 3),
                np.maximum(MAX_SCORE - ratio // 10, MAX_SCORE // 2),
            ),
        )
        return score.astype(np.float64), self.gpu_choice(state, rows, shape, rng)


class BestFit(_Base):
    """Least leftover (CPU and GPU, equally weighted) after placing; min-max normalised."""

    name = "best-fit"

    def score(
        self, state: ClusterState, rows: IntArray, shape: Shape, rng: np.random.Generator
    ) -> tuple[FloatArray, IntArray]:
        leftover = (state.cpu_left[rows] - shape.cpu_milli) / MAX_SPEC_CPU * 0.5 + (
            state.gpu_left[rows].sum(axis=1) - shape.total_gpu_milli
        ) / MAX_SPEC_GPU * 0.5
        return np.trunc((1.0 - leftover) * MAX_SCORE), self.gpu_choice(state, rows, shape, rng)

    def normalize(self, scores: FloatArray) -> FloatArray:
        low, high = scores.min(), scores.max()
        if high == low:
            return np.zeros_like(scores)
        normalized: FloatArray = np.floor((scores - low) * MAX_SCORE / (high - low))
        return normalized


class FragmentationGradientDescent(_Base):
    """FGD: the node (and GPU) whose fragmentation amount grows least, through a sigmoid
    truncated to kube-scheduler's integer 0-100 scores."""

    name = "fgd"

    def __init__(self, typical: TypicalShapes) -> None:
        self.typical = typical
        self._access: npt.NDArray[np.bool_] | None = None
        self._state: ClusterState | None = None
        self._frag = np.zeros(0)
        self._frag_epoch = np.zeros(0, dtype=np.int64)

    def _bind(self, state: ClusterState) -> npt.NDArray[np.bool_]:
        if self._state is not state or self._access is None:
            self._state = state
            self._access = self.typical.access(state)
            self._frag = np.zeros(len(state))
            self._frag_epoch = np.full(len(state), -1, dtype=np.int64)
        return self._access

    def node_frag(self, state: ClusterState, rows: IntArray) -> FloatArray:
        """Current fragmentation amount of `rows`, recomputed only where a node changed."""
        access = self._bind(state)
        stale = rows[self._frag_epoch[rows] != state.epoch[rows]]
        if stale.size:
            self._frag[stale] = self.typical.amount(
                state.cpu_left[stale], state.gpu_left[stale], access[state.gpu_type_id[stale]]
            )
            self._frag_epoch[stale] = state.epoch[stale]
        return self._frag[rows]

    def deltas(
        self, state: ClusterState, rows: IntArray, shape: Shape
    ) -> tuple[FloatArray, IntArray]:
        """Fragmentation decrease (milli-GPU; negative = growth) per row and per GPU for a
        sharing task ([rows, G], -inf where the GPU does not fit), else [rows, 1]."""
        access = self._bind(state)
        before = self.node_frag(state, rows)
        cpu_after = state.cpu_left[rows] - shape.cpu_milli
        left = state.gpu_left[rows]
        rows_access = access[state.gpu_type_id[rows]]
        if shape.is_share:
            gpus = state.max_gpus
            after = np.repeat(left[:, None, :], gpus, axis=1)  # [R, G candidates, G]
            diagonal = np.arange(gpus)
            after[:, diagonal, diagonal] -= shape.gpu_milli
            fits = left >= shape.gpu_milli
            frag_after = self.typical.amount(
                np.repeat(cpu_after, gpus),
                after.reshape(-1, gpus),
                np.repeat(rows_access, gpus, axis=0),
            ).reshape(-1, gpus)
            delta = np.where(fits, before[:, None] - frag_after, -np.inf)
            return delta, fits.astype(np.int64)
        after = left.copy()
        if shape.gpus:
            free = after == MILLI
            take = free & (np.cumsum(free, axis=1) <= shape.gpus)
            after[take] = 0
        frag_after = self.typical.amount(cpu_after, after, rows_access)
        return (before - frag_after)[:, None], np.ones((rows.shape[0], 1), dtype=np.int64)

    def score(
        self, state: ClusterState, rows: IntArray, shape: Shape, rng: np.random.Generator
    ) -> tuple[FloatArray, IntArray]:
        delta, _ = self.deltas(state, rows, shape)
        with np.errstate(over="ignore"):
            per_gpu = np.trunc(MAX_SCORE / (1.0 + np.exp(-delta / MILLI)))
        per_gpu = np.where(np.isneginf(delta), -1.0, per_gpu)
        best = np.argmax(per_gpu, axis=1)  # first index wins ties, as in the plugin
        score = per_gpu[np.arange(rows.shape[0]), best]
        gpu = best.astype(np.int64) if shape.is_share else _no_gpu(rows)
        return score, gpu


class FgdCpuAside(FragmentationGradientDescent):
    """Ours: FGD, with CPU-only tasks kept off free GPUs.

    FGD's integer scores leave many nodes tied, and a CPU-only task then lands on the first
    of them, often a node with idle GPUs whose CPU the next GPU task would need. Among the
    nodes tied at FGD's best score, this policy sends a CPU-only task to the one with the
    least free GPU (the penalty is below one score point, so FGD's order is kept).
    """

    name = "fgd-plus"

    def score(
        self, state: ClusterState, rows: IntArray, shape: Shape, rng: np.random.Generator
    ) -> tuple[FloatArray, IntArray]:
        score, gpu = super().score(state, rows, shape, rng)
        if shape.gpus == 0:
            free_gpus = state.gpu_left[rows].sum(axis=1) / MILLI  # at most a few dozen
            score = score - 1e-3 * free_gpus
        return score, gpu


PolicyFactory = Callable[[TypicalShapes], Policy]

POLICIES: dict[str, PolicyFactory] = {
    "random": lambda typical: RandomFit(),
    "dotprod": lambda typical: DotProduct(),
    "gpu-clustering": lambda typical: GpuClustering(),
    "gpu-packing": lambda typical: GpuPacking(),
    "best-fit": lambda typical: BestFit(),
    "fgd": FragmentationGradientDescent,
    "fgd-plus": FgdCpuAside,
}
"""Registered policies by name; each factory takes the workload's typical shapes."""


def policy_names() -> list[str]:
    return list(POLICIES)


def make_policy(name: str, typical: TypicalShapes) -> Policy:
    try:
        factory = POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown placement policy {name!r}; known: {', '.join(POLICIES)}") from None
    return factory(typical)
