"""What the placement engine takes and gives back: nodes, requests and decisions.

Units follow the scheduler literature and the openb trace: CPU in milli-cores, memory in
MiB, GPU in milli-GPU (1000 = one whole GPU). A request asks either for a share of one GPU
(`gpu_milli` < 1000, `gpus` = 1) or for whole GPUs (`gpu_milli` = 1000, `gpus` >= 1), or
for no GPU at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from inferbridge.errors import InvalidInput

__all__ = [
    "MILLI",
    "Decision",
    "Node",
    "PlacementInputError",
    "Request",
    "Taint",
    "Toleration",
]

MILLI = 1000
"""Milli-GPU in one whole GPU."""

TaintEffect = Literal["NoSchedule", "NoExecute", "PreferNoSchedule"]


class PlacementInputError(InvalidInput):
    """A node, request, trace row or extender payload is malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class Taint:
    """A Kubernetes-style taint: a node repels requests that do not tolerate it."""

    key: str
    value: str = ""
    effect: TaintEffect = "NoSchedule"


@dataclass(frozen=True, slots=True)
class Toleration:
    """Tolerates taints with `key` (any key when empty) and, with operator Equal, `value`."""

    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: str = ""  # empty: every effect

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


@dataclass(frozen=True, slots=True)
class Node:
    """A machine: capacities, GPUs of one type, labels and taints.

    `gpu_free` gives the free milli-GPU of each GPU (device index order) when some are
    already in use; by default every GPU is free. `cpu_free_milli` / `memory_free_mib`
    likewise default to the capacity.
    """

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int = 0
    gpu_type: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    gpu_free: tuple[int, ...] | None = None
    cpu_free_milli: int | None = None
    memory_free_mib: int | None = None

    def __post_init__(self) -> None:
        where = f"node {self.name!r}"
        if not self.name:
            raise PlacementInputError("node: name must not be empty")
        _non_negative(where, "cpu_milli", self.cpu_milli)
        _non_negative(where, "memory_mib", self.memory_mib)
        _non_negative(where, "gpus", self.gpus)
        if self.gpus and not self.gpu_type:
            raise PlacementInputError(f"{where}: gpu_type is required when gpus > 0")
        if self.gpu_free is not None:
            if len(self.gpu_free) != self.gpus:
                raise PlacementInputError(
                    f"{where}: gpu_free has {len(self.gpu_free)} entries for {self.gpus} GPUs"
                )
            for index, free in enumerate(self.gpu_free):
                if not isinstance(free, int) or not 0 <= free <= MILLI:
                    raise PlacementInputError(
                        f"{where}: gpu_free[{index}] must be 0-{MILLI} milli-GPU, got {free!r}"
                    )
        for name, left, cap in (
            ("cpu_free_milli", self.cpu_free_milli, self.cpu_milli),
            ("memory_free_mib", self.memory_free_mib, self.memory_mib),
        ):
            if left is not None:
                _non_negative(where, name, left)
                if left > cap:
                    raise PlacementInputError(f"{where}: {name} {left} exceeds capacity {cap}")


@dataclass(frozen=True, slots=True)
class Request:
    """One replica (or task) to place.

    `gpu_types` lists the GPU types it may run on (empty: any). `node_selector` labels must
    all match. With `deployment` set and `anti_affinity` true, two replicas of the same
    deployment never share a node.
    """

    name: str
    cpu_milli: int
    memory_mib: int = 0
    gpus: int = 0
    gpu_milli: int = 0
    gpu_types: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    deployment: str = ""
    anti_affinity: bool = False

    def __post_init__(self) -> None:
        where = f"request {self.name!r}"
        _non_negative(where, "cpu_milli", self.cpu_milli)
        _non_negative(where, "memory_mib", self.memory_mib)
        _non_negative(where, "gpus", self.gpus)
        _non_negative(where, "gpu_milli", self.gpu_milli)
        if self.gpus == 0 and self.gpu_milli:
            raise PlacementInputError(f"{where}: gpu_milli {self.gpu_milli} without gpus")
        if self.gpus and not 0 < self.gpu_milli <= MILLI:
            raise PlacementInputError(
                f"{where}: gpu_milli must be 1-{MILLI} when gpus > 0, got {self.gpu_milli}"
            )
        if self.gpus > 1 and self.gpu_milli != MILLI:
            raise PlacementInputError(
                f"{where}: a share of a GPU ({self.gpu_milli} milli) is for one GPU only, "
                f"not {self.gpus}"
            )

    @classmethod
    def whole(cls, name: str, cpu_milli: int, memory_mib: int, gpus: int, **kw: object) -> Request:
        """A request for `gpus` whole GPUs."""
        return cls(name, cpu_milli, memory_mib, gpus, MILLI if gpus else 0, **kw)  # type: ignore[arg-type]

    @classmethod
    def share(
        cls, name: str, cpu_milli: int, memory_mib: int, gpu_milli: int, **kw: object
    ) -> Request:
        """A request for a share (`gpu_milli`) of one GPU."""
        return cls(name, cpu_milli, memory_mib, 1, gpu_milli, **kw)  # type: ignore[arg-type]

    @property
    def total_gpu_milli(self) -> int:
        return self.gpus * self.gpu_milli

    @property
    def is_share(self) -> bool:
        return self.gpus == 1 and self.gpu_milli < MILLI


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request went, or why it went nowhere.

    `node` is None when it fits nowhere; `rejected` then counts, per filter, the nodes that
    filter turned down (each node counted under the first filter it fails, like
    kube-scheduler's "0/N nodes are available" message). `gpus` are the device indices
    given to the request; `score` is the winning node's score and `candidates` how many
    nodes passed every filter.
    """

    request: str
    node: str | None
    gpus: tuple[int, ...] = ()
    score: float | None = None
    candidates: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)

    @property
    def placed(self) -> bool:
        return self.node is not None

    def reason(self) -> str:
        """A one-line summary, kube-scheduler style."""
        if self.node is not None:
            return f"{self.request} -> {self.node} gpus={list(self.gpus)} score={self.score}"
        total = sum(self.rejected.values())
        parts = ", ".join(f"{count} {name}" for name, count in self.rejected.items() if count)
        return f"{self.request}: 0/{total} nodes are available: {parts}"


def _non_negative(where: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlacementInputError(f"{where}: {name} must be a non-negative integer, got {value!r}")
