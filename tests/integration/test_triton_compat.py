"""What a plain Triton client (tritonclient, or code written against Triton's QA tests in
qa/L0_http/http_test.py) depends on, over HTTP and gRPC, on both front ends: duplicate
names refused, raw binary requests, the binary_data_output rule, Triton's error phrases,
a queue of one refusing a spaced second request, the gRPC queue-full code, and server
metadata listing exactly the extensions served."""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.serverproc import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = "tests.support.runtimes:Identity"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
RAW = {"Inference-Header-Content-Length": "0"}


def _identity(root: Path, name: str, inputs: list[tuple[str, list[int]]], extra: str = "") -> None:
    (root / name / "1").mkdir(parents=True)
    tensors = "\n".join(
        f"  - {{name: INPUT{i}, datatype: {dt}, shape: {shape}}}"
        for i, (dt, shape) in enumerate(inputs)
    )
    outs = "\n".join(
        f"  - {{name: OUTPUT{i}, datatype: {dt}, shape: {shape}}}"
        for i, (dt, shape) in enumerate(inputs)
    )
    (root / name / "config.yaml").write_text(
        f"runtime: {IDENTITY}\n{extra}inputs:\n{tensors}\noutputs:\n{outs}\n"
    )


@pytest.fixture(scope="module", params=["gateway", "python"])
def compat(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Triton's QA identity models, served with --grpc-queue-full-code unavailable."""
    root = tmp_path_factory.mktemp("compat")
    batching = "max_batch_size: 8\n"
    _identity(root, "zero_1_float32", [("FP32", [-1, -1])], batching)
    _identity(root, "zero_1_object_1_element", [("BYTES", [-1, 1])], batching)
    _identity(root, "zero_1_object", [("BYTES", [-1, -1])], batching)
    _identity(root, "zero_1_float16", [("FP16", [-1, -1, -1])], batching)
    _identity(root, "zero_3_float32", [("FP32", [-1, -1])] * 3, batching)
    _identity(root, "fixed_bytes", [("BYTES", [1])])
    _identity(
        root,
        "zero_1_float32_queue",
        [("FP32", [-1, -1])],
        batching + "dynamic_batching: {max_queue_delay_ms: 1000, preferred_batch_sizes: [8], "
        "max_queue_size: 1, hold_for_delay: true}\n",
    )
    _identity(
        root,
        "slow_bounded",
        [("FP32", [-1, -1])],
        "max_batch_size: 1\ndynamic_batching: {max_queue_size: 1}\nparameters: {sleep_s: 1.0}\n",
    )
    frontends = () if request.param == "gateway" else ("--grpc-frontend", "grpcio")
    frontends += () if request.param == "gateway" else ("--rest-frontend", "uvicorn")
    server = start_server(
        root, "--grpc-queue-full-code", "unavailable", *frontends, env={"PYTHONPATH": str(ROOT)}
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(rest_server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(rest_server.http_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(grpc_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    yield client
    client.close()


def _iris(module: Any) -> Any:
    tensor = module.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([IRIS_ROW], dtype=np.float32))
    return tensor


def _refused(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


# -- duplicate names -----------------------------------------------------------------------


def test_duplicate_output_names_are_refused(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    phrase = "Duplicate output name 'label' is not allowed in a request"
    outputs = [httpclient.InferRequestedOutput("label")] * 2
    error = _refused(lambda: http.infer("iris_onnx", [_iris(httpclient)], outputs=outputs))
    assert error.status() == "400"
    assert phrase in error.message() and "output 'label' already exists in request" in (
        error.message()
    )
    goutputs = [grpcclient.InferRequestedOutput("label")] * 2
    error = _refused(lambda: grpc.infer("iris_onnx", [_iris(grpcclient)], outputs=goutputs))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert phrase in error.message()
    assert http.is_server_live() and grpc.is_server_live()


def test_duplicate_inputs_are_refused(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    error = _refused(lambda: http.infer("iris_onnx", [_iris(httpclient), _iris(httpclient)]))
    assert error.status() == "400"
    assert "input 'input' already exists in request" in error.message()
    error = _refused(lambda: grpc.infer("iris_onnx", [_iris(grpcclient), _iris(grpcclient)]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'input' already exists in request" in error.message()


# -- binary_data_output ---------------------------------------------------------------------


def _split(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    length = response.headers.get("inference-header-content-length")
    if length is None:
        return response.json(), b""
    return json.loads(response.content[: int(length)]), response.content[int(length) :]


def test_binary_data_output_covers_only_unlisted_outputs(rest_server: ServerProcess) -> None:
    # Triton's server: with `outputs` listed, an output without binary_data is JSON even
    # under binary_data_output; with none listed, every output is binary.
    url = f"{rest_server.base_url}/v2/models/iris_onnx/infer"
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": IRIS_ROW}
    listed = {
        "inputs": [tensor],
        "parameters": {"binary_data_output": True},
        "outputs": [
            {"name": "label"},
            {"name": "probabilities", "parameters": {"binary_data": True}},
        ],
    }
    header, tail = _split(httpx.post(url, json=listed))
    label, probabilities = header["outputs"]
    assert label["data"] == [0] and "parameters" not in label
    assert probabilities["parameters"] == {"binary_data_size": 12} and len(tail) == 12
    header, tail = _split(
        httpx.post(url, json={"inputs": [tensor], "parameters": {"binary_data_output": True}})
    )
    assert all("data" not in o for o in header["outputs"]) and len(tail) == 8 + 12
    # tritonclient asks per output; what it asks is what it gets.
    client = httpclient.InferenceServerClient(rest_server.http_url)
    try:
        result = client.infer(
            "iris_onnx",
            [_iris(httpclient)],
            outputs=[httpclient.InferRequestedOutput("label", binary_data=False)],
        )
        assert result.get_output("label")["data"] == [0]
    finally:
        client.close()


# -- raw binary requests --------------------------------------------------------------------


def _raw(server: ServerProcess, model: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v2/models/{model}/infer", content=body, headers=RAW)


@pytest.mark.parametrize("count", [8, 32])
def test_raw_binary_batching_model_is_batch_one(compat: ServerProcess, count: int) -> None:
    data = np.arange(count, dtype=np.float32).tobytes()
    response = _raw(compat, "zero_1_float32", data)
    assert response.status_code == 200, response.text
    header, tail = _split(response)
    assert header["outputs"] == [
        {
            "name": "OUTPUT0",
            "datatype": "FP32",
            "shape": [1, count],
            "parameters": {"binary_data_size": 4 * count},
        }
    ]
    assert tail == data


def test_raw_binary_chunked_body(compat: ServerProcess) -> None:
    data = np.arange(8, dtype=np.float32).tobytes()

    def chunks() -> Iterator[bytes]:
        yield data[:12]
        yield data[12:]

    response = httpx.post(
        f"{compat.base_url}/v2/models/zero_1_float32/infer", content=chunks(), headers=RAW
    )
    assert response.status_code == 200, response.text
    assert _split(response)[1] == data


@pytest.mark.parametrize("model", ["zero_1_object_1_element", "fixed_bytes"])
def test_raw_binary_bytes_of_shape_one(compat: ServerProcess, model: str) -> None:
    response = _raw(compat, model, b"427")
    assert response.status_code == 200, response.text
    header, tail = _split(response)
    assert header["outputs"][0]["datatype"] == "BYTES"
    assert tail == struct.pack("<I", 3) + b"427"


@pytest.mark.parametrize(
    ("model", "body", "phrase"),
    [
        (
            "zero_1_object",
            b"427",
            "For BYTE datatype raw input 'INPUT0', the model must have input shape [1]",
        ),
        (
            "zero_1_float16",
            np.ones([2, 2], dtype=np.float16).tobytes(),
            "The shape of the raw input 'INPUT0' can not be deduced because there are more "
            "than one variable-sized dimension",
        ),
        (
            "zero_3_float32",
            np.arange(24, dtype=np.float32).tobytes(),
            "Raw request must only have 1 input (found 1) to be deduced but got 3 inputs in",
        ),
        ("zero_1_float32", b"\0" * 10, "cannot derive the shape of raw input 'INPUT0'"),
    ],
)
def test_raw_binary_errors(compat: ServerProcess, model: str, body: bytes, phrase: str) -> None:
    response = _raw(compat, model, body)
    assert response.status_code == 400
    assert phrase in response.json()["error"]


def test_raw_binary_non_batching_model_derives_its_variable_dimension(
    rest_server: ServerProcess,
) -> None:
    # iris_onnx does not batch ([-1, 4], max_batch_size 0): its one variable dimension is
    # the row count.
    rows = np.array([IRIS_ROW, [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    response = _raw(rest_server, "iris_onnx", rows.tobytes())
    assert response.status_code == 200, response.text
    header, tail = _split(response)
    assert [o["shape"] for o in header["outputs"]] == [[2], [2, 3]]
    assert np.frombuffer(tail[:16], dtype=np.int64).tolist() == [0, 2]


# -- a bounded queue of one, spaced requests; the gRPC queue-full code ---------------------


def test_queue_of_one_refuses_a_spaced_second_request(compat: ServerProcess) -> None:
    # Triton's L0_http test_descriptive_status_code: the first request waits out the 1 s
    # delay for a batch of 8 (hold_for_delay); one sent 0.5 s later finds the queue full.
    # REST says 429 (Triton: 503); gRPC says UNAVAILABLE with --grpc-queue-full-code.
    data = np.arange(8, dtype=np.float32).tobytes()
    answers: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: answers.append(_raw(compat, "zero_1_float32_queue", data))
    )
    first.start()
    time.sleep(0.5)
    second = _raw(compat, "zero_1_float32_queue", data)
    assert second.status_code == 429, second.text
    assert "queue is full" in second.json()["error"] or "overloaded" in second.json()["error"]
    client = grpcclient.InferenceServerClient(compat.grpc_url)
    try:
        tensor = grpcclient.InferInput("INPUT0", [1, 8], "FP32")
        tensor.set_data_from_numpy(np.arange(8, dtype=np.float32).reshape(1, 8))
        error = _refused(lambda: client.infer("zero_1_float32_queue", [tensor]))
        assert error.status() == "StatusCode.UNAVAILABLE", error
    finally:
        client.close()
    first.join(10)
    assert answers and answers[0].status_code == 200
    assert _split(answers[0])[1] == data


def test_grpc_queue_full_code_where_the_front_end_refuses(compat: ServerProcess) -> None:
    # One request running, one queued: the third is refused before Python sees it on the
    # gateway (its LIMITS bound, max_queue_size + 1 per instance), by the scheduler on
    # grpc.aio; UNAVAILABLE either way with --grpc-queue-full-code unavailable.
    data = np.arange(4, dtype=np.float32).tobytes()
    held = [threading.Thread(target=lambda: _raw(compat, "slow_bounded", data)) for _ in range(2)]
    for thread in held:
        thread.start()
        time.sleep(0.15)
    client = grpcclient.InferenceServerClient(compat.grpc_url)
    try:
        tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
        error = _refused(lambda: client.infer("slow_bounded", [tensor]))
        assert error.status() == "StatusCode.UNAVAILABLE", error
        on_grpcio = any("served by grpc.aio" in line for line in compat.output)
        assert ("queue is full" if on_grpcio else "is overloaded") in error.message()
    finally:
        client.close()
    for thread in held:
        thread.join(10)


# -- Triton's error phrases -----------------------------------------------------------------


def test_unknown_model_messages_start_as_tritons(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    for client, module in ((http, httpclient), (grpc, grpcclient)):
        error = _refused(lambda c=client: c.get_model_metadata("wrong_model_name"))
        assert error.message().startswith("Request for unknown model: 'wrong_model_name'")
        error = _refused(lambda c=client, m=module: c.infer("wrong_model_name", [_iris(m)]))
        assert error.message().startswith("Request for unknown model")
        error = _refused(
            lambda c=client, m=module: c.infer("iris_onnx", [_iris(m)], model_version="9")
        )
        assert error.message().startswith("Request for unknown model: 'iris_onnx' version 9")
        assert error.status() in ("404", "StatusCode.NOT_FOUND")


def test_shape_and_datatype_messages_carry_tritons_phrases(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    for client, module in ((http, httpclient), (grpc, grpcclient)):
        wide = module.InferInput("input", [2, 2], "FP32")
        wide.set_data_from_numpy(np.zeros((2, 2), dtype=np.float32))
        error = _refused(lambda c=client, t=wide: c.infer("iris_onnx", [t]))
        assert (
            "unexpected shape for input 'input' for model 'iris_onnx'. Expected [-1,4], "
            "got [2,2]" in error.message()
        )
        double = module.InferInput("input", [1, 4], "FP64")
        double.set_data_from_numpy(np.zeros((1, 4), dtype=np.float64))
        error = _refused(lambda c=client, t=double: c.infer("iris_onnx", [t]))
        assert (
            "inference input 'input' data-type is 'FP64', but model 'iris_onnx' expects "
            "'FP32'" in error.message()
        )
        other = module.InferInput("x", [1, 4], "FP32")
        other.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
        error = _refused(lambda c=client, t=other: c.infer("iris_onnx", [t]))
        assert "unexpected inference input 'x' for model 'iris_onnx'" in error.message()
        out = module.InferRequestedOutput("nope")
        error = _refused(
            lambda c=client, m=module, o=out: c.infer("iris_onnx", [_iris(m)], outputs=[o])
        )
        assert "unexpected inference output 'nope' for model 'iris_onnx'" in error.message()


def _binary_body(size: int, payload: bytes) -> tuple[bytes, dict[str, str]]:
    tensor = {
        "name": "input",
        "datatype": "FP32",
        "shape": [1, 4],
        "parameters": {"binary_data_size": size},
    }
    head = json.dumps({"inputs": [tensor]}).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize(
    ("size", "payload", "phrase"),
    [
        (32, b"\0" * 16, "unexpected size for input 'input', expecting 16 additional bytes"),
        (16, b"\0" * 20, "unexpected additional input data for model 'iris_onnx'"),
    ],
)
def test_binary_framing_errors_carry_tritons_phrases(
    rest_server: ServerProcess, size: int, payload: bytes, phrase: str
) -> None:
    body, headers = _binary_body(size, payload)
    url = f"{rest_server.base_url}/v2/models/iris_onnx/infer"
    response = httpx.post(url, content=body, headers=headers)
    assert response.status_code == 400
    assert phrase in response.json()["error"]


def test_malformed_requests_are_400(rest_server: ServerProcess) -> None:
    url = f"{rest_server.base_url}/v2/models/iris_onnx/infer"
    for body, headers in [
        (b"{not json", {}),
        (b'{"inputs": []}', {}),
        (b'{"outputs": []}', {}),
        (b"{}", {"Inference-Header-Content-Length": "99"}),
        (b"{}", {"Inference-Header-Content-Length": "-1"}),
        # An element count past any buffer (Triton's test_buffer_size_overflow).
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [16, 1152921504606846978],'
            b' "data": [1.0]}]}',
            {},
        ),
        # Triton answers 500 for a negative dimension; it is the client's error.
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, -5], "data": [1]}]}',
            {},
        ),
    ]:
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 400, (body, headers, response.text)
        assert response.json()["error"]


# -- repository index body ------------------------------------------------------------------


@pytest.mark.parametrize("body", [b'{"ready": "yes"}', b"ready please", b"[true]"])
def test_repository_index_refuses_a_bad_body(rest_server: ServerProcess, body: bytes) -> None:
    response = httpx.post(f"{rest_server.base_url}/v2/repository/index", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


# -- server metadata ------------------------------------------------------------------------


def _probe(server: ServerProcess, extension: str) -> bool:
    """Whether `extension` is served, by one request that needs it."""
    base = server.base_url
    if extension == "binary_tensor_data":
        rows = np.array([IRIS_ROW], dtype=np.float32).tobytes()
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": [1, 4],
                        "parameters": {"binary_data_size": 16},
                    }
                ]
            }
        ).encode()
        headers = {"Inference-Header-Content-Length": str(len(head))}
        response = httpx.post(
            f"{base}/v2/models/iris_onnx/infer", content=head + rows, headers=headers
        )
        return response.status_code == 200
    if extension == "model_repository":
        return httpx.post(f"{base}/v2/repository/index").status_code == 200
    if extension == "model_repository(unload_dependents)":
        # The parameter is understood: refused for the control mode, not as unknown.
        response = httpx.post(
            f"{base}/v2/repository/models/iris/unload",
            json={"parameters": {"unload_dependents": True}},
        )
        return response.status_code == 403
    if extension == "schedule_policy":
        tensor = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": IRIS_ROW}
        body = {"inputs": [tensor], "parameters": {"priority": 0, "timeout": 10_000_000}}
        return httpx.post(f"{base}/v2/models/iris_onnx/infer", json=body).status_code == 200
    if extension == "statistics":
        return httpx.get(f"{base}/v2/models/stats").status_code == 200
    if extension == "model_configuration":
        config = httpx.get(f"{base}/v2/models/iris_onnx/config")
        return config.status_code == 200 and config.json().get("name") == "iris_onnx"
    if extension == "system_shared_memory":
        return httpx.get(f"{base}/v2/systemsharedmemory/status").status_code == 200
    if extension == "cuda_shared_memory":
        return httpx.get(f"{base}/v2/cudasharedmemory/status").status_code == 200
    if extension == "logging":
        return httpx.get(f"{base}/v2/logging").status_code == 200
    if extension == "trace":
        return httpx.get(f"{base}/v2/trace/setting").status_code == 200
    raise AssertionError(f"server metadata lists '{extension}', which this test cannot probe")


def test_server_metadata_lists_exactly_the_extensions_served(
    rest_server: ServerProcess,
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
) -> None:
    extensions = http.get_server_metadata()["extensions"]
    assert list(grpc.get_server_metadata().extensions) == extensions
    assert len(set(extensions)) == len(extensions)
    for extension in extensions:
        assert _probe(rest_server, extension), extension
    assert "model_configuration" in extensions
    for absent in ("classification", "sequence", "parameters", "cuda_shared_memory"):
        assert absent not in extensions


@pytest.mark.parametrize(("depth", "status"), [(50, 200), (120, 400), (1000, 400)])
def test_json_nesting_depth_limit(compat: ServerProcess, depth: int, status: int) -> None:
    # Triton's L0_http test_json_recursion_depth_limit (and past Python's recursion limit,
    # still the client's error, not a 500).
    data = "[" * depth + '"hello"' + "]" * depth  # past what json.dumps can write
    body = '{"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "data": %s}]}'
    url = f"{compat.base_url}/v2/models/zero_1_object/infer"
    response = httpx.post(url, content=(body % data).encode())
    assert response.status_code == status, response.text
    if status == 400:
        assert "JSON nesting depth exceeds maximum allowed limit (100)" in response.json()["error"]


# -- Triton's own QA repository layout ------------------------------------------------------

QUEUE_PBTXT = """
name: "onnx_zero_1_float32_queue"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
dynamic_batching {
    max_queue_delay_microseconds: 1000000
    preferred_batch_size: [ 8 ]
    default_queue_policy {
        max_queue_size: 1
    }
}
"""


@pytest.fixture(scope="module")
def triton_layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Triton QA's onnx_zero_1_float32_queue: an ONNX identity with L0_http's config.pbtxt."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "identity",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", "n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    root = tmp_path_factory.mktemp("triton_qa")
    (root / "onnx_zero_1_float32_queue" / "1").mkdir(parents=True)
    (root / "onnx_zero_1_float32_queue" / "config.pbtxt").write_text(QUEUE_PBTXT)
    (root / "onnx_zero_1_float32_queue" / "1" / "model.onnx").write_bytes(model.SerializeToString())
    server = start_server(root)
    yield server
    server.stop()


def test_tritons_descriptive_status_code_case(triton_layout: ServerProcess) -> None:
    # qa/L0_http/http_test.py test_descriptive_status_code, against Triton's own config:
    # the second request is refused (429 here, 503 in Triton), the first is answered.
    data = np.arange(8, dtype=np.float32).tobytes()
    answers: list[httpx.Response] = []
    model = "onnx_zero_1_float32_queue"
    first = threading.Thread(target=lambda: answers.append(_raw(triton_layout, model, data)))
    first.start()
    time.sleep(0.5)
    assert _raw(triton_layout, model, data).status_code == 429
    first.join(10)
    assert answers and answers[0].status_code == 200, answers
    assert _split(answers[0])[1] == data
