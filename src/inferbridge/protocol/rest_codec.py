"""REST codec: OIP JSON bodies and Triton's binary tensor data extension."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from inferbridge.errors import InvalidInput
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.shared_memory import SharedMemoryRegistry, has_shared_memory
from inferbridge.protocol.tensors import (
    array_from_list,
    array_from_raw,
    array_to_raw,
    check_datatype,
    check_shape,
    duplicate_input,
    duplicate_output,
)
from inferbridge.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestedOutput,
    TensorSpec,
)

__all__ = [
    "decode_headerless_request",
    "decode_infer_request",
    "encode_infer_response",
    "parse_json_body",
]

_NUMPY_JSON = orjson.OPT_SERIALIZE_NUMPY


def parse_json_body(body: bytes | memoryview) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in request body: {exc}") from None


def decode_infer_request(
    body: bytes,
    header_length: int | None,
    model_name: str,
    model_version: str | None,
    shared_memory: SharedMemoryRegistry | None = None,
) -> InferenceRequest:
    """Decode an infer body; `header_length` is Inference-Header-Content-Length, if sent;
    inputs naming a shared memory region are read from `shared_memory`."""
    if header_length is None:
        header_bytes: bytes | memoryview = body
        binary = memoryview(b"")
    else:
        if header_length < 0:
            raise InvalidInput(f"Inference-Header-Content-Length is negative ({header_length})")
        if header_length > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {header_length} but the body has only "
                f"{len(body)} bytes"
            )
        view = memoryview(body)
        header_bytes, binary = view[:header_length], view[header_length:]
    document = parse_json_body(header_bytes)
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request must have a non-empty 'inputs' list")

    inputs: dict[str, np.ndarray[Any, Any]] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for position, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise InvalidInput(f"inputs[{position}] must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"inputs[{position}] needs a string 'name'")
        if name in inputs:
            raise duplicate_input(name)
        datatype = check_datatype(name, item.get("datatype"))
        shape = check_shape(name, item.get("shape"))
        parameters = item.get("parameters")  # usually absent: no error text to build
        size = None
        if parameters is not None:
            size = _parameters(parameters, f"input '{name}'").get("binary_data_size")
        if parameters is not None and has_shared_memory(parameters):
            if size is not None or "data" in item:
                raise InvalidInput(
                    f"input '{name}' is in shared memory: it must not carry 'data' or "
                    "'binary_data_size' as well"
                )
            inputs[name] = _registry(shared_memory).read_input(name, datatype, shape, parameters)
        elif size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(
                    f"input '{name}': binary_data_size must be a non-negative integer"
                )
            if "data" in item:
                raise InvalidInput(
                    f"input '{name}' carries both 'data' and a binary_data_size parameter; "
                    "send its data one way"
                )
            if offset + size > len(binary):
                raise InvalidInput(
                    f"unexpected size for input '{name}', expecting "
                    f"{offset + size - len(binary)} additional bytes for model '{model_name}': "
                    f"its binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} binary bytes left)"
                )
            inputs[name] = array_from_raw(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in item:
            inputs[name] = array_from_list(name, datatype, shape, item["data"])
        else:
            raise InvalidInput(
                f"input '{name}' has neither 'data' nor a 'binary_data_size' parameter"
            )
        datatypes[name] = datatype
    if offset != len(binary):
        raise InvalidInput(
            f"unexpected additional input data for model '{model_name}': the body carries "
            f"{len(binary)} bytes of binary tensor data but the inputs' binary_data_size "
            f"add up to {offset}"
        )

    outputs: list[RequestedOutput] | None = None
    raw_outputs = document.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for position, out in enumerate(raw_outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str) or not out["name"]:
                raise InvalidInput(f"outputs[{position}] needs a string 'name'")
            if any(o.name == out["name"] for o in outputs):
                raise duplicate_output(out["name"])
            outputs.append(
                RequestedOutput(
                    out["name"], _parameters(out.get("parameters"), f"output {out['name']!r}")
                )
            )
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    return InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        input_datatypes=datatypes,
        id=request_id,
        parameters=_parameters(document.get("parameters"), "request"),
        outputs=outputs,
    )


def decode_headerless_request(
    body: bytes,
    model_name: str,
    model_version: str | None,
    inputs: list[TensorSpec],
    max_batch_size: int = 0,
) -> InferenceRequest:
    """Triton's raw binary request (`Inference-Header-Content-Length: 0`): the whole body is
    the data of the model's single input. A batching model gets a batch of 1; of the other
    dimensions one may be variable, and follows from the byte count. A BYTES input must
    have shape [1] (after the batch dimension) and the body is its one element. Every
    output is answered in binary."""
    if len(inputs) != 1:
        raise InvalidInput(
            f"Raw request must only have 1 input (found 1) to be deduced but got "
            f"{len(inputs)} inputs in '{model_name}' model"
        )
    spec = inputs[0]
    batched = max_batch_size > 0 and len(spec.shape) > 0
    dims = spec.shape[1:] if batched else spec.shape
    prefix = (1,) if batched else ()
    if spec.datatype == "BYTES":
        if dims != (1,):
            raise InvalidInput(
                f"For BYTE datatype raw input '{spec.name}', the model must have input shape "
                f"[1]; '{model_name}' has {list(spec.shape)}"
                + (" (batch dimension included)" if batched else "")
            )
        element = np.empty(1, dtype=object)
        element[0] = bytes(body)
        array = element.reshape((*prefix, 1))
    else:
        if dims.count(-1) > 1:
            raise InvalidInput(
                f"The shape of the raw input '{spec.name}' can not be deduced because there "
                f"are more than one variable-sized dimension in {list(spec.shape)}"
            )
        itemsize = dtype_of(spec.datatype).itemsize
        known = math.prod(d for d in dims if d != -1) * itemsize
        variable = -1 in dims
        fits = known > 0 and len(body) % known == 0 if variable else len(body) == known
        if not fits:
            raise InvalidInput(
                f"cannot derive the shape of raw input '{spec.name}' ({spec.datatype} "
                f"{list(spec.shape)}{', batch of 1' if batched else ''}) from a body of "
                f"{len(body)} bytes; send a JSON header"
            )
        shape = tuple(len(body) // known if d == -1 else d for d in dims)
        array = array_from_raw(spec.name, spec.datatype, (*prefix, *shape), body)
    return InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        inputs={spec.name: array},
        input_datatypes={spec.name: spec.datatype},
        parameters={"binary_data_output": True},
    )


def encode_infer_response(
    response: InferenceResponse,
    request: InferenceRequest,
    shared_memory: SharedMemoryRegistry | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when any output travels binary, the JSON header's length.

    As Triton's server does (and its clients expect), `binary_data_output` applies only when
    the request lists no outputs; a listed output is binary only with `binary_data: true`.
    (Triton's protocol document lets `binary_data_output` cover listed outputs as well.)"""
    all_binary = bool(request.parameters.get("binary_data_output", False))
    wanted = {o.name: o.parameters for o in request.outputs} if request.outputs else None
    chunks: list[bytes] = []
    outputs: list[dict[str, Any]] = []
    for tensor in response.outputs:
        binary = all_binary
        if wanted is not None and tensor.name in wanted:
            binary = bool(wanted[tensor.name].get("binary_data", False))
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.data.shape),
        }
        parameters = tensor.parameters
        placed = wanted.get(tensor.name) if wanted is not None else None
        if placed and has_shared_memory(placed):
            # Written into the client's region: the response carries only its metadata.
            written = _registry(shared_memory).write_output(tensor, placed)
            entry["parameters"] = {**parameters, **written}
            outputs.append(entry)
            continue
        if binary:
            raw = array_to_raw(tensor.data, tensor.datatype)
            parameters = {**parameters, "binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(tensor.name, tensor.datatype, tensor.data)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    header = orjson.dumps(document, option=_NUMPY_JSON)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _json_data(name: str, datatype: str, data: np.ndarray[Any, Any]) -> Any:
    if datatype == "BYTES":
        try:
            return [
                x.decode() if isinstance(x, bytes) else str(x) for x in data.reshape(-1).tolist()
            ]
        except UnicodeDecodeError:
            raise InvalidInput(
                f"output '{name}' holds bytes that are not UTF-8 text; request it with "
                "the binary_data parameter"
            ) from None
    return np.ascontiguousarray(data).reshape(-1)


def _registry(shared_memory: SharedMemoryRegistry | None) -> SharedMemoryRegistry:
    if shared_memory is None:
        raise InvalidInput("shared memory is not available on this endpoint")
    return shared_memory


# Flags of the binary tensor extension: a wrong type is refused rather than read by Python
# truthiness ("false" would be true). binary_data_size and the shared memory parameters are
# checked where they are read, in Triton's words.
_BOOLEAN_PARAMETERS = frozenset({"binary_data", "binary_data_output"})


def _parameters(value: object, where: str) -> Parameters:
    """OIP parameters: an object whose values are strings, numbers or booleans."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    for key, item in value.items():
        if type(item) not in _SCALARS:  # exact types: the document is orjson's
            raise InvalidInput(
                f"{where}: parameter '{key}' must be a string, number or boolean, "
                f"got {_json_kind(item)}"
            )
        if key in _BOOLEAN_PARAMETERS and type(item) is not bool:
            raise InvalidInput(f"{where}: parameter '{key}' must be a boolean, got {item!r}")
    return value


_SCALARS = frozenset({str, int, float, bool})


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__
