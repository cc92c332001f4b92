"""Safe model loading through a real server: refused artefacts are UNAVAILABLE in the index
with the reason, and the repository API answers 400 for what must not load; the models
that may load keep serving."""

from __future__ import annotations

import base64
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serverproc import ServerProcess, start_server

LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def guarded(
    examples_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("guarded")
    shutil.copytree(examples_dir / "iris", root / "iris")  # pinned by the example builder
    shutil.copytree(examples_dir / "iris", root / "unpinned")
    (root / "unpinned" / "config.yaml").write_text("runtime: sklearn\n")
    shutil.copytree(examples_dir / "iris_onnx", root / "badpin")
    (root / "badpin" / "config.yaml").write_text(
        f"runtime: onnx\nsha256: {{1/model.onnx: '{'0' * 64}'}}\n"
    )
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(examples_dir / "iris_onnx" / "1" / "model.onnx", outside / "model.onnx")
    (root / "escape" / "1").mkdir(parents=True)
    (root / "escape" / "config.yaml").write_text("runtime: onnx\n")
    (root / "escape" / "1" / "model.onnx").symlink_to(outside / "model.onnx")
    server = start_server(
        root,
        "--model-control-mode",
        "explicit",
        *("--load-model", "iris", "--load-model", "unpinned", "--load-model", "badpin"),
        "--max-model-file-bytes",
        str(LIMIT),
    )
    yield server
    server.stop()


def _index(server: ServerProcess) -> dict[str, dict[str, Any]]:
    response = httpx.post(f"{server.base_url}/v2/repository/index", json={}, timeout=30)
    response.raise_for_status()
    return {entry["name"]: entry for entry in response.json()}


def _load(server: ServerProcess, model: str, parameters: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v2/repository/models/{model}/load",
        json={"parameters": parameters},
        timeout=60,
    )


def _iris_serves(server: ServerProcess) -> None:
    row = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
    answer = httpx.post(
        f"{server.base_url}/v2/models/iris/infer", json={"inputs": [row]}, timeout=30
    )
    assert answer.status_code == 200, answer.text


def test_refused_artefacts_are_unavailable_with_the_reason(guarded: ServerProcess) -> None:
    index = _index(guarded)
    assert index["iris"]["state"] == "READY", index["iris"]
    assert index["unpinned"]["state"] == "UNAVAILABLE"
    assert "joblib pickle, which runs code when it loads" in index["unpinned"]["reason"]
    assert index["badpin"]["state"] == "UNAVAILABLE"
    assert "sha256 mismatch for 1/model.onnx" in index["badpin"]["reason"]
    _iris_serves(guarded)


def test_the_load_api_refuses_what_must_not_load(
    guarded: ServerProcess, examples_dir: Path
) -> None:
    escape = _load(guarded, "escape", {})
    assert escape.status_code == 400
    assert "leaves the repository (through a symlink)" in escape.json()["error"]

    granted = _load(guarded, "unpinned", {"config": {"runtime": "sklearn", "trust_pickle": True}})
    assert granted.status_code == 400
    assert "only the model's config on the server's disk" in granted.json()["error"]

    pickle = (examples_dir / "iris" / "1" / "model.joblib").read_bytes()
    pin = {"1/model.joblib": hashlib.sha256(pickle).hexdigest()}
    sent = _load(
        guarded,
        "sent",
        {
            "config": {"runtime": "sklearn", "sha256": pin},
            "file:1/model.joblib": base64.b64encode(pickle).decode(),
        },
    )
    assert sent.status_code == 400 and "runs code when it loads" in sent.json()["error"]

    big = _load(
        guarded,
        "big",
        {
            "config": {"runtime": "onnx"},
            "file:1/model.onnx": base64.b64encode(bytes(LIMIT + 1)).decode(),
        },
    )
    assert big.status_code == 400 and "over the limit" in big.json()["error"]

    index = _index(guarded)
    assert "sent" not in index or index["sent"]["state"] != "READY"
    assert index["iris"]["state"] == "READY"
    _iris_serves(guarded)
