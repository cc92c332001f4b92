"""The opencv runtime: digits through cv2.dnn, faces through the Haar cascade."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from inferbridge.examples.build import digits_classifier, digits_split
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

cv2 = pytest.importorskip("cv2")

DIGITS_OUTPUTS = ["scores", "probabilities"]
DETECT = {"scaleFactor": 1.1, "minNeighbors": 5, "minSize": (30, 30)}


@pytest.fixture(scope="module")
def opencv_models(examples_dir: Path) -> Path:
    if not (examples_dir / "digits_opencv").exists() or not (examples_dir / "faces").exists():
        pytest.skip("opencv examples not built")
    return examples_dir


def portrait() -> np.ndarray[Any, Any]:
    """scikit-image's astronaut as a grayscale image (one face), else a blank frame."""
    try:
        from skimage.data import astronaut
    except ImportError:
        return np.zeros((240, 320), np.uint8)
    return np.ascontiguousarray(cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY))


def dnn_in_process(model_dir: Path, X: np.ndarray[Any, Any]) -> dict[str, Any]:
    net = cv2.dnn.readNet(str(model_dir / "1" / "model.onnx"))
    net.setInput(X)
    return dict(zip(DIGITS_OUTPUTS, net.forward(DIGITS_OUTPUTS), strict=True))


def cascade_in_process(model_dir: Path, images: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    classifier = cv2.CascadeClassifier(str(model_dir / "1" / "model.xml"))
    rows = []
    for index, image in enumerate(images):
        found = np.asarray(classifier.detectMultiScale(image, **DETECT)).reshape(-1, 4)
        rows.extend([index, *box] for box in found.tolist())
    return np.array(rows, dtype=np.int32).reshape(-1, 5)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("batch", [1, 9, 64])
def test_dnn_answers_equal_cv2_in_process(
    opencv_models: Path, server: ServerProcess, transport: str, batch: int
) -> None:
    X = digits_split()[1][:batch]
    want = dnn_in_process(opencv_models / "digits_opencv", X)
    got = TRANSPORTS[transport](server, "digits_opencv", {"pixels": X}, DIGITS_OUTPUTS)
    assert_same(got, want)


def test_dnn_matches_onnxruntime_and_sklearn(opencv_models: Path, server: ServerProcess) -> None:
    X = digits_split()[1]
    session = onnxruntime.InferenceSession(
        str(opencv_models / "digits_opencv" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    scores, probabilities = session.run(DIGITS_OUTPUTS, {"pixels": X})
    got = TRANSPORTS["grpc"](server, "digits_opencv", {"pixels": X}, DIGITS_OUTPUTS)
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got["probabilities"], probabilities, atol=1e-5)
    reference = digits_classifier()
    np.testing.assert_allclose(got["probabilities"], reference.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(got["probabilities"].argmax(1), reference.predict(X))
    assert platform_of(server, "digits_opencv") == "opencv"
    assert platform_of(server, "faces") == "opencv"


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("batch", [1, 3])
def test_cascade_boxes_equal_cv2_in_process(
    opencv_models: Path, server: ServerProcess, transport: str, batch: int
) -> None:
    face = portrait()
    images = np.stack([face, np.ascontiguousarray(face[:, ::-1]), np.zeros_like(face)][:batch])
    want = cascade_in_process(opencv_models / "faces", images)
    got = TRANSPORTS[transport](server, "faces", {"image": images}, ["boxes"])
    assert_same(got, {"boxes": want})


def test_cascade_finds_the_astronauts_face(opencv_models: Path, server: ServerProcess) -> None:
    pytest.importorskip("skimage")
    got = TRANSPORTS["grpc"](server, "faces", {"image": portrait()[np.newaxis]}, ["boxes"])
    np.testing.assert_array_equal(got["boxes"], [[0, 177, 66, 95, 95]])


def test_bad_inputs(opencv_models: Path, server: ServerProcess) -> None:
    wrong_width = [{"name": "pixels", "shape": [1, 8], "datatype": "FP32", "data": [0.0] * 8}]
    assert post_json(server, "digits_opencv", wrong_width).status_code == 400
    colour = {"image": np.zeros((1, 40, 40, 3), np.uint8)}
    assert "INVALID_ARGUMENT" in grpc_error(server, "faces", colour, ["boxes"])
    floats = {"image": np.zeros((1, 40, 40), np.float32)}
    assert "INVALID_ARGUMENT" in grpc_error(server, "faces", floats, ["boxes"])


@pytest.fixture(scope="module")
def broken(
    opencv_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("opencv")
    copy_model(opencv_models, "digits_opencv", root)
    corrupt = copy_model(opencv_models, "digits_opencv", root, "corrupt_onnx")
    (corrupt / "1" / "model.onnx").write_bytes(b"not a protobuf at all")
    bad_xml = copy_model(opencv_models, "faces", root, "corrupt_cascade")
    (bad_xml / "1" / "model.xml").write_text("<opencv_storage><nothing/></opencv_storage>")
    backend = copy_model(opencv_models, "digits_opencv", root, "bad_backend")
    text = (backend / "config.yaml").read_text().replace("backend: opencv", "backend: tpu9000")
    (backend / "config.yaml").write_text(text)
    outputs = copy_model(opencv_models, "digits_opencv", root, "bad_output")
    text = (outputs / "config.yaml").read_text().replace("name: scores", "name: logits")
    (outputs / "config.yaml").write_text(text)
    with serving(root) as server:
        yield server


def test_load_errors_name_model_file_and_cause(broken: ServerProcess) -> None:
    errors = model_errors(broken)
    corrupt = errors["corrupt_onnx/1"]
    assert (
        "corrupt_onnx" in corrupt and "model.onnx" in corrupt and "cv2.dnn cannot read" in corrupt
    )
    cascade = errors["corrupt_cascade/1"]
    assert "corrupt_cascade" in cascade and "model.xml" in cascade
    assert "CascadeClassifier cannot read" in cascade
    assert "backend='tpu9000'" in errors["bad_backend/1"]
    assert "['logits']" in errors["bad_output/1"] and "not layers" in errors["bad_output/1"]
    X = digits_split()[1][:4]
    got = TRANSPORTS["grpc"](broken, "digits_opencv", {"pixels": X}, DIGITS_OUTPUTS)
    assert got["probabilities"].shape == (4, 10)
