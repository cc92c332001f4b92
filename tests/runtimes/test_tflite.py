"""The tflite runtime: the digits classifier (fixed batch, signature) through ai-edge-litert."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbridge.examples.build import digits_classifier, digits_split
from inferbridge.examples.builders.native import digits_weights
from tests.runtimes.common import (
    TRANSPORTS,
    assert_same,
    copy_model,
    grpc_error,
    model_errors,
    platform_of,
    post_json,
    serving,
)
from tests.serverproc import ServerProcess

litert = pytest.importorskip("ai_edge_litert.interpreter")

OUTPUTS = ["scores", "probabilities", "label"]


@pytest.fixture(scope="module")
def tflite_model(examples_dir: Path) -> Path:
    if not (examples_dir / "digits_tflite").exists():
        pytest.skip("tflite example not built")
    return examples_dir / "digits_tflite"


def litert_in_process(model_file: Path, X: np.ndarray[Any, Any]) -> dict[str, Any]:
    """The interpreter's own answers, one fixed-size chunk at a time (padding the last)."""
    interpreter = litert.Interpreter(model_path=str(model_file))
    runner = interpreter.get_signature_runner("serving_default")
    fixed = int(runner.get_input_details()["pixels"]["shape"][0])
    parts = []
    for start in range(0, len(X), fixed):
        chunk = X[start : start + fixed]
        padded = np.zeros((fixed, X.shape[1]), np.float32)
        padded[: len(chunk)] = chunk
        result = runner(pixels=padded)
        parts.append({n: np.asarray(result[n])[: len(chunk)] for n in OUTPUTS})
    return {n: np.concatenate([p[n] for p in parts]) for n in OUTPUTS}


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("batch", [1, 4, 7, 32])
def test_answers_equal_litert_in_process(
    tflite_model: Path, server: ServerProcess, transport: str, batch: int
) -> None:
    X = digits_split()[1][:batch]
    want = litert_in_process(tflite_model / "1" / "model.tflite", X)
    got = TRANSPORTS[transport](server, "digits_tflite", {"pixels": X}, OUTPUTS)
    assert_same(got, want)


def test_matches_the_sklearn_model(tflite_model: Path, server: ServerProcess) -> None:
    X = digits_split()[1]
    reference = digits_classifier()
    got = TRANSPORTS["grpc"](server, "digits_tflite", {"pixels": X}, OUTPUTS)
    np.testing.assert_allclose(got["probabilities"], reference.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(got["label"], reference.predict(X))
    assert platform_of(server, "digits_tflite") == "tflite"


def test_bad_inputs(tflite_model: Path, server: ServerProcess) -> None:
    bad = [{"name": "pixels", "shape": [2, 4], "datatype": "FP32", "data": [0.0] * 8}]
    assert post_json(server, "digits_tflite", bad).status_code == 400
    wrong_name = [{"name": "image", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]
    assert post_json(server, "digits_tflite", wrong_name).status_code == 400
    doubles = {"pixels": np.zeros((1, 64), np.float64)}
    assert "INVALID_ARGUMENT" in grpc_error(server, "digits_tflite", doubles, OUTPUTS)


@pytest.fixture(scope="module")
def variants(
    tflite_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    from inferbridge.examples.builders.tflite import linear_tflite

    root = tmp_path_factory.mktemp("tflite")
    copy_model(tflite_model.parent, "digits_tflite", root)
    coef, intercept = digits_weights(digits_classifier())
    dynamic = root / "dynamic_no_signature"
    (dynamic / "1").mkdir(parents=True)
    (dynamic / "1" / "model.tflite").write_bytes(
        linear_tflite(coef, intercept, -1, "pixels", signature=False)
    )
    (dynamic / "config.yaml").write_text("runtime: tflite\nparameters: {num_threads: 2}\n")
    corrupt = copy_model(tflite_model.parent, "digits_tflite", root, "corrupt")
    (corrupt / "1" / "model.tflite").write_bytes(b"TFL3 but not really a flatbuffer")
    signature = copy_model(tflite_model.parent, "digits_tflite", root, "no_such_signature")
    (signature / "config.yaml").write_text("runtime: tflite\nparameters: {signature: predict}\n")
    with serving(root) as server:
        yield server


@pytest.mark.parametrize("batch", [1, 3, 50])
def test_dynamic_batch_without_signature(
    tflite_model: Path, variants: ServerProcess, batch: int
) -> None:
    X = digits_split()[1][:batch]
    want = litert_in_process(tflite_model / "1" / "model.tflite", X)
    got = TRANSPORTS["grpc"](variants, "dynamic_no_signature", {"pixels": X}, OUTPUTS)
    assert_same(got, want)


def test_load_errors_name_model_file_and_cause(variants: ServerProcess) -> None:
    errors = model_errors(variants)
    corrupt = errors["corrupt/1"]
    assert "corrupt" in corrupt and "model.tflite" in corrupt
    assert "ai-edge-litert cannot load" in corrupt
    missing = errors["no_such_signature/1"]
    assert "signature='predict'" in missing and "serving_default" in missing
    assert "digits_tflite/1" not in errors


@pytest.fixture(scope="module")
def torch_converted(examples_dir: Path) -> Path:
    if not (examples_dir / "digits_tflite_torch").exists():
        pytest.skip("litert-torch converted example not present")
    return examples_dir / "digits_tflite_torch" / "1" / "model.tflite"


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("batch", [1, 13])
def test_litert_torch_export_serves_any_batch_with_renamed_tensors(
    torch_converted: Path, server: ServerProcess, transport: str, batch: int
) -> None:
    X = digits_split()[1][:batch]
    runner = litert.Interpreter(model_path=str(torch_converted)).get_signature_runner()
    parts = [runner(args_0=X[i : i + 1]) for i in range(batch)]
    want = {
        "probabilities": np.concatenate([p["output_0"] for p in parts]),
        "label": np.concatenate([p["output_1"] for p in parts]),
    }
    got = TRANSPORTS[transport](
        server, "digits_tflite_torch", {"pixels": X}, ["probabilities", "label"]
    )
    assert_same(got, want)


def test_litert_torch_export_accuracy(torch_converted: Path, server: ServerProcess) -> None:
    _, X_test, _, y_test = digits_split()
    got = TRANSPORTS["grpc"](server, "digits_tflite_torch", {"pixels": X_test}, ["label"])
    assert float((got["label"] == y_test).mean()) > 0.93
