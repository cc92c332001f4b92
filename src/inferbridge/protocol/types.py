"""Transport-neutral request and response types: named numpy arrays plus OIP metadata.

Plain slotted dataclasses on purpose: they are built on every request, and validating
large tensor lists through a schema library costs more than the model call itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "OutputTensor",
    "Parameters",
    "RequestedOutput",
    "TensorSpec",
]

Parameters = dict[str, Any]
"""OIP parameters: names mapped to str, int, float or bool."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor a model takes or returns; -1 in `shape` is a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != len(self.shape):
            return False
        # A plain loop: this runs for every tensor of every request, and all() over a
        # generator costs several times more.
        for want, got in zip(self.shape, shape):  # noqa: B905, SIM110 - lengths checked
            if want != -1 and want != got:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for, with its per-output parameters (e.g. binary_data)."""

    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    """A decoded inference request: inputs by name, in wire order, with wire datatypes."""

    model_name: str
    model_version: str | None
    inputs: dict[str, np.ndarray[Any, Any]]
    input_datatypes: dict[str, str]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    deadline: float | None = None
    """Absolute deadline in time.monotonic() seconds, set by the transport (gRPC deadline)."""
    caller_gone: Callable[[], Awaitable[object]] | None = None
    """Set by transports that cannot cancel the handler themselves (HTTP): returns an
    awaitable that completes when the client disconnects. Started only if the request waits."""
    header: Callable[[str], str | None] | None = None
    """Set by the transport: the value of a request header / gRPC metadata entry by its
    lower-case name (read only when a rollout routes by a header)."""


@dataclass(slots=True)
class OutputTensor:
    name: str
    datatype: str
    data: np.ndarray[Any, Any]
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[OutputTensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
