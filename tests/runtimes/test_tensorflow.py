"""The tensorflow runtime: a Keras iris classifier served from a SavedModel signature."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbridge.examples.build import iris_split
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

OUTPUTS = ["probabilities", "label"]


@pytest.fixture(scope="module")
def tf_model(examples_dir: Path) -> Path:
    if not (examples_dir / "iris_tensorflow").exists():
        pytest.skip("tensorflow example not built")
    return examples_dir / "iris_tensorflow"


@pytest.fixture(scope="module")
def serving_default(tf_model: Path) -> Any:
    return tf.saved_model.load(str(tf_model / "1" / "model.savedmodel")).signatures[
        "serving_default"
    ]


def tf_in_process(function: Any, X: np.ndarray[Any, Any]) -> dict[str, Any]:
    results = function(input=tf.constant(X))
    return {name: results[name].numpy() for name in OUTPUTS}


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("batch", [1, 8, 45])
def test_answers_equal_tensorflow_in_process(
    serving_default: Any, server: ServerProcess, transport: str, batch: int
) -> None:
    X = iris_split()[1][:batch]
    got = TRANSPORTS[transport](server, "iris_tensorflow", {"input": X}, OUTPUTS)
    assert_same(got, tf_in_process(serving_default, X))


def test_held_out_accuracy_and_metadata(tf_model: Path, server: ServerProcess) -> None:
    _, X_test, _, y_test = iris_split()
    got = TRANSPORTS["grpc"](server, "iris_tensorflow", {"input": X_test}, OUTPUTS)
    assert float((got["label"] == y_test).mean()) >= 0.9
    assert platform_of(server, "iris_tensorflow") == "tensorflow_savedmodel"


def test_bad_inputs(tf_model: Path, server: ServerProcess) -> None:
    bad = [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0.0] * 3}]
    assert post_json(server, "iris_tensorflow", bad).status_code == 400
    ints = {"input": np.zeros((1, 4), np.int64)}
    assert "INVALID_ARGUMENT" in grpc_error(server, "iris_tensorflow", ints, OUTPUTS)


@pytest.fixture(scope="module")
def broken(tf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tensorflow")
    copy_model(tf_model.parent, tf_model.name, root)
    corrupt = copy_model(tf_model.parent, tf_model.name, root, "corrupt")
    (corrupt / "1" / "model.savedmodel" / "saved_model.pb").write_bytes(b"\x08garbage")
    signature = copy_model(tf_model.parent, tf_model.name, root, "no_such_signature")
    (signature / "config.yaml").write_text(
        "runtime: tensorflow\nparameters: {signature: predict}\n"
    )
    empty = copy_model(tf_model.parent, tf_model.name, root, "not_a_directory")
    shutil.rmtree(empty / "1" / "model.savedmodel")
    (empty / "1" / "model.savedmodel").write_text("a file")
    with serving(root) as server:
        yield server


def test_load_errors_name_model_file_and_cause(broken: ServerProcess) -> None:
    errors = model_errors(broken)
    corrupt = errors["corrupt/1"]
    assert "corrupt" in corrupt and "model.savedmodel" in corrupt
    assert "tf.saved_model.load cannot load" in corrupt
    assert "no signature 'predict'" in errors["no_such_signature/1"]
    assert "serving_default" in errors["no_such_signature/1"]
    assert "not a SavedModel directory" in errors["not_a_directory/1"]
    X = iris_split()[1][:3]
    assert TRANSPORTS["grpc"](broken, "iris_tensorflow", {"input": X}, OUTPUTS)["label"].shape == (
        3,
    )
