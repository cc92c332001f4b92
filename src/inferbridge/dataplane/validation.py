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
            f"unexpected inference input '{unknown[0]}' for model '{request.model_name}': "
            f"the model has no input {', '.join(repr(n) for n in unknown)}; "
            f"its inputs are {_describe(specs)}"
        )
    ordered: dict[str, np.ndarray[Any, Any]] = {}
    batch: int | None = None
    for spec in specs:
        array = request.inputs.get(spec.name)
        if array is None:
            raise InvalidInput(
                f"expected {len(specs)} inputs but got {len(request.inputs)} inputs for model "
                f"'{request.model_name}': it needs input '{spec.name}' "
                f"({spec.datatype} {list(spec.shape)}), which the request did not send"
            )
        datatype = request.input_datatypes[spec.name]
        if datatype != spec.datatype:
            raise InvalidInput(
                f"inference input '{spec.name}' data-type is '{datatype}', but model "
                f"'{request.model_name}' expects '{spec.datatype}'; send it with datatype "
                f"{spec.datatype}"
            )
        if not spec.accepts_shape(array.shape):
            raise InvalidInput(
                f"unexpected shape for input '{spec.name}' for model '{request.model_name}'. "
                f"Expected {_dims(spec.shape)}, got {_dims(array.shape)} (-1 is any size)"
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
                    f"inference request batch-size must be <= {max_batch_size} for "
                    f"'{request.model_name}': input '{spec.name}' has a batch of {rows}"
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
                f"unexpected inference output '{output.name}' for model "
                f"'{request.model_name}': the model has no output '{output.name}'; "
                f"its outputs are {_describe(specs)}"
            )


def _dims(shape: tuple[int, ...]) -> str:
    # Triton's notation for dimensions: [-1,4].
    return "[" + ",".join(str(d) for d in shape) + "]"


def _describe(specs: list[TensorSpec]) -> str:
    return ", ".join(f"'{s.name}' ({s.datatype} {list(s.shape)})" for s in specs)
