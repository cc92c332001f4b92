"""The torchscript runtime: the digits MLP trained in torch, traced, served on CPU (and GPU)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbridge.examples.build import digits_split
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

torch = pytest.importorskip("torch")

OUTPUTS = ["probabilities", "label"]


@pytest.fixture(scope="module")
def torch_model(examples_dir: Path) -> Path:
    if not (examples_dir / "digits_torchscript").exists():
        pytest.skip("torchscript example not built")
    return examples_dir / "digits_torchscript"


def torch_in_process(model_file: Path, X: np.ndarray[Any, Any], device: str = "cpu") -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in torch 2.10+
        module = torch.jit.load(str(model_file), map_location=device).eval()
    with torch.inference_mode():
        probabilities, label = module(torch.from_numpy(X.copy()).to(device))
    return {"probabilities": probabilities.cpu().numpy(), "label": label.cpu().numpy()}


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("batch", [1, 6, 32])
def test_answers_equal_torch_in_process(
    torch_model: Path, server: ServerProcess, transport: str, batch: int
) -> None:
    X = digits_split()[1][:batch]
    want = torch_in_process(torch_model / "1" / "model.pt", X)
    got = TRANSPORTS[transport](server, "digits_torchscript", {"pixels": X}, OUTPUTS)
    assert_same(got, want)


def test_held_out_accuracy_and_platform(torch_model: Path, server: ServerProcess) -> None:
    _, X_test, _, y_test = digits_split()
    got = TRANSPORTS["grpc"](server, "digits_torchscript", {"pixels": X_test}, OUTPUTS)
    assert float((got["label"] == y_test).mean()) > 0.93
    np.testing.assert_array_equal(got["label"], got["probabilities"].argmax(1))
    assert platform_of(server, "digits_torchscript") == "pytorch_torchscript"


def test_bad_inputs(torch_model: Path, server: ServerProcess) -> None:
    bad = [{"name": "pixels", "shape": [1, 63], "datatype": "FP32", "data": [0.0] * 63}]
    assert post_json(server, "digits_torchscript", bad).status_code == 400
    ints = {"pixels": np.zeros((1, 64), np.int32)}
    assert "INVALID_ARGUMENT" in grpc_error(server, "digits_torchscript", ints, OUTPUTS)


def _variant(source: Path, root: Path, name: str, config: str) -> Path:
    target = copy_model(source.parent, source.name, root, name)
    (target / "config.yaml").write_text(config + "trust_pickle: true\n")
    return target


IO = (
    "inputs: [{name: pixels, datatype: FP32, shape: [-1, 64]}]\n"
    "outputs: [{name: probabilities, datatype: FP32, shape: [-1, 10]},"
    " {name: label, datatype: INT64, shape: [-1]}]\n"
)


@pytest.fixture(scope="module")
def variants(
    torch_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("torchscript")
    copy_model(torch_model.parent, torch_model.name, root)
    corrupt = copy_model(torch_model.parent, torch_model.name, root, "corrupt")
    (corrupt / "1" / "model.pt").write_bytes(b"PK\x03\x04 not really a zip archive")
    trust_without_pin(corrupt)
    _variant(torch_model, root, "no_names", "runtime: torchscript\n")
    _variant(
        torch_model,
        root,
        "gpu",
        f"runtime: torchscript\n{IO}instance_group: [{{count: 1, kind: gpu, gpus: [0]}}]\n",
    )
    _variant(
        torch_model,
        root,
        "one_output",
        "runtime: torchscript\n"
        "inputs: [{name: pixels, datatype: FP32, shape: [-1, 64]}]\n"
        "outputs: [{name: probabilities, datatype: FP32, shape: [-1, 10]}]\n",
    )
    _variant(
        torch_model,
        root,
        "frozen",
        f"runtime: torchscript\n{IO}parameters: {{freeze: true, num_threads: 2}}\n",
    )
    with serving(root) as server:
        yield server


def test_load_errors_name_model_file_and_cause(variants: ServerProcess) -> None:
    errors = model_errors(variants)
    corrupt = errors["corrupt/1"]
    assert (
        "corrupt" in corrupt and "model.pt" in corrupt and "torch.jit.load cannot load" in corrupt
    )
    assert "must declare both inputs and outputs" in errors["no_names/1"]
    if not torch.cuda.is_available():
        assert "cuda:0" in errors["gpu/1"] and "no CUDA device" in errors["gpu/1"]
    assert "digits_torchscript/1" not in errors


def test_output_count_mismatch_fails_the_request(variants: ServerProcess) -> None:
    X = digits_split()[1][:2]
    status = grpc_error(variants, "one_output", {"pixels": X}, ["probabilities"])
    assert "INTERNAL" in status and "returned 2 values" in status


def test_frozen_module_answers_the_same(torch_model: Path, variants: ServerProcess) -> None:
    X = digits_split()[1][:9]
    got = TRANSPORTS["http"](variants, "frozen", {"pixels": X}, OUTPUTS)
    assert_same(got, torch_in_process(torch_model / "1" / "model.pt", X))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_instance_answers_equal_torch_on_the_gpu(
    torch_model: Path, variants: ServerProcess
) -> None:
    X = digits_split()[1][:32]
    want = torch_in_process(torch_model / "1" / "model.pt", X, "cuda:0")
    got = TRANSPORTS["grpc"](variants, "gpu", {"pixels": X}, OUTPUTS)
    assert_same(got, want)
