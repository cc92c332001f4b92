"""The tensorflow runtime: a Keras iris classifier served from a SavedModel signature.

TensorFlow is never imported in the pytest process: its bundled LLVM and the one in
torch's triton abort the process when both load (which another test's transformers
import would trigger). The framework's own answers come from a child process instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
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

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

OUTPUTS = ["probabilities", "label"]
BATCHES = [1, 8, 45]
_REFERENCE = """
import sys, numpy as np, tensorflow as tf
model, inputs, output = sys.argv[1:4]
function = tf.saved_model.load(model).signatures["serving_default"]
X = np.load(inputs)
results = {}
for rows in map(int, sys.argv[4:] or [len(X)]):
    answer = function(input=tf.constant(X[:rows]))
    results.update({f"{name}_{rows}": answer[name].numpy() for name in answer})
np.savez(output, **results)
"""


@pytest.fixture(scope="module")
def tf_model(examples_dir: Path) -> Path:
    if not (examples_dir / "iris_tensorflow").exists():
        pytest.skip("tensorflow example not built")
    return examples_dir / "iris_tensorflow"


@pytest.fixture(scope="module")
def tf_answers(tf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The SavedModel's own answers for the first `rows` held-out rows, per batch size."""
    work = tmp_path_factory.mktemp("tf_reference")
    np.save(work / "x.npy", iris_split()[1])
    done = subprocess.run(
        [
            sys.executable, "-c", _REFERENCE, str(tf_model / "1" / "model.savedmodel"),
            str(work / "x.npy"), str(work / "out.npz"), *map(str, BATCHES),
        ],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(work / "out.npz") as answers:
        return {key: answers[key] for key in answers.files}


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("batch", BATCHES)
def test_answers_equal_tensorflow_in_process(
    tf_answers: dict[str, Any], server: ServerProcess, transport: str, batch: int
) -> None:
    X = iris_split()[1][:batch]
    got = TRANSPORTS[transport](server, "iris_tensorflow", {"input": X}, OUTPUTS)
    assert_same(got, {name: tf_answers[f"{name}_{batch}"] for name in OUTPUTS})


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
