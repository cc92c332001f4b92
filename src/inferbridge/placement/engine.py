"""Filter and score over all nodes at once, with per-shape caches.

A task's filters and scores depend only on its shape and the state of each node, and one
placement changes one node. So the engine keeps, per shape, the feasibility, raw score and
GPU choice of every node, stamped with the node's epoch, and recomputes only the rows whose
node changed since: a burst of thousands of tasks costs a few numpy operations each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from inferbridge.placement.policies import Policy
from inferbridge.placement.state import ClusterState, Shape

__all__ = ["RESOURCE_FILTERS", "Choice", "Engine"]

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

DEDUPE_ABOVE = 64
_HASH_WEIGHTS = np.random.default_rng(20230710).integers(1, 2**62, size=64, dtype=np.int64) | 1
"""Score distinct node states only when more rows than this are stale."""

RESOURCE_FILTERS = ("gpu-type", "cpu", "memory", "gpu")
"""Resource filters in the order they are reported: wrong GPU type, not enough free CPU,
not enough free memory, no GPU (or not enough GPUs with the asked free share)."""


@dataclass(frozen=True, slots=True)
class Choice:
    """The engine's pick for one task: a node row (-1: none) and its GPU devices."""

    row: int
    gpus: tuple[int, ...]
    score: float | None
    candidates: int


class _ShapeCache:
    __slots__ = ("feasible", "gpu", "raw", "seen")

    def __init__(self, count: int) -> None:
        self.feasible = np.zeros(count, dtype=bool)
        self.raw = np.zeros(count, dtype=np.float64)
        self.gpu = np.full(count, -1, dtype=np.int64)
        self.seen = np.full(count, -1, dtype=np.int64)


class Engine:
    """Places shapes on a `ClusterState` with one policy.

    Equal best scores go to the first such node in the state's order (`ties="first"`: what
    the FGD paper's simulator does, its kube-scheduler fork picking the smallest node name,
    names carrying the seed's shuffle) or to a uniformly random one (`ties="random"`:
    upstream kube-scheduler's `selectHost`), drawn from `rng`.
    """

    def __init__(
        self,
        state: ClusterState,
        policy: Policy,
        rng: np.random.Generator,
        ties: Literal["first", "random"] = "first",
    ) -> None:
        if ties not in ("first", "random"):
            raise ValueError(f"ties must be 'first' or 'random', not {ties!r}")
        self.state = state
        self.policy = policy
        self.rng = rng
        self.ties = ties
        self._caches: dict[Shape, _ShapeCache] = {}
        self._type_masks: dict[tuple[str, ...], BoolArray] = {}

    def _type_ok(self, shape: Shape, rows: IntArray) -> BoolArray:
        if shape.gpus == 0 or not shape.gpu_types:
            return np.ones(rows.shape[0], dtype=bool)
        mask = self._type_masks.get(shape.gpu_types)
        if mask is None:
            mask = self._type_masks[shape.gpu_types] = self.state.type_mask(shape.gpu_types)
        return mask[self.state.gpu_type_id[rows]]

    def resource_checks(self, shape: Shape, rows: IntArray) -> list[BoolArray]:
        """Pass/fail of each of RESOURCE_FILTERS for `rows`."""
        state = self.state
        if shape.gpus:
            fitting = (state.gpu_left[rows] >= shape.gpu_milli).sum(axis=1)
            gpu_ok = fitting >= shape.gpus
        else:
            gpu_ok = np.ones(rows.shape[0], dtype=bool)
        return [
            self._type_ok(shape, rows),
            state.cpu_left[rows] >= shape.cpu_milli,
            state.mem_left[rows] >= shape.memory_mib,
            gpu_ok,
        ]

    def evaluate(self, shape: Shape) -> _ShapeCache:
        """Feasibility, raw scores and GPU choice of every node for `shape`, brought up to date."""
        cache = self._caches.get(shape)
        if cache is None:
            cache = self._caches[shape] = _ShapeCache(len(self.state))
        epoch = self.state.epoch
        stale = np.flatnonzero(cache.seen != epoch)
        if stale.size:
            checks = self.resource_checks(shape, stale)
            fit = np.logical_and.reduce(checks)
            cache.feasible[stale] = fit
            scored = stale[fit]
            if scored.size > DEDUPE_ABOVE and self.state.max_gpus <= 30:
                # Many nodes are alike (a fresh cluster has a handful of kinds): score each
                # distinct state once. Policies see only CPU, GPUs, type and affinity.
                state = self.state
                keys = np.column_stack(
                    (
                        state.cpu_left[scored],
                        state.gpu_type_id[scored],
                        state.gpu_count[scored],
                        state.gpu_left[scored],
                        state.affinity[scored],
                    )
                )
                # One int64 hash per row (wrapping arithmetic), checked against the rows.
                hashes = keys @ _HASH_WEIGHTS[: keys.shape[1]]
                _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
                inverse = inverse.reshape(-1)
                if np.array_equal(keys[first][inverse], keys):
                    raw, gpu = self.policy.score(state, scored[first], shape, self.rng)
                    cache.raw[scored] = raw[inverse]
                    cache.gpu[scored] = gpu[inverse]
                else:  # a hash collision: score every row
                    raw, gpu = self.policy.score(state, scored, shape, self.rng)
                    cache.raw[scored] = raw
                    cache.gpu[scored] = gpu
            elif scored.size:
                raw, gpu = self.policy.score(self.state, scored, shape, self.rng)
                cache.raw[scored] = raw
                cache.gpu[scored] = gpu
            cache.seen[stale] = epoch[stale]
        return cache

    def choose(self, shape: Shape, allowed: BoolArray | None = None) -> Choice:
        """The best node for `shape` among those passing its filters (and `allowed`)."""
        cache = self.evaluate(shape)
        mask = cache.feasible if allowed is None else cache.feasible & allowed
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return Choice(-1, (), None, 0)
        if self.policy.uniform:
            row = int(rows[self.rng.integers(rows.size)])
            best = 0.0
        else:
            final = self.policy.normalize(cache.raw[rows])
            best = float(final.max())
            ties = rows[final == best]
            if ties.size > 1 and self.ties == "random":
                row = int(ties[self.rng.integers(ties.size)])
            else:
                row = int(ties[0])
        if shape.is_share:
            gpus: tuple[int, ...] = (int(cache.gpu[row]),)
        elif shape.gpus:
            gpus = self.state.exclusive_gpus(row, shape.gpus)
        else:
            gpus = ()
        return Choice(row, gpus, best, int(rows.size))

    def commit(self, shape: Shape, choice: Choice) -> None:
        self.state.commit(choice.row, shape, choice.gpus)

    def place(self, shape: Shape, allowed: BoolArray | None = None) -> Choice:
        """Choose and commit; an unplaceable shape leaves the state alone."""
        choice = self.choose(shape, allowed)
        if choice.row >= 0:
            self.commit(shape, choice)
        return choice
