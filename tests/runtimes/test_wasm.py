"""The wasm runtime: the iris linear model in a wasmtime sandbox, and misbehaving modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from inferbridge.examples.build import digits_classifier, digits_split, iris_classifier, iris_split
from inferbridge.examples.builders.native import digits_weights
from inferbridge.repository.config import load_config
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

wasmtime = pytest.importorskip("wasmtime")

OUTPUTS = ["scores", "label"]
ABI = """
  (memory (export "memory") 1)
  (func (export "ib_alloc") (param i32) (result i32) (i32.const 1024))
"""
IO = (
    "inputs: [{name: input, datatype: FP32, shape: [-1, 4]}]\n"
    "outputs: [{name: scores, datatype: FP32, shape: [-1, 3]},"
    " {name: label, datatype: INT64, shape: [-1]}]\n"
)
LOOP = f"""(module {ABI}
  (func (export "ib_infer") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0)))"""
GRAB = f"""(module {ABI}
  (func (export "ib_infer") (param i32 i32 i32) (result i32)
    (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))"""
TRAP = f"""(module {ABI}
  (func (export "ib_infer") (param i32 i32 i32) (result i32)
    (i32.div_u (i32.const 1) (i32.const 0))))"""
IMPORTS = """(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32)
  (result i32))) (memory (export "memory") 1))"""


@pytest.fixture(scope="module")
def wasm_model(examples_dir: Path) -> Path:
    if not (examples_dir / "iris_wasm").exists():
        pytest.skip("wasm example not built")
    return examples_dir / "iris_wasm"


def in_process(model_dir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    from inferbridge.runtimes.wasm import WasmRuntime

    runtime = WasmRuntime()
    runtime.load(model_dir / "1", load_config(model_dir / "config.yaml"), "cpu")
    try:
        return runtime.infer(inputs)
    finally:
        runtime.unload()


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("batch", [1, 5, 45])
def test_answers_equal_wasmtime_in_process(
    wasm_model: Path, server: ServerProcess, transport: str, batch: int
) -> None:
    X = iris_split()[1][:batch]
    want = in_process(wasm_model, {"input": X})
    got = TRANSPORTS[transport](server, "iris_wasm", {"input": X}, OUTPUTS)
    assert_same(got, want)


def test_answers_equal_numpy(wasm_model: Path, server: ServerProcess) -> None:
    X = iris_split()[1]
    model = iris_classifier()
    scores = X.astype(np.float64) @ model.coef_.T + model.intercept_
    got = TRANSPORTS["grpc"](server, "iris_wasm", {"input": X}, OUTPUTS)
    np.testing.assert_allclose(got["scores"], scores, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got["label"], scores.argmax(axis=1))
    np.testing.assert_array_equal(got["label"], model.predict(X))
    assert platform_of(server, "iris_wasm") == "wasm"


def test_bad_inputs(wasm_model: Path, server: ServerProcess) -> None:
    bad = [{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [1.0] * 5}]
    assert post_json(server, "iris_wasm", bad).status_code == 400
    assert "INVALID_ARGUMENT" in grpc_error(
        server, "iris_wasm", {"input": np.zeros((2, 4), np.float64)}, OUTPUTS
    )
    X = iris_split()[1][:2].copy()
    X[0, 0] = np.inf
    with pytest.raises(InferenceServerException, match="inputs must be finite numbers") as bad:
        TRANSPORTS["http"](server, "iris_wasm", {"input": X}, OUTPUTS)
    assert "400" in str(bad.value.status())


@pytest.fixture(scope="module")
def c_model(examples_dir: Path) -> Path:
    if not (examples_dir / "digits_wasm").exists():
        pytest.skip("digits_wasm not built (clang and lld compile C to wasm32)")
    return examples_dir / "digits_wasm"


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("batch", [1, 17])
def test_c_module_answers_equal_wasmtime_and_numpy(
    c_model: Path, server: ServerProcess, transport: str, batch: int
) -> None:
    X = digits_split()[1][:batch]
    got = TRANSPORTS[transport](server, "digits_wasm", {"pixels": X}, OUTPUTS)
    assert_same(got, in_process(c_model, {"pixels": X}))
    coef, intercept = digits_weights(digits_classifier())
    scores = X.astype(np.float64) @ coef.T + intercept
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(got["label"], digits_classifier().predict(X))


def _model(root: Path, name: str, wat: str, parameters: str) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "1" / "model.wat").write_text(wat)
    (root / name / "config.yaml").write_text(
        f"runtime: wasm\nmodel_file: model.wat\nparameters: {parameters}\n{IO}"
    )


@pytest.fixture(scope="module")
def sandbox(wasm_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("wasm")
    copy_model(wasm_model.parent, "iris_wasm", root)
    _model(root, "loops", LOOP, "{fuel: 20000000, timeout_ms: 60000}")
    _model(root, "loops_slowly", LOOP, "{fuel: 1000000000000000, timeout_ms: 300}")
    _model(root, "grabs_memory", GRAB, "{memory_limit_mb: 8}")
    _model(root, "divides_by_zero", TRAP, "{}")
    _model(root, "imports_wasi", IMPORTS, "{}")
    _model(root, "no_inputs_declared", LOOP, "{}")
    (root / "no_inputs_declared" / "config.yaml").write_text(
        "runtime: wasm\nmodel_file: model.wat\n"
    )
    (root / "corrupt" / "1").mkdir(parents=True)
    (root / "corrupt" / "1" / "model.wasm").write_bytes(b"\0asm\x01\0\0\0garbage")
    (root / "corrupt" / "config.yaml").write_text(f"runtime: wasm\n{IO}")
    (root / "bad_params" / "1").mkdir(parents=True)
    (root / "bad_params" / "1" / "model.wat").write_text(LOOP)
    (root / "bad_params" / "config.yaml").write_text(
        f"runtime: wasm\nmodel_file: model.wat\nparameters: {{fuel: lots}}\n{IO}"
    )
    with serving(root) as server:
        yield server


ROW = {"input": np.ones((2, 4), np.float32)}


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("loops", "used up its fuel budget of 20000000"),
        ("loops_slowly", "exceeded its wall-clock limit of 300 ms"),
        ("grabs_memory", "memory reached the cap of 8 MiB"),
        ("divides_by_zero", "wasm trap"),
    ],
)
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_misbehaving_module_fails_only_its_request(
    wasm_model: Path, sandbox: ServerProcess, model: str, fragment: str, transport: str
) -> None:
    with pytest.raises(InferenceServerException, match=fragment) as failure:
        TRANSPORTS[transport](sandbox, model, ROW, OUTPUTS)
    assert "500" in str(failure.value.status()) or "INTERNAL" in str(failure.value.status())
    # The same module is ready for the next request (and fails it the same way) ...
    with pytest.raises(InferenceServerException, match=fragment):
        TRANSPORTS[transport](sandbox, model, ROW, OUTPUTS)
    # ... and the well-behaved model next to it answers correctly.
    X = iris_split()[1][:3]
    assert_same(
        TRANSPORTS[transport](sandbox, "iris_wasm", {"input": X}, OUTPUTS),
        in_process(wasm_model, {"input": X}),
    )
    assert sandbox.alive()


def test_load_errors_name_model_file_and_cause(sandbox: ServerProcess) -> None:
    errors = model_errors(sandbox)
    imports = errors["imports_wasi/1"]
    assert "imports_wasi" in imports and "model.wat" in imports
    assert "wasi_snapshot_preview1.fd_write" in imports and "no host imports" in imports
    corrupt = errors["corrupt/1"]
    assert "corrupt" in corrupt and "model.wasm" in corrupt and "cannot compile" in corrupt
    assert "must declare both inputs and outputs" in errors["no_inputs_declared/1"]
    assert "bad wasm parameter" in errors["bad_params/1"]
    assert "iris_wasm/1" not in errors
