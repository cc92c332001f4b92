"""The native runtime: Go (c-shared) and C libraries through the real server."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from inferbridge.examples.build import digits_classifier, digits_split, iris_split
from inferbridge.repository.config import load_config
from inferbridge.runtimes.native import NativeRuntime
from tests.runtimes.common import (
    TRANSPORTS,
    assert_same,
    copy_model,
    grpc_error,
    model_errors,
    platform_of,
    post_json,
    serving,
    trust_without_pin,
)
from tests.serverproc import ServerProcess

OUTPUTS = ["probabilities", "label"]
MODELS = {"iris_go": ("input", iris_split), "digits_c": ("pixels", digits_split)}


@pytest.fixture(scope="module")
def native_models(examples_dir: Path) -> Path:
    if not (examples_dir / "iris_go").exists() or not (examples_dir / "digits_c").exists():
        pytest.skip("native examples not built (go or gcc missing)")
    return examples_dir


def in_process(examples: Path, model: str, inputs: dict[str, Any]) -> dict[str, Any]:
    runtime = NativeRuntime()
    runtime.load(examples / model / "1", load_config(examples / model / "config.yaml"), "cpu")
    try:
        return runtime.infer(inputs)
    finally:
        runtime.unload()


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_answers_equal_the_library_in_process(
    native_models: Path, server: ServerProcess, transport: str, model: str, batch: int
) -> None:
    input_name, split = MODELS[model]
    X_test = split()[1][:batch]
    want = in_process(native_models, model, {input_name: X_test})
    got = TRANSPORTS[transport](server, model, {input_name: X_test}, OUTPUTS)
    assert_same(got, want)


def test_go_library_matches_the_sklearn_model(native_models: Path, server: ServerProcess) -> None:
    _, X_test, _, _ = iris_split()
    reference = joblib.load(native_models / "iris" / "1" / "model.joblib")
    got = TRANSPORTS["grpc"](server, "iris_go", {"input": X_test}, OUTPUTS)
    np.testing.assert_allclose(got["probabilities"], reference.predict_proba(X_test), atol=1e-5)
    np.testing.assert_array_equal(got["label"], reference.predict(X_test))


def test_c_library_matches_the_sklearn_model(native_models: Path, server: ServerProcess) -> None:
    _, X_test, _, _ = digits_split()
    reference = digits_classifier()
    got = TRANSPORTS["http"](server, "digits_c", {"pixels": X_test}, OUTPUTS)
    np.testing.assert_allclose(got["probabilities"], reference.predict_proba(X_test), atol=1e-5)
    np.testing.assert_array_equal(got["label"], reference.predict(X_test))


def test_platform(native_models: Path, server: ServerProcess) -> None:
    assert platform_of(server, "iris_go") == "native"
    assert platform_of(server, "digits_c") == "native"


def test_bad_inputs_are_4xx(native_models: Path, server: ServerProcess) -> None:
    wrong_width = post_json(
        server,
        "iris_go",
        [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
    )
    assert wrong_width.status_code == 400, wrong_width.text
    wrong_type = post_json(
        server,
        "iris_go",
        [{"name": "input", "shape": [1, 4], "datatype": "INT32", "data": [1] * 4}],
    )
    assert wrong_type.status_code == 400, wrong_type.text
    status = grpc_error(server, "digits_c", {"pixels": np.zeros((2, 63), np.float32)}, OUTPUTS)
    assert "INVALID_ARGUMENT" in status


def test_library_error_code_fails_only_that_request(
    native_models: Path, server: ServerProcess
) -> None:
    X = iris_split()[1][:3].copy()
    X[1, 2] = np.nan
    with pytest.raises(InferenceServerException, match="row 1 feature 2 is NaN") as failure:
        TRANSPORTS["http"](server, "iris_go", {"input": X}, OUTPUTS)
    # Status 1 (IB_INVALID_INPUT) is the client's fault: 400 / INVALID_ARGUMENT.
    assert "400" in str(failure.value.status())
    status = grpc_error(
        server, "digits_c", {"pixels": np.full((2, 64), np.inf, np.float32)}, OUTPUTS
    )
    assert "row 0 pixel 0 is not finite" in status and "INVALID_ARGUMENT" in status
    # The library and the server carry on.
    X_ok = iris_split()[1][:3]
    assert_same(
        TRANSPORTS["grpc"](server, "iris_go", {"input": X_ok}, OUTPUTS),
        in_process(native_models, "iris_go", {"input": X_ok}),
    )


def test_load_errors_name_model_file_and_cause(native_models: Path, tmp_path: Path) -> None:
    copy_model(native_models, "iris_go", tmp_path)
    corrupt = copy_model(native_models, "iris_go", tmp_path, "corrupt_so")
    (corrupt / "1" / "model.so").write_bytes(b"\x7fELF this is not a shared library")
    trust_without_pin(corrupt)
    no_abi = copy_model(native_models, "iris_go", tmp_path, "not_inferbridge")
    libm = next(
        (
            p
            for p in (Path("/lib/x86_64-linux-gnu/libm.so.6"), Path("/usr/lib64/libm.so.6"))
            if p.exists()
        ),
        None,
    )
    if libm is not None:
        shutil.copy(libm, no_abi / "1" / "model.so")
        trust_without_pin(no_abi)
    else:
        shutil.rmtree(no_abi)
    undeclared = copy_model(native_models, "iris_go", tmp_path, "no_tensors")
    (undeclared / "config.yaml").write_text("runtime: native\n")
    with serving(tmp_path) as server:
        errors = model_errors(server)
        assert "corrupt_so/1" in errors
        message = errors["corrupt_so/1"]
        assert "corrupt_so" in message and "model.so" in message
        assert "cannot load native library" in message
        if libm is not None:
            assert "ib_infer" in errors["not_inferbridge/1"]
        assert "must declare both inputs and outputs" in errors["no_tensors/1"]
        assert "model.so" in errors["no_tensors/1"]
        # The good model next to them serves.
        X = iris_split()[1][:2]
        got = TRANSPORTS["grpc"](server, "iris_go", {"input": X}, OUTPUTS)
        assert got["label"].shape == (2,)
        one_row = [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]
        assert post_json(server, "corrupt_so", one_row).status_code == 503
