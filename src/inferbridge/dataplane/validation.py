"""Check a decoded request against a model version's declared inputs and outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from inferbridge.errors import InvalidInput
from inferbridge.protocol.types import InferenceRequest, TensorSpec

__all__ = ["validate_inputs", "validate_requested_outputs"]


def validate_inputs(
    request: InferenceRequest, specs: list[TensorSpec], max_batch_size: int
) -> dict[str, np.ndarray[Any, Any]]:
    """The request's inputs in the model's order; InvalidInput says what was expected."""
    expected = {s.name for s in specs}
    unknown = [name for name in request.inputs if name not in expected]
    if unknown:
        raise InvalidInput(
            f"model '{request.model_name}' has no input {', '.join(repr(n) for n in unknown)}; "
            f"its inputs are {_describe(specs)}"
        )
    ordered: dict[str, np.ndarray[Any, Any]] = {}
    batch: int | None = None
    for spec in specs:
        array = request.inputs.get(spec.name)
        if array is None:
            raise InvalidInput(
                f"model '{request.model_name}' needs input '{spec.name}' "
                f"({spec.datatype} {list(spec.shape)}); the request did not send it"
            )
        datatype = request.input_datatypes[spec.name]
        if datatype != spec.datatype:
            raise InvalidInput(
                f"input '{spec.name}': datatype {datatype} does not match the model's "
                f"{spec.datatype}"
            )
        if not spec.accepts_shape(array.shape):
            raise InvalidInput(
                f"input '{spec.name}': shape {list(array.shape)} does not match the model's "
                f"{list(spec.shape)} (-1 is any size)"
            )
        if max_batch_size > 0:
            rows = array.shape[0]
            if batch is not None and rows != batch:
                raise InvalidInput(
                    f"inputs disagree on the batch size: '{spec.name}' has {rows} rows, "
                    f"earlier inputs {batch}"
                )
            batch = rows
            if rows > max_batch_size:
                raise InvalidInput(
                    f"input '{spec.name}': batch of {rows} is over the model's "
                    f"max_batch_size {max_batch_size}"
                )
        ordered[spec.name] = array
    return ordered


def validate_requested_outputs(request: InferenceRequest, specs: list[TensorSpec]) -> None:
    if not request.outputs:
        return
    known = {s.name for s in specs}
    for output in request.outputs:
        if output.name not in known:
            raise InvalidInput(
                f"model '{request.model_name}' has no output '{output.name}'; "
                f"its outputs are {_describe(specs)}"
            )


def _describe(specs: list[TensorSpec]) -> str:
    return ", ".join(f"'{s.name}' ({s.datatype} {list(s.shape)})" for s in specs)
