"""`inferbridge serve` of a repository in Triton's layout (config.pbtxt, built here), with
tritonclient over HTTP and gRPC: metadata, inference, get_model_config equal to the pbtxt,
the REST config shape, and loads whose `config` is Triton's ModelConfig JSON."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as triton_pb
from tritonclient.utils import InferenceServerException

from tests.serverproc import ServerProcess, start_server

SIMPLE_PBTXT = """
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
dynamic_batching { max_queue_delay_microseconds: 500 preferred_batch_size: [ 2, 4 ] }
instance_group [ { count: 2 kind: KIND_CPU } ]
version_policy { latest { num_versions: 1 } }
parameters { key: "intra_op_num_threads" value { string_value: "1" } }
optimization { graph { level: 1 } }
"""

IDENTITY_PBTXT = """
backend: "onnxruntime"
max_batch_size: 0
default_model_filename: "identity.onnx"
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
"""

PIPELINE_YAML = """
runtime: pipeline
max_batch_size: 8
inputs:
  - {name: a, datatype: INT32, shape: [-1, 16]}
  - {name: b, datatype: INT32, shape: [-1, 16]}
outputs: [{name: total, datatype: INT32, shape: [-1, 16]}]
parameters:
  steps:
    - {model: simple, inputs: {INPUT0: a, INPUT1: b}, outputs: {OUTPUT0: total}}
"""

Client = Any


def simple_onnx() -> bytes:
    """Triton QA's `simple`: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    shape: list[Any] = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("INPUT0", "INPUT1")],
        [
            helper.make_tensor_value_info(n, TensorProto.INT32, shape)
            for n in ("OUTPUT0", "OUTPUT1")
        ],
    )
    return _serialized(graph)


def identity_onnx() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "identity",
        [helper.make_tensor_value_info("INPUT0", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, ["n"])],
    )
    return _serialized(graph)


def _serialized(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def triton_repository(root: Path) -> Path:
    for name, pbtxt, file, data in (
        ("simple", SIMPLE_PBTXT, "model.onnx", simple_onnx()),
        ("simple_identity", IDENTITY_PBTXT, "identity.onnx", identity_onnx()),
    ):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(pbtxt)
        (root / name / "1" / file).write_bytes(data)
    # A pipeline (config.yaml) whose model step is a Triton model beside it.
    (root / "sum_pipeline" / "1").mkdir(parents=True)
    (root / "sum_pipeline" / "config.yaml").write_text(PIPELINE_YAML)
    (root / "pyfunc" / "1").mkdir(parents=True)
    (root / "pyfunc" / "config.pbtxt").write_text('backend: "python"\n')
    (root / "pyfunc" / "1" / "model.py").write_text("raise SystemExit('never run')\n")
    return root


@pytest.fixture(scope="module", params=["gateway", "python"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = triton_repository(tmp_path_factory.mktemp("triton") / "models")
    extra = (
        ["--grpc-frontend", "grpcio", "--rest-frontend", "uvicorn"]
        if request.param == "python"
        else []
    )
    proc = start_server(root, "--model-control-mode", "explicit", "--load-model", "*", *extra)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.http_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def _client(which: str, http: Client, grpc: Client) -> tuple[Client, Any]:
    return (http, httpclient) if which == "http" else (grpc, grpcclient)


def _config_of(which: str, client: Client, model: str) -> triton_pb.ModelConfig:
    if which == "grpc":
        message: triton_pb.ModelConfig = client.get_model_config(model).config
        return message
    from google.protobuf import json_format

    document = client.get_model_config(model)
    document.pop("inferbridge")
    return json_format.ParseDict(document, triton_pb.ModelConfig())


BOTH = ["http", "grpc"]


@pytest.mark.parametrize("which", BOTH)
def test_metadata(which: str, http: Client, grpc: Client) -> None:
    client, _ = _client(which, http, grpc)
    kwargs = {"as_json": True} if which == "grpc" else {}
    meta = client.get_model_metadata("simple", **kwargs)
    assert meta["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]] == [
        ("INPUT0", "INT32", [-1, 16]),
        ("INPUT1", "INT32", [-1, 16]),
    ]
    assert [t["name"] for t in meta["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert client.is_model_ready("simple_identity")


@pytest.mark.parametrize("which", BOTH)
def test_simple_infer(which: str, http: Client, grpc: Client) -> None:
    client, module = _client(which, http, grpc)
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.ones((2, 16), dtype=np.int32)
    inputs = [
        module.InferInput("INPUT0", [2, 16], "INT32"),
        module.InferInput("INPUT1", [2, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("which", BOTH)
def test_string_identity_infer(which: str, http: Client, grpc: Client) -> None:
    client, module = _client(which, http, grpc)
    text = np.array([b"hello", b"triton"], dtype=np.object_)
    tensor = module.InferInput("INPUT0", [2], "BYTES")
    tensor.set_data_from_numpy(text)
    result = client.infer("simple_identity", [tensor])
    assert list(result.as_numpy("OUTPUT0")) == [b"hello", b"triton"]


@pytest.mark.parametrize("which", BOTH)
def test_get_model_config_equals_the_pbtxt(which: str, http: Client, grpc: Client) -> None:
    client, _ = _client(which, http, grpc)
    written = text_format.Parse(SIMPLE_PBTXT, triton_pb.ModelConfig())
    served = _config_of(which, client, "simple")
    for field in ("name", "platform", "max_batch_size", "input", "output", "version_policy"):
        assert getattr(served, field) == getattr(written, field), field
    assert served.backend == "onnxruntime"
    batching = served.dynamic_batching
    assert list(batching.preferred_batch_size) == [2, 4]
    assert batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in served.instance_group] == [
        (2, triton_pb.ModelInstanceGroup.KIND_CPU)
    ]
    assert served.parameters["intra_op_num_threads"].string_value == "1"
    identity = _config_of(which, client, "simple_identity")
    assert identity.default_model_filename == "identity.onnx"
    assert identity.input[0].data_type == triton_pb.TYPE_STRING


def test_a_pipeline_step_reads_a_config_pbtxt(http: Client) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [
        httpclient.InferInput("a", [1, 16], "INT32"),
        httpclient.InferInput("b", [1, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a)
    result = http.infer("sum_pipeline", inputs)
    np.testing.assert_array_equal(result.as_numpy("total"), a * 2)


def test_rest_config_shape(server: ServerProcess) -> None:
    document = httpx.get(f"{server.base_url}/v2/models/simple/config").json()
    assert document["name"] == "simple"
    assert document["input"][0] == {
        **document["input"][0],
        "name": "INPUT0",
        "data_type": "TYPE_INT32",
        "dims": [16],
    }
    assert document["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    own = document["inferbridge"]
    assert own["runtime"] == "onnx" and own["max_batch_size"] == 8
    assert own["ignored_triton_fields"] == ["optimization"]
    versioned = httpx.get(f"{server.base_url}/v2/models/simple/versions/1/config").json()
    assert versioned["name"] == "simple"


def test_python_backend_is_refused_naming_the_model(server: ServerProcess, http: Client) -> None:
    index = {m["name"]: m for m in http.get_model_repository_index()}
    assert index["pyfunc"].get("state") != "READY"
    response = httpx.post(f"{server.base_url}/v2/repository/models/pyfunc/load")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "model 'pyfunc'" in error and "Python backend" in error
    assert any("ignored (not supported): optimization" in line for line in server.output)


def test_load_with_a_triton_json_config(server: ServerProcess, http: Client, grpc: Client) -> None:
    override = {
        "name": "simple",
        "backend": "onnxruntime",
        "max_batch_size": 4,
        "input": [
            {"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]},
            {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": [16]},
        ],
        "dynamic_batching": {"max_queue_delay_microseconds": 100},
    }
    http.load_model("simple", config=json.dumps(override))
    assert http.get_model_config("simple")["max_batch_size"] == 4
    assert (
        grpc.get_model_config("simple").config.dynamic_batching.max_queue_delay_microseconds == 100
    )
    # A whole model in the request, its config in Triton's shape.
    grpc.load_model(
        "shipped",
        config=json.dumps({"backend": "onnxruntime", "max_batch_size": 8}),
        files={"file:1/model.onnx": simple_onnx()},
    )
    shipped = grpc.get_model_config("shipped").config
    assert (shipped.platform, shipped.max_batch_size) == ("onnxruntime_onnx", 8)
    assert [t.name for t in shipped.input] == ["INPUT0", "INPUT1"]
    assert list(shipped.input[0].dims) == [16]
    with pytest.raises(InferenceServerException, match="mixes inferbridge fields"):
        http.load_model("simple", config=json.dumps({"inputs": [], "input": []}))
    with pytest.raises(InferenceServerException, match="'python' is not served"):
        grpc.load_model("simple", config=json.dumps({"backend": "python"}))
    # Triton's model-control example: a config naming no platform takes the model's own.
    with pytest.raises(InferenceServerException, match="failed to load"):
        grpc.load_model("simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
    grpc.load_model("simple", config='{"max_batch_size":"16"}')
    updated = grpc.get_model_config("simple").config
    assert (updated.max_batch_size, updated.platform) == (16, "onnxruntime_onnx")
    with pytest.raises(InferenceServerException, match="no config on disk"):
        grpc.load_model(
            "shipped_bare", config='{"max_batch_size": 2}', files={"file:1/model.onnx": b"x"}
        )
    http.load_model("simple")  # back to the config.pbtxt
    assert http.get_model_config("simple")["max_batch_size"] == 8


def test_poll_mode_follows_a_config_pbtxt(tmp_path: Path) -> None:
    root = triton_repository(tmp_path / "models")
    server = start_server(root, "--model-control-mode", "poll", "--repository-poll-secs", "0.5")
    try:

        def batch() -> int:
            response = httpx.get(f"{server.base_url}/v2/models/simple/config")
            return int(response.json().get("max_batch_size", -1))

        assert batch() == 8
        pbtxt = root / "simple" / "config.pbtxt"
        pbtxt.write_text(SIMPLE_PBTXT.replace("max_batch_size: 8", "max_batch_size: 4"))
        deadline = time.monotonic() + 30
        while batch() != 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert batch() == 4
        # A config.yaml beside it wins.
        (root / "simple" / "config.yaml").write_text("runtime: onnx\nmax_batch_size: 2\n")
        deadline = time.monotonic() + 30
        while batch() != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert batch() == 2
    finally:
        server.stop()
    # One warning per distinct config, however often the poll re-reads it.
    reports = [line for line in server.output if "model 'simple'" in line and "ignored" in line]
    assert len(reports) == 2, reports


LIBTORCH_PBTXT = """
platform: "pytorch_libtorch"
max_batch_size: 16
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [
  { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 10 ] },
  { name: "OUTPUT__1" data_type: TYPE_INT64 dims: [ ] }
]
parameters: { key: "trust_pickle" value: { string_value: "true" } }
"""


def test_pytorch_and_tensorflow_platforms(tmp_path: Path, examples_dir: Path) -> None:
    """The bundled examples' TorchScript and SavedModel files under Triton configs."""
    root = tmp_path / "models"
    (root / "digits_libtorch" / "1").mkdir(parents=True)
    (root / "digits_libtorch" / "config.pbtxt").write_text(LIBTORCH_PBTXT)
    shutil.copy(  # a symlink out of the repository is refused (docs/security.md)
        examples_dir / "digits_torchscript" / "1" / "model.pt", root / "digits_libtorch" / "1"
    )
    (root / "iris_savedmodel" / "1").mkdir(parents=True)
    (root / "iris_savedmodel" / "config.pbtxt").write_text('backend: "tensorflow"\n')
    shutil.copytree(
        examples_dir / "iris_tensorflow" / "1" / "model.savedmodel",
        root / "iris_savedmodel" / "1" / "model.savedmodel",
    )
    server = start_server(root)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        pixels = grpcclient.InferInput("INPUT__0", [3, 64], "FP32")
        pixels.set_data_from_numpy(np.zeros((3, 64), dtype=np.float32))
        result = client.infer("digits_libtorch", [pixels])
        assert result.as_numpy("OUTPUT__0").shape == (3, 10)
        assert result.as_numpy("OUTPUT__1").shape == (3,)
        config = client.get_model_config("digits_libtorch").config
        assert (config.platform, config.backend) == ("pytorch_libtorch", "pytorch")
        assert [list(t.dims) for t in config.output] == [[10], []]
        meta = client.get_model_metadata("iris_savedmodel")
        assert meta.platform == "tensorflow_savedmodel"
        features = grpcclient.InferInput(meta.inputs[0].name, [2, 4], "FP32")
        features.set_data_from_numpy(np.ones((2, 4), dtype=np.float32))
        answer = client.infer("iris_savedmodel", [features])
        assert answer.as_numpy("probabilities").shape == (2, 3)
    finally:
        client.close()
        server.stop()
