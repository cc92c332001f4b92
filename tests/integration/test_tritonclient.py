"""tritonclient 2.73 against a real server: metadata, readiness, and answers equal to the
framework's own predictions on held-out data, over HTTP (binary and JSON) and gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from inferbridge.examples.build import DIGITS_INPUT, IRIS_INPUT, digits_split, iris_split
from tests.serverproc import ServerProcess

Client = Any


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


def _infer(
    client: Client, module: Any, model: str, name: str, rows: np.ndarray, *, binary: bool
) -> dict[str, np.ndarray]:
    tensor = module.InferInput(name, list(rows.shape), "FP32")
    if module is httpclient:
        tensor.set_data_from_numpy(rows, binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("label", binary_data=binary),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        result = client.infer(model, [tensor], outputs=outputs)
    else:
        tensor.set_data_from_numpy(rows)
        result = client.infer(model, [tensor])
    return {"label": result.as_numpy("label"), "probabilities": result.as_numpy("probabilities")}


TRANSPORTS = [
    pytest.param(("http", True), id="http-binary"),
    pytest.param(("http", False), id="http-json"),
    pytest.param(("grpc", True), id="grpc"),
]


@pytest.fixture(params=TRANSPORTS)
def transport(
    request: pytest.FixtureRequest,
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
) -> tuple[Client, Any, bool]:
    kind, binary = request.param
    return (http, httpclient, binary) if kind == "http" else (grpc, grpcclient, binary)


def test_server_health_and_metadata(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    meta = http.get_server_metadata()
    assert meta["name"] == "inferbridge"
    assert "binary_tensor_data" in meta["extensions"]
    assert grpc.get_server_metadata().name == "inferbridge"


@pytest.mark.parametrize(
    ("model", "platform", "input_name", "width"),
    [
        ("iris", "sklearn", IRIS_INPUT, 4),
        ("iris_onnx", "onnx_onnxv1", IRIS_INPUT, 4),
        ("digits", "onnx_onnxv1", DIGITS_INPUT, 64),
    ],
)
def test_model_metadata_and_readiness(
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
    model: str,
    platform: str,
    input_name: str,
    width: int,
) -> None:
    assert http.is_model_ready(model) and http.is_model_ready(model, "1")
    assert grpc.is_model_ready(model) and grpc.is_model_ready(model, "1")
    meta = http.get_model_metadata(model)
    assert meta["platform"] == platform
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": input_name, "datatype": "FP32", "shape": [-1, width]}]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
    assert http.get_model_metadata(model, "1") == meta
    gmeta = grpc.get_model_metadata(model)
    assert gmeta.platform == platform
    assert [(t.name, t.datatype, list(t.shape)) for t in gmeta.inputs] == [
        (input_name, "FP32", [-1, width])
    ]


def test_iris_sklearn_equals_scikit_learn(
    examples_dir: Path, transport: tuple[Client, Any, bool]
) -> None:
    client, module, binary = transport
    _, X_test, _, _ = iris_split()
    estimator = joblib.load(examples_dir / "iris" / "1" / "model.joblib")
    got = _infer(client, module, "iris", IRIS_INPUT, X_test, binary=binary)
    np.testing.assert_array_equal(got["label"], estimator.predict(X_test))
    np.testing.assert_array_equal(got["probabilities"], estimator.predict_proba(X_test))


@pytest.mark.parametrize(("model", "name"), [("iris_onnx", IRIS_INPUT), ("digits", DIGITS_INPUT)])
def test_onnx_models_equal_onnxruntime(
    examples_dir: Path, transport: tuple[Client, Any, bool], model: str, name: str
) -> None:
    client, module, binary = transport
    _, X_test, _, y_test = iris_split() if model == "iris_onnx" else digits_split()
    session = ort.InferenceSession(str(examples_dir / model / "1" / "model.onnx"))
    want_label, want_proba = session.run(["label", "probabilities"], {name: X_test})
    got = _infer(client, module, model, name, X_test, binary=binary)
    np.testing.assert_array_equal(got["label"], want_label)
    np.testing.assert_allclose(got["probabilities"], want_proba, rtol=0, atol=1e-6)
    # batch of one, too
    one = _infer(client, module, model, name, X_test[:1], binary=binary)
    np.testing.assert_array_equal(one["label"], want_label[:1])
    if model == "digits":
        assert float((got["label"] == y_test).mean()) >= 0.95


def test_empty_batch(http: httpclient.InferenceServerClient) -> None:
    for model in ("iris", "iris_onnx"):
        tensor = httpclient.InferInput(IRIS_INPUT, [0, 4], "FP32")
        tensor.set_data_from_numpy(np.zeros((0, 4), dtype=np.float32))
        result = http.infer(model, [tensor])
        assert result.as_numpy("label").shape == (0,)
        assert result.as_numpy("probabilities").shape == (0, 3)


def test_requested_output_subset(http: httpclient.InferenceServerClient) -> None:
    rows = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    tensor = httpclient.InferInput(IRIS_INPUT, [1, 4], "FP32")
    tensor.set_data_from_numpy(rows)
    result = http.infer("iris_onnx", [tensor], outputs=[httpclient.InferRequestedOutput("label")])
    assert result.as_numpy("probabilities") is None
    assert result.as_numpy("label").tolist() == [0]


def test_request_id_is_echoed(grpc: grpcclient.InferenceServerClient) -> None:
    tensor = grpcclient.InferInput(IRIS_INPUT, [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    result = grpc.infer("iris_onnx", [tensor], request_id="abc-1")
    assert result.get_response().id == "abc-1"
    assert result.get_response().model_version == "1"


def test_compressed_request_bodies(http: httpclient.InferenceServerClient) -> None:
    rows = np.array([[6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    for algorithm in ("gzip", "deflate"):
        tensor = httpclient.InferInput(IRIS_INPUT, [1, 4], "FP32")
        tensor.set_data_from_numpy(rows)
        result = http.infer("iris_onnx", [tensor], request_compression_algorithm=algorithm)
        assert result.as_numpy("label").tolist() == [2]
