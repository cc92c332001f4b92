"""The public face of the engine: place a batch of requests on a set of nodes, and explain.

    placer = Placer(policy="fgd")
    session = placer.session(nodes)
    decisions = session.place(requests)       # one Decision per request, in order
    session.explain(requests[0], "node-17")   # which filters node-17 fails, its score

`Placer.place(nodes, requests)` is the one-shot form. Requests are placed in the order
given; each sees the cluster as the ones before it left it. A request that fits nowhere
comes back unplaced with per-filter rejection counts; nothing raises for that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from inferbridge.placement.engine import RESOURCE_FILTERS, Engine
from inferbridge.placement.frag import TypicalShapes, typical_shapes
from inferbridge.placement.model import Decision, Node, PlacementInputError, Request, Toleration
from inferbridge.placement.policies import POLICIES, make_policy
from inferbridge.placement.state import ClusterState, Shape

__all__ = ["FILTERS", "Explanation", "Placer", "PlacementSession", "shape_of"]

BoolArray = npt.NDArray[np.bool_]

FILTERS = ("node-selector", "taints", "anti-affinity", *RESOURCE_FILTERS)
"""Every filter, in the order a node is checked (and rejections are counted)."""


def shape_of(request: Request) -> Shape:
    return Shape(
        request.cpu_milli, request.memory_mib, request.gpus, request.gpu_milli, request.gpu_types
    )


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a node would or would not take a request, on the session's current state."""

    request: str
    node: str
    failed: tuple[str, ...]
    score: float | None
    best_score: float | None
    best_node: str | None
    free: Mapping[str, object] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return not self.failed


class PlacementSession:
    """A cluster state that requests are placed onto, one batch after another."""

    def __init__(
        self,
        nodes: Sequence[Node],
        policy: str,
        typical: TypicalShapes | None,
        seed: int,
        ties: Literal["first", "random"],
    ) -> None:
        self.state = ClusterState(nodes)
        self._policy_name = policy
        self._typical = typical
        self._engine: Engine | None = None
        self._seed = seed
        self._ties: Literal["first", "random"] = ties
        self._static: dict[tuple[object, ...], tuple[BoolArray, BoolArray]] = {}
        self._replicas: dict[str, BoolArray] = {}

    def _engine_for(self, requests: Sequence[Request]) -> Engine:
        if self._engine is None:
            # Without a workload, the batch itself is the arrival distribution FGD looks at.
            typical = self._typical
            if typical is None:
                shapes = [shape_of(r) for r in requests] or [Shape(1, 0, 0, 0)]
                typical = typical_shapes(shapes, coverage=1.0)
            policy = make_policy(self._policy_name, typical)
            self._engine = Engine(self.state, policy, np.random.default_rng(self._seed), self._ties)
        return self._engine

    def _label_taint_masks(self, request: Request) -> tuple[BoolArray, BoolArray]:
        key = (tuple(sorted(request.node_selector.items())), request.tolerations)
        masks = self._static.get(key)
        if masks is None:
            selector = request.node_selector
            labels = np.array(
                [all(n.labels.get(k) == v for k, v in selector.items()) for n in self.state.nodes],
                dtype=bool,
            )
            taints = np.array(
                [_tolerates_all(request.tolerations, n) for n in self.state.nodes], dtype=bool
            )
            masks = self._static[key] = (labels, taints)
        return masks

    def _anti_affinity(self, request: Request) -> BoolArray | None:
        if not (request.anti_affinity and request.deployment):
            return None
        hosting = self._replicas.get(request.deployment)
        return None if hosting is None else ~hosting

    def _allowed(self, request: Request) -> BoolArray | None:
        labels, taints = self._label_taint_masks(request)
        allowed = labels & taints
        apart = self._anti_affinity(request)
        if apart is not None:
            allowed = allowed & apart
        return None if allowed.all() else allowed

    def note_replica(self, deployment: str, node: str) -> None:
        """Record a replica of `deployment` already running on `node` (for anti-affinity)."""
        row = self._row(node)
        hosting = self._replicas.setdefault(deployment, np.zeros(len(self.state), dtype=bool))
        hosting[row] = True

    def _row(self, node: str) -> int:
        try:
            return self.state.index[node]
        except KeyError:
            raise PlacementInputError(f"unknown node {node!r}") from None

    def place(self, requests: Iterable[Request]) -> list[Decision]:
        """Place `requests` in order; returns one decision per request."""
        batch = list(requests)
        engine = self._engine_for(batch)
        decisions = []
        for request in batch:
            shape = shape_of(request)
            choice = engine.place(shape, self._allowed(request))
            if choice.row < 0:
                decisions.append(Decision(request.name, None, rejected=self.rejections(request)))
                continue
            if request.deployment:
                hosting = self._replicas.setdefault(
                    request.deployment, np.zeros(len(self.state), dtype=bool)
                )
                hosting[choice.row] = True
            decisions.append(
                Decision(
                    request.name,
                    self.state.names[choice.row],
                    choice.gpus,
                    choice.score,
                    choice.candidates,
                )
            )
        return decisions

    def _checks(self, request: Request, rows: npt.NDArray[np.int64]) -> list[BoolArray]:
        labels, taints = self._label_taint_masks(request)
        apart = self._anti_affinity(request)
        engine = self._engine_for([request])
        return [
            labels[rows],
            taints[rows],
            np.ones(rows.size, dtype=bool) if apart is None else apart[rows],
            *engine.resource_checks(shape_of(request), rows),
        ]

    def rejections(self, request: Request) -> dict[str, int]:
        """Nodes turned down per filter (each under the first filter it fails)."""
        rows = np.arange(len(self.state))
        undecided = np.ones(rows.size, dtype=bool)
        counts = {}
        for name, passed in zip(FILTERS, self._checks(request, rows), strict=True):
            failing = undecided & ~passed
            counts[name] = int(failing.sum())
            undecided &= passed
        return counts

    def first_failures(self, request: Request) -> list[str | None]:
        """Per node (state order), the first filter it fails for `request`, None if none."""
        rows = np.arange(len(self.state))
        out: list[str | None] = [None] * rows.size
        undecided = np.ones(rows.size, dtype=bool)
        for name, passed in zip(FILTERS, self._checks(request, rows), strict=True):
            for row in np.flatnonzero(undecided & ~passed):
                out[int(row)] = name
            undecided &= passed
        return out

    def scores(self, request: Request) -> dict[str, float]:
        """The policy's final score of every node passing all filters for `request`."""
        engine = self._engine_for([request])
        cache = engine.evaluate(shape_of(request))
        allowed = self._allowed(request)
        mask = cache.feasible if allowed is None else cache.feasible & allowed
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return {}
        if engine.policy.uniform:
            return {self.state.names[int(r)]: 0.0 for r in rows}
        final = engine.policy.normalize(cache.raw[rows])
        return {self.state.names[int(r)]: float(v) for r, v in zip(rows, final, strict=True)}

    def explain(self, request: Request, node: str) -> Explanation:
        """Which filters `node` fails for `request` now, its score and the best node's."""
        row = self._row(node)
        checks = self._checks(request, np.array([row]))
        failed = tuple(name for name, ok in zip(FILTERS, checks, strict=True) if not ok[0])
        engine = self._engine_for([request])
        shape = shape_of(request)
        cache = engine.evaluate(shape)
        allowed = self._allowed(request)
        mask = cache.feasible if allowed is None else cache.feasible & allowed
        feasible_rows = np.flatnonzero(mask)
        score = best = None
        best_node = None
        if feasible_rows.size:
            final = engine.policy.normalize(cache.raw[feasible_rows])
            top = int(np.argmax(final))
            best, best_node = float(final[top]), self.state.names[int(feasible_rows[top])]
            if not failed:
                score = float(final[int(np.flatnonzero(feasible_rows == row)[0])])
        state = self.state
        free = {
            "cpu_milli": int(state.cpu_left[row]),
            "memory_mib": int(state.mem_left[row]),
            "gpu_milli": [int(g) for g in state.gpu_left[row, : state.gpu_count[row]]],
        }
        return Explanation(request.name, node, failed, score, best, best_node, free)


class Placer:
    """Places requests with one policy.

    `workload`: task shapes whose distribution FGD-style policies expect to arrive (default:
    each batch's own requests). `ties`: "first" (deterministic: the first best node in node
    order) or "random". `seed` feeds random ties and the random policy.
    """

    def __init__(
        self,
        policy: str = "fgd",
        workload: Iterable[Request | Shape] | None = None,
        seed: int = 0,
        ties: Literal["first", "random"] = "first",
    ) -> None:
        if policy not in POLICIES:
            raise PlacementInputError(
                f"unknown placement policy {policy!r}; known: {', '.join(POLICIES)}"
            )
        self.policy = policy
        self.seed = seed
        self.ties: Literal["first", "random"] = ties
        self.typical: TypicalShapes | None = None
        if workload is not None:
            shapes = [w if isinstance(w, Shape) else shape_of(w) for w in workload]
            if shapes:
                self.typical = typical_shapes(shapes)

    def session(self, nodes: Sequence[Node]) -> PlacementSession:
        return PlacementSession(nodes, self.policy, self.typical, self.seed, self.ties)

    def place(self, nodes: Sequence[Node], requests: Iterable[Request]) -> list[Decision]:
        """One-shot: place `requests` on fresh `nodes`."""
        return self.session(nodes).place(requests)


def _tolerates_all(tolerations: Sequence[Toleration], node: Node) -> bool:
    return all(
        taint.effect == "PreferNoSchedule" or any(t.tolerates(taint) for t in tolerations)
        for taint in node.taints
    )
