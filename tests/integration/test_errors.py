"""OIP.md's error table over REST and gRPC: clear 4xx / non-INTERNAL statuses with a message,
and the server keeps serving afterwards."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.serverproc import ServerProcess

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def rest(rest_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rest_server.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def stub(grpc_server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _input(**overrides: object) -> dict[str, object]:
    tensor: dict[str, object] = {
        "name": "input",
        "datatype": "FP32",
        "shape": [1, 4],
        "data": IRIS_ROW,
    }
    tensor.update(overrides)
    return tensor


REST_CASES = [
    (
        "unknown model",
        "/v2/models/nope/infer",
        {"inputs": [_input()]},
        404,
        "Request for unknown model: 'nope' is not found",
    ),
    (
        "unknown version",
        "/v2/models/iris_onnx/versions/9/infer",
        {"inputs": [_input()]},
        404,
        "no version '9'",
    ),
    (
        "wrong input name",
        "/v2/models/iris_onnx/infer",
        {"inputs": [_input(name="x")]},
        400,
        "has no input 'x'",
    ),
    ("missing input", "/v2/models/iris_onnx/infer", {"inputs": []}, 400, "non-empty 'inputs'"),
    (
        "wrong datatype",
        "/v2/models/iris_onnx/infer",
        {"inputs": [_input(datatype="FP64")]},
        400,
        "data-type is 'FP64', but model 'iris_onnx' expects 'FP32'",
    ),
    (
        "wrong shape",
        "/v2/models/iris_onnx/infer",
        {"inputs": [_input(shape=[2, 2])]},
        400,
        "unexpected shape for input 'input' for model 'iris_onnx'. Expected [-1,4], got [2,2]",
    ),
    (
        "element count",
        "/v2/models/iris_onnx/infer",
        {"inputs": [_input(shape=[2, 4])]},
        400,
        "needs 8 elements, the data holds 4",
    ),
    (
        "strings for FP32",
        "/v2/models/iris_onnx/infer",
        {"inputs": [_input(data=["a", "b", "c", "d"])]},
        400,
        "expected FP32",
    ),
    (
        "unknown output",
        "/v2/models/iris_onnx/infer",
        {"inputs": [_input()], "outputs": [{"name": "nope"}]},
        400,
        "has no output 'nope'",
    ),
    (
        "unknown datatype",
        "/v2/models/iris_onnx/infer",
        {"inputs": [_input(datatype="FLOAT")]},
        400,
        "unknown datatype",
    ),
    ("metadata of unknown model", "/v2/models/nope", None, 404, "unknown model"),
    (
        "v1 predict unknown model",
        "/v1/models/nope:predict",
        {"instances": [IRIS_ROW]},
        404,
        "unknown model",
    ),
    ("predict with wrong width", "/predict", [1.0, 2.0], 400, "Expected [-1,4], got [1,2]"),
    ("predict with text", "/predict", "hello", 400, "list of numbers"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in REST_CASES],
)
def test_rest_errors(
    rest: httpx.Client, path: str, body: object, status: int, fragment: str
) -> None:
    response = rest.get(path) if body is None else rest.post(path, json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert rest.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("content", "headers", "status", "fragment"),
    [
        pytest.param(b"{not json", {}, 400, "malformed JSON", id="malformed json"),
        pytest.param(b'{"inputs": [', {}, 400, "malformed JSON", id="truncated json"),
        pytest.param(
            b"{}",
            {"Inference-Header-Content-Length": "99"},
            400,
            "only 2 bytes",
            id="header length past body",
        ),
        pytest.param(
            b"{}",
            {"Inference-Header-Content-Length": "x"},
            400,
            "byte count",
            id="header length not a number",
        ),
        pytest.param(
            b"\x00\x01", {"Content-Encoding": "gzip"}, 400, "not valid gzip", id="corrupt gzip"
        ),
        pytest.param(
            b"{}",
            {"Content-Encoding": "br"},
            400,
            "unsupported Content-Encoding",
            id="unsupported encoding",
        ),
    ],
)
def test_rest_framing_errors(
    rest: httpx.Client, content: bytes, headers: dict[str, str], status: int, fragment: str
) -> None:
    response = rest.post("/v2/models/iris_onnx/infer", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def _binary(header: dict[str, object], payload: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize(
    ("size", "payload", "fragment"),
    [
        (32, b"\0" * 16, "runs past the end"),
        (12, b"\0" * 12, "needs 16 bytes of data, got 12"),
        (16, b"\0" * 20, "add up to 16"),
    ],
)
def test_rest_binary_size_mismatch(
    rest: httpx.Client, size: int, payload: bytes, fragment: str
) -> None:
    tensor = {
        "name": "input",
        "datatype": "FP32",
        "shape": [1, 4],
        "parameters": {"binary_data_size": size},
    }
    body, headers = _binary({"inputs": [tensor]}, payload)
    response = rest.post("/v2/models/iris_onnx/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_rest_body_over_the_limit(examples_dir: object) -> None:
    from tests.serverproc import start_server

    small = start_server(examples_dir, "--max-request-bytes", "4096")  # type: ignore[arg-type]
    try:
        with httpx.Client(base_url=small.base_url, timeout=30) as client:
            big = {"inputs": [_input(shape=[300, 4], data=[IRIS_ROW] * 300)]}
            response = client.post("/v2/models/iris_onnx/infer", json=big)
            assert response.status_code == 413
            assert "over the limit of 4096" in response.json()["error"]

            def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
                yield json.dumps(big).encode()

            response = client.post("/v2/models/iris_onnx/infer", content=chunks())
            assert response.status_code == 413
            assert client.get("/v2/health/ready").status_code == 200
        with grpc.insecure_channel(small.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = _grpc_request(np.zeros((1000, 4), dtype=np.float32))
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        small.stop()


def test_rest_body_without_json_header(rest: httpx.Client) -> None:
    rows = np.array([IRIS_ROW, [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    headers = {"Inference-Header-Content-Length": "0"}
    response = rest.post("/v2/models/iris_onnx/infer", content=rows.tobytes(), headers=headers)
    assert response.status_code == 200, response.text
    # Triton's raw binary request: every output comes back binary.
    length = int(response.headers["inference-header-content-length"])
    assert np.frombuffer(response.content[length : length + 16], dtype=np.int64).tolist() == [0, 2]
    response = rest.post("/v2/models/iris_onnx/infer", content=b"\0" * 10, headers=headers)
    assert response.status_code == 400
    assert "cannot derive the shape" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "content", "headers", "fragment"),
    [
        pytest.param("/v2/models/nope/infer", b"", {}, "'nope' is not found", id="empty body"),
        pytest.param(
            "/v2/models/nope/infer", b"{not json", {}, "'nope' is not found", id="malformed json"
        ),
        pytest.param(
            "/v2/models/nope/infer",
            b"\0" * 16,
            {"Inference-Header-Content-Length": "0"},
            "'nope' is not found",
            id="raw binary",
        ),
        pytest.param(
            "/v2/models/iris_onnx/versions/9/infer", b"", {}, "no version '9'", id="version"
        ),
        pytest.param("/v2/models/nope/generate", b"[1", {}, "'nope' is not found", id="generate"),
    ],
)
def test_rest_unknown_model_before_body(
    rest: httpx.Client, path: str, content: bytes, headers: dict[str, str], fragment: str
) -> None:
    # The model is looked up before the body is decoded: a request for a model the server
    # does not have is a 404 whatever its body holds (as the gateway answers in pool mode).
    response = rest.post(path, content=content, headers=headers)
    assert response.status_code == 404, response.text
    assert fragment in response.json()["error"]
    # a known model with the same bodies still gets the body's error
    response = rest.post("/v2/models/iris_onnx/infer", content=b"{not json")
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["error"]


def test_rest_method_not_allowed_and_unknown_route(rest: httpx.Client) -> None:
    assert rest.get("/v2/models/iris_onnx/infer").status_code == 405
    response = rest.get("/v3/nothing")
    assert response.status_code == 404
    assert "no route" in response.json()["error"]


def _grpc_request(rows: np.ndarray, **overrides: object) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="iris_onnx")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    for key, value in overrides.items():
        if key == "model_name":
            request.model_name = str(value)
        elif key == "model_version":
            request.model_version = str(value)
        else:
            setattr(tensor, key, value)
    return request


def _grpc_cases() -> list[object]:
    row = np.array([IRIS_ROW], dtype=np.float32)
    extra_raw = _grpc_request(row)
    extra_raw.raw_input_contents.append(b"\0" * 4)
    short_raw = _grpc_request(row)
    short_raw.raw_input_contents[0] = b"\0" * 12
    typed = service_pb2.ModelInferRequest(model_name="iris_onnx")
    t = typed.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    t.contents.fp32_contents.extend(IRIS_ROW[:3])
    fp16_typed = service_pb2.ModelInferRequest(model_name="iris_onnx")
    fp16_typed.inputs.add(name="input", datatype="FP16", shape=[1, 4])
    no_inputs = service_pb2.ModelInferRequest(model_name="iris_onnx")
    code = grpc.StatusCode
    return [
        pytest.param(
            _grpc_request(row, model_name="nope"),
            code.NOT_FOUND,
            "unknown model",
            id="unknown model",
        ),
        pytest.param(
            _grpc_request(row, model_version="9"),
            code.NOT_FOUND,
            "no version '9'",
            id="unknown version",
        ),
        pytest.param(
            _grpc_request(row, name="x"),
            code.INVALID_ARGUMENT,
            "has no input 'x'",
            id="wrong input name",
        ),
        pytest.param(
            _grpc_request(row.astype(np.float64), datatype="FP64"),
            code.INVALID_ARGUMENT,
            "but model 'iris_onnx' expects 'FP32'",
            id="wrong datatype",
        ),
        pytest.param(
            _grpc_request(row.reshape(2, 2)),
            code.INVALID_ARGUMENT,
            "Expected [-1,4], got [2,2]",
            id="wrong shape",
        ),
        pytest.param(extra_raw, code.INVALID_ARGUMENT, "2 buffers for 1 inputs", id="raw count"),
        pytest.param(short_raw, code.INVALID_ARGUMENT, "needs 16 bytes", id="raw size"),
        pytest.param(typed, code.INVALID_ARGUMENT, "fp32_contents holds 3", id="typed count"),
        pytest.param(fp16_typed, code.INVALID_ARGUMENT, "raw_input_contents", id="fp16 typed"),
        pytest.param(no_inputs, code.INVALID_ARGUMENT, "at least one input", id="no inputs"),
    ]


@pytest.mark.parametrize(("request_message", "code", "fragment"), _grpc_cases())
def test_grpc_errors(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    request_message: service_pb2.ModelInferRequest,
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_message)
    assert info.value.code() == code
    assert fragment in (info.value.details() or "")
    assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready


def test_grpc_metadata_errors(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # ModelReady answers ready=false for what is not served, as Triton does (its clients'
    # is_model_ready returns False rather than raising).
    assert not stub.ModelReady(service_pb2.ModelReadyRequest(name="iris", version="7")).ready
    assert not stub.ModelReady(service_pb2.ModelReadyRequest(name="nope")).ready


def test_grpc_typed_contents_work(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="iris_onnx")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(IRIS_ROW)
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["label", "probabilities"]
    assert struct.unpack("<q", response.raw_output_contents[0]) == (0,)
