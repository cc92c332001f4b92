"""Open Inference Protocol requests as bytes on disk, for wrk, ghz and vegeta.

Three encodings of the same tensor: REST JSON (the `data` list, as tritonclient and most
clients send it), REST binary (Triton's binary tensor extension: a JSON header with
`binary_data_size`, then the raw bytes; wrk's script frames them) and a serialized gRPC
`ModelInferRequest` with `raw_input_contents` (what tritonclient sends over gRPC).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Payload", "grpc_raw", "rest_binary", "rest_json"]

_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64"}


@dataclass(frozen=True)
class Payload:
    """One request's bytes, written to files that the load generators read."""

    kind: str  # "json", "binary" or "grpc"
    model: str
    header_file: Path  # REST: the JSON document / header; gRPC: the serialized message
    raw_file: Path | None  # REST binary only: the tensor bytes after the header
    size: int  # bytes on the wire per request body

    @property
    def path(self) -> str:
        return f"/v2/models/{self.model}/infer"

    def body(self) -> bytes:
        """The exact request body (for clients other than wrk)."""
        raw = self.raw_file.read_bytes() if self.raw_file is not None else b""
        return self.header_file.read_bytes() + raw

    def header_length(self) -> int | None:
        return self.header_file.stat().st_size if self.raw_file is not None else None


def _tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    return {"name": name, "datatype": _DATATYPES[array.dtype], "shape": list(array.shape)}


def _document(tensor: dict[str, Any], parameters: dict[str, Any] | None) -> dict[str, Any]:
    document: dict[str, Any] = {"inputs": [tensor]}
    if parameters:
        document["parameters"] = parameters
    return document


def rest_json(
    directory: Path,
    model: str,
    input_name: str,
    array: np.ndarray,
    parameters: dict[str, Any] | None = None,
    tag: str = "",
) -> Payload:
    tensor = _tensor(input_name, array)
    # Python floats of the float32 values, as json.dumps(array.tolist()) writes them.
    tensor["data"] = array.reshape(-1).tolist()
    data = json.dumps(_document(tensor, parameters), separators=(",", ":")).encode()
    path = directory / f"{model}{tag}.json"
    path.write_bytes(data)
    return Payload("json", model, path, None, len(data))


def rest_binary(
    directory: Path,
    model: str,
    input_name: str,
    array: np.ndarray,
    parameters: dict[str, Any] | None = None,
    tag: str = "",
) -> Payload:
    raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    tensor = _tensor(input_name, array)
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(_document(tensor, parameters), separators=(",", ":")).encode()
    header_path = directory / f"{model}{tag}.binheader.json"
    raw_path = directory / f"{model}{tag}.raw"
    header_path.write_bytes(header)
    raw_path.write_bytes(raw)
    return Payload("binary", model, header_path, raw_path, len(header) + len(raw))


def grpc_raw(
    directory: Path,
    model: str,
    input_name: str,
    array: np.ndarray,
    timeout_us: int = 0,
    tag: str = "",
) -> Payload:
    from inferbridge.protocol.generated import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name = input_name
    tensor.datatype = _DATATYPES[array.dtype]
    tensor.shape.extend(array.shape)
    request.raw_input_contents.append(np.ascontiguousarray(array).astype("<f4").tobytes())
    if timeout_us:
        request.parameters["timeout"].int64_param = timeout_us
    data = request.SerializeToString()
    path = directory / f"{model}{tag}.grpc.bin"
    path.write_bytes(data)
    return Payload("grpc", model, path, None, len(data))
