"""Version policies, a broken model isolated from the others, config and load errors reported."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.serverproc import ServerProcess, start_server

ROW = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}


def _model(root: Path, name: str, config: str, versions: list[int], source: Path | None) -> None:
    (root / name).mkdir()
    (root / name / "config.yaml").write_text(config)
    for version in versions:
        (root / name / str(version)).mkdir()
        if source is not None:
            shutil.copy(source, root / name / str(version) / source.name)


@pytest.fixture(scope="module")
def repo_server(
    examples_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    onnx = examples_dir / "iris_onnx" / "1" / "model.onnx"
    _model(root, "good", "runtime: onnx\n", [1], onnx)
    _model(root, "latest_default", "runtime: onnx\n", [1, 2, 3], onnx)
    _model(
        root,
        "latest_two",
        "runtime: onnx\nversion_policy: {latest: {num_versions: 2}}\n",
        [1, 2, 3],
        onnx,
    )
    _model(root, "all_versions", "runtime: onnx\nversion_policy: {all: {}}\n", [1, 2, 3], onnx)
    _model(
        root,
        "specific",
        "runtime: onnx\nversion_policy: {specific: {versions: [1, 3]}}\n",
        [1, 2, 3],
        onnx,
    )
    _model(root, "corrupt", "runtime: onnx\n", [1], None)
    (root / "corrupt" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    _model(root, "bad_config", "runtime: onnx\nmax_bach_size: 4\n", [1], onnx)
    _model(root, "no_such_runtime", "runtime: caffe9\n", [1], onnx)
    _model(root, "missing_file", "runtime: onnx\n", [1], None)
    _model(
        root,
        "wrong_input_name",
        "runtime: onnx\ninputs: [{name: x, datatype: FP32, shape: [-1, 4]}]\n",
        [1],
        onnx,
    )
    server = start_server(root)
    yield server
    server.stop()


def test_version_policies(repo_server: ServerProcess) -> None:
    with httpx.Client(base_url=repo_server.base_url) as client:

        def versions(model: str) -> list[str]:
            return list(client.get(f"/v2/models/{model}").json()["versions"])

        assert versions("latest_default") == ["3"]
        assert versions("latest_two") == ["2", "3"]
        assert versions("all_versions") == ["1", "2", "3"]
        assert versions("specific") == ["1", "3"]
        assert client.get("/v2/models/specific/versions/2/ready").status_code == 404
        response = client.post("/v2/models/all_versions/versions/2/infer", json={"inputs": [ROW]})
        assert response.json()["model_version"] == "2"
        # the default version is the highest
        response = client.post("/v2/models/all_versions/infer", json={"inputs": [ROW]})
        assert response.json()["model_version"] == "3"


@pytest.mark.parametrize(
    ("model", "fragments"),
    [
        ("corrupt", ["model 'corrupt' version 1", "model.onnx", "onnxruntime cannot load"]),
        ("missing_file", ["model 'missing_file' version 1", "model.onnx", "does not exist"]),
        ("no_such_runtime", ["runtime 'caffe9' is not available", "known runtimes"]),
        ("wrong_input_name", ["config inputs ['x'] are not in the model file"]),
    ],
)
def test_broken_models_are_reported_and_isolated(
    repo_server: ServerProcess, model: str, fragments: list[str]
) -> None:
    with httpx.Client(base_url=repo_server.base_url) as client:
        ready = client.get(f"/v2/models/{model}/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        infer = client.post(f"/v2/models/{model}/infer", json={"inputs": [ROW]})
        assert infer.status_code == 503
        errors = client.get("/v2").json()["model_errors"]
        reason = errors[f"{model}/1"]
        for fragment in fragments:
            assert fragment in reason
            assert fragment in infer.json()["error"]
        assert any(fragment in line for line in repo_server.output for fragment in fragments[-1:])
        # the others keep serving
        assert client.get("/v2/health/ready").status_code == 200
        good = client.post("/v2/models/good/infer", json={"inputs": [ROW]})
        assert good.status_code == 200
        assert good.json()["outputs"][0]["data"] == [0]


def test_config_error_names_file_and_field(repo_server: ServerProcess) -> None:
    with httpx.Client(base_url=repo_server.base_url) as client:
        errors = client.get("/v2").json()["model_errors"]
        assert "bad_config/config.yaml" in errors["bad_config"]
        assert "field 'max_bach_size'" in errors["bad_config"]
        index = client.post("/v2/repository/index").json()
        states = {(e["name"], e["version"]): e["state"] for e in index}
        assert states[("good", "1")] == "READY"
        assert states[("corrupt", "1")] == "UNAVAILABLE"
        assert states[("bad_config", "")] == "UNAVAILABLE"


def test_repository_index_over_grpc(repo_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(repo_server.grpc_url)
    try:
        index = client.get_model_repository_index()
        by_key = {(m.name, m.version): m for m in index.models}
        assert by_key[("good", "1")].state == "READY"
        assert "onnxruntime cannot load" in by_key[("corrupt", "1")].reason
        assert client.is_model_ready("good")
        assert not client.is_model_ready("corrupt")
        tensor = grpcclient.InferInput("input", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
        assert client.infer("good", [tensor]).as_numpy("label").tolist() == [0]
    finally:
        client.close()


def test_strict_readiness(examples_dir: Path, tmp_path: Path) -> None:
    _model(tmp_path, "corrupt", "runtime: onnx\n", [1], None)
    (tmp_path / "corrupt" / "1" / "model.onnx").write_bytes(b"garbage")
    shutil.copytree(examples_dir / "iris_onnx", tmp_path / "iris_onnx")
    server = start_server(tmp_path, "--strict-readiness")
    try:
        assert httpx.get(f"{server.base_url}/v2/health/ready").status_code == 503
        assert httpx.get(f"{server.base_url}/v2/models/iris_onnx/ready").status_code == 200
    finally:
        server.stop()
