"""gRPC codec: ModelInferRequest/Response <-> InferenceRequest/Response."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from inferbridge.errors import InvalidInput
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.generated import grpc_service_pb2 as pb
from inferbridge.protocol.shared_memory import SharedMemoryRegistry, has_shared_memory
from inferbridge.protocol.tensors import (
    array_from_raw,
    array_to_raw,
    check_datatype,
    check_shape,
    duplicate_input,
    duplicate_output,
    element_count,
)
from inferbridge.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestedOutput,
)

__all__ = ["decode_model_infer_request", "encode_model_infer_response", "set_parameters"]

# Which InferTensorContents field carries each datatype when raw contents are not used.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_model_infer_request(
    message: pb.ModelInferRequest, shared_memory: SharedMemoryRegistry | None = None
) -> InferenceRequest:
    """Inputs naming a shared memory region are read from `shared_memory` (and have no
    buffer in raw_input_contents, as Triton's clients send them)."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs) and len(raw) != _by_value(message):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} buffers for {len(message.inputs)} inputs; "
            "send one buffer per input, in input order"
        )
    if not message.inputs:
        raise InvalidInput("request must have at least one input")
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    datatypes: dict[str, str] = {}
    placed = 0  # inputs so far in shared memory (without a raw buffer)
    for position, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise InvalidInput(f"inputs[{position}] needs a name")
        if name in inputs:
            raise duplicate_input(name)
        datatype = check_datatype(name, tensor.datatype)
        shape = check_shape(name, list(tensor.shape))
        if tensor.parameters and has_shared_memory(tensor.parameters):
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input '{name}' is in shared memory: it must not carry contents as well"
                )
            inputs[name] = _registry(shared_memory).read_input(
                name, datatype, shape, get_parameters(tensor.parameters)
            )
            placed += 1
        elif raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input '{name}' sets contents while the request uses raw_input_contents; "
                    "when the raw fields are used no tensor may set contents"
                )
            inputs[name] = array_from_raw(name, datatype, shape, raw[position - placed])
        else:
            inputs[name] = _from_contents(name, datatype, shape, tensor.contents)
        datatypes[name] = datatype
    outputs: list[RequestedOutput] = []
    for position, o in enumerate(message.outputs):
        if not o.name:
            raise InvalidInput(f"outputs[{position}] needs a name")
        if any(seen.name == o.name for seen in outputs):
            raise duplicate_output(o.name)
        outputs.append(RequestedOutput(o.name, get_parameters(o.parameters)))
    return InferenceRequest(
        model_name=message.model_name,
        model_version=message.model_version or None,
        inputs=inputs,
        input_datatypes=datatypes,
        id=message.id or None,
        parameters=get_parameters(message.parameters),
        outputs=outputs or None,
    )


def encode_model_infer_response(
    response: InferenceResponse,
    request: InferenceRequest | None = None,
    shared_memory: SharedMemoryRegistry | None = None,
) -> pb.ModelInferResponse:
    """Outputs that `request` asks for in a shared memory region are written there and
    carry no raw_output_contents (an empty one when other outputs travel in the message,
    so that buffers stay in output order)."""
    placed: dict[str, Any] = {}
    if request is not None and request.outputs:
        placed = {o.name: o.parameters for o in request.outputs if has_shared_memory(o.parameters)}
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    set_parameters(message.parameters, response.parameters)
    for tensor in response.outputs:
        out = message.outputs.add(
            name=tensor.name, datatype=tensor.datatype, shape=tensor.data.shape
        )
        if tensor.name in placed:
            written = _registry(shared_memory).write_output(tensor, placed[tensor.name])
            set_parameters(out.parameters, {**tensor.parameters, **written})
            if len(placed) < len(response.outputs):
                message.raw_output_contents.append(b"")
            continue
        set_parameters(out.parameters, tensor.parameters)
        message.raw_output_contents.append(array_to_raw(tensor.data, tensor.datatype))
    return message


def _by_value(message: pb.ModelInferRequest) -> int:
    """How many inputs travel in the message (not in shared memory)."""
    return len([t for t in message.inputs if not has_shared_memory(t.parameters)])


def _registry(shared_memory: SharedMemoryRegistry | None) -> SharedMemoryRegistry:
    if shared_memory is None:
        raise InvalidInput("shared memory is not available on this endpoint")
    return shared_memory


def get_parameters(parameters: Mapping[str, pb.InferParameter]) -> Parameters:
    result: Parameters = {}
    for key, value in parameters.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            result[key] = getattr(value, which)
    return result


def set_parameters(target: Any, values: Parameters) -> None:
    for key, value in values.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        else:
            target[key].string_param = str(value)


def _from_contents(
    name: str, datatype: str, shape: tuple[int, ...], contents: pb.InferTensorContents
) -> np.ndarray[Any, Any]:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input '{name}': {datatype} data must travel in raw_input_contents")
    stray = [f.name for f, _ in contents.ListFields() if f.name != field]
    if stray:
        raise InvalidInput(
            f"input '{name}': {datatype} data travels in {field}, but the request sets "
            f"{', '.join(stray)}"
        )
    values = list(getattr(contents, field))
    count = element_count(shape)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {count} elements, "
            f"{field} holds {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    dtype = dtype_of(datatype)
    if dtype.kind in "iu" and values:
        info = np.iinfo(dtype)  # type: ignore[type-var]
        if min(values) < info.min or max(values) > info.max:
            raise InvalidInput(
                f"input '{name}': values outside the range of {datatype} [{info.min}, {info.max}]"
            )
    return np.asarray(values, dtype=dtype).reshape(shape)
