"""The conformance table (cases.json) through every Python client.

Clients: tritonclient HTTP with the binary tensor extension, tritonclient HTTP with JSON
tensors, tritonclient gRPC (raw contents), and plain JSON over HTTP with httpx. The Go
clients run the same table in clients/go (conformance_test.go). Every client must see the
same outputs (exactly, after conversion to the datatype) and the same error class.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.serverproc import ServerProcess

CASES_FILE = Path(__file__).with_name("cases.json")
CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text())["cases"]

_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
# REST statuses and gRPC codes as one vocabulary of error classes (OIP.md's table).
_HTTP_CLASS = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass
class Output:
    datatype: str
    shape: list[int]
    data: np.ndarray[Any, Any]


@dataclass
class Failure:
    error_class: str
    message: str


Result = dict[str, Output] | Failure


def to_array(datatype: str, shape: list[int], data: list[Any]) -> np.ndarray[Any, Any]:
    """A case's flat `data` as a numpy array of the datatype (BYTES as UTF-8 bytes)."""
    if datatype == "BYTES":
        array = np.empty(len(data), dtype=np.object_)
        array[:] = [s.encode() if isinstance(s, str) else bytes(s) for s in data]
        return array.reshape(shape)
    return np.array(data, dtype=_NUMPY[datatype]).reshape(shape)


def _bytes_elements(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out = np.empty(array.size, dtype=np.object_)
    out[:] = [x.encode() if isinstance(x, str) else bytes(x) for x in array.reshape(-1)]
    return out.reshape(array.shape)


# -- the clients ---------------------------------------------------------------------------


def run_triton_http(server: ServerProcess, case: dict[str, Any], binary: bool) -> Result:
    client = triton_http.InferenceServerClient(server.http_url)
    try:
        inputs = []
        for spec in case["inputs"]:
            tensor = triton_http.InferInput(spec["name"], spec["shape"], spec["datatype"])
            tensor.set_data_from_numpy(
                to_array(spec["datatype"], spec["shape"], spec["data"]), binary_data=binary
            )
            inputs.append(tensor)
        # Without requested outputs tritonclient always asks for binary outputs.
        outputs = [
            triton_http.InferRequestedOutput(name, binary_data=binary)
            for name in case.get("outputs") or ()
        ] or None
        try:
            result = client.infer(
                case["model"], inputs, model_version=case.get("model_version", ""), outputs=outputs
            )
        except InferenceServerException as exc:
            return Failure(_HTTP_CLASS.get(int(exc.status() or 0), "UNKNOWN"), exc.message())
        found: dict[str, Output] = {}
        for out in result.get_response()["outputs"]:
            found[out["name"]] = Output(
                out["datatype"], list(out["shape"]), result.as_numpy(out["name"])
            )
        return found
    finally:
        client.close()


def run_triton_grpc(server: ServerProcess, case: dict[str, Any]) -> Result:
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    try:
        inputs = []
        for spec in case["inputs"]:
            tensor = triton_grpc.InferInput(spec["name"], spec["shape"], spec["datatype"])
            tensor.set_data_from_numpy(to_array(spec["datatype"], spec["shape"], spec["data"]))
            inputs.append(tensor)
        outputs = [triton_grpc.InferRequestedOutput(n) for n in case.get("outputs") or ()] or None
        try:
            result = client.infer(
                case["model"], inputs, model_version=case.get("model_version", ""), outputs=outputs
            )
        except InferenceServerException as exc:
            return Failure(str(exc.status()).removeprefix("StatusCode."), exc.message())
        found: dict[str, Output] = {}
        for out in result.get_response().outputs:
            found[out.name] = Output(out.datatype, list(out.shape), result.as_numpy(out.name))
        return found
    finally:
        client.close()


def run_plain_json(server: ServerProcess, case: dict[str, Any]) -> Result:
    body: dict[str, Any] = {"inputs": case["inputs"]}
    if case.get("outputs"):
        body["outputs"] = [{"name": n} for n in case["outputs"]]
    path = f"/v2/models/{case['model']}"
    if case.get("model_version"):
        path += f"/versions/{case['model_version']}"
    response = httpx.post(f"{server.base_url}{path}/infer", json=body, timeout=30)
    document = response.json()
    if response.status_code != 200:
        return Failure(_HTTP_CLASS.get(response.status_code, "UNKNOWN"), document["error"])
    return {
        out["name"]: Output(
            out["datatype"], out["shape"], to_array(out["datatype"], out["shape"], out["data"])
        )
        for out in document["outputs"]
    }


CLIENTS: dict[str, Callable[[ServerProcess, dict[str, Any]], Result]] = {
    "triton_http_binary": lambda s, c: run_triton_http(s, c, binary=True),
    "triton_http_json": lambda s, c: run_triton_http(s, c, binary=False),
    "triton_grpc": run_triton_grpc,
    "plain_json": run_plain_json,
}


# -- the checks ----------------------------------------------------------------------------


def check(case: dict[str, Any], result: Result) -> None:
    expect = case["expect"]
    if "error" in expect:
        assert isinstance(result, Failure), f"expected {expect['error']}, got outputs {result}"
        assert result.error_class == expect["error"], result.message
        assert expect["message_contains"] in result.message
        return
    assert not isinstance(result, Failure), f"unexpected {result.error_class}: {result.message}"
    wanted = expect["outputs"]
    assert sorted(result) == sorted(o["name"] for o in wanted)
    for out in wanted:
        got = result[out["name"]]
        assert got.datatype == out["datatype"], out["name"]
        assert got.shape == out["shape"], out["name"]
        want = to_array(out["datatype"], out["shape"], out["data"])
        data = got.data
        if out["datatype"] == "BYTES":
            data = _bytes_elements(data)
        else:
            assert data.dtype == want.dtype, (out["name"], data.dtype)
        assert data.shape == want.shape, out["name"]
        assert np.array_equal(data, want), (out["name"], data, want)


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(conformance_server: ServerProcess, client: str, case: dict[str, Any]) -> None:
    check(case, CLIENTS[client](conformance_server, case))


def test_cases_cover_every_datatype() -> None:
    """The table keeps exercising every datatype, and errors of each required class."""
    seen = {i["datatype"] for c in CASES for i in c["inputs"] if "outputs" in c["expect"]}
    assert seen == set(_NUMPY)
    errors = {c["expect"]["error"] for c in CASES if "error" in c["expect"]}
    assert {"NOT_FOUND", "INVALID_ARGUMENT"} <= errors


ERROR_CASES = [c for c in CASES if "error" in c["expect"]]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c["name"] for c in ERROR_CASES])
def test_error_message_is_the_same_for_every_client(
    conformance_server: ServerProcess, case: dict[str, Any]
) -> None:
    """Each client shows the server's own message, unchanged."""
    results = {name: run(conformance_server, case) for name, run in CLIENTS.items()}
    messages = {name: r.message for name, r in results.items() if isinstance(r, Failure)}
    assert len(messages) == len(CLIENTS), results
    assert len(set(messages.values())) == 1, messages


def test_bytes_that_are_not_utf8_for_a_text_model_are_invalid_input(
    conformance_server: ServerProcess,
) -> None:
    """ONNX string tensors hold text: undecodable bytes are the client's error, not a 500."""
    raw = struct.pack("<I", 2) + b"\xff\xfe"
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "BYTES",
                    "shape": [1, 1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    response = httpx.post(
        f"{conformance_server.base_url}/v2/models/identity_bytes/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "not UTF-8" in response.json()["error"]
    client = triton_grpc.InferenceServerClient(conformance_server.grpc_url)
    try:
        tensor = triton_grpc.InferInput("INPUT0", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[b"\xff\xfe"]], dtype=object))
        with pytest.raises(InferenceServerException, match="not UTF-8") as info:
            client.infer("identity_bytes", [tensor])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        client.close()
