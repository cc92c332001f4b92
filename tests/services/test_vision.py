"""Vision services end to end over REST (multipart) and OIP (REST and gRPC, BYTES input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from inferbridge.examples.builders.services import DETECTION_CLASSES
from tests.serverproc import ServerProcess
from tests.services.common import astronaut_jpeg, bomb_png, bytes_tensor, encode, iou, oip

pytest.importorskip("cv2")
pytest.importorskip("skimage")

REFERENCE_FACE = [177, 66, 95, 95]
# The constructed detector's known answer on a 256 x 128 image (letterbox scale 1/4, top
# padding 16): anchor 0 (person) and anchor 2 (dog) mapped back to original pixels.
EXPECTED_DETECTIONS = [
    {"label": "person", "class": 0, "score": 0.9, "x": 64.0, "y": 32.0, "w": 128.0, "h": 64.0},
    {"label": "dog", "class": 1, "score": 0.7, "x": 144.0, "y": 80.0, "w": 64.0, "h": 32.0},
]


@pytest.fixture(scope="module")
def vision(examples_dir: Path, server: ServerProcess) -> ServerProcess:
    for name in ("face_detection", "digits_classifier", "detection"):
        if not (examples_dir / name).exists():
            pytest.skip(f"example {name} not built")
    return server


def upload(server: ServerProcess, service: str, data: bytes, **params: Any) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/vision/{service}",
        files={"image": ("upload.jpg", data, "image/jpeg")},
        params=params,
        timeout=60,
    )


def test_pipelines_are_described_through_oip_metadata(vision: ServerProcess) -> None:
    meta = httpx.get(f"{vision.base_url}/v2/models/face_detection", timeout=10).json()
    assert meta["platform"] == "pipeline"
    assert meta["inputs"][0] == {"name": "image", "datatype": "BYTES", "shape": [-1]}
    assert [o["name"] for o in meta["outputs"]] == ["boxes", "count"]


def test_faces_on_the_astronaut(vision: ServerProcess) -> None:
    response = upload(vision, "faces", astronaut_jpeg())
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert len(faces) == 1
    box = [faces[0][k] for k in "xywh"]
    assert iou(box, REFERENCE_FACE) >= 0.5, box


def test_faces_detector_parameters_per_request(vision: ServerProcess) -> None:
    assert upload(vision, "faces", astronaut_jpeg(), min_size=400).json() == {"faces": []}
    same = upload(vision, "faces", astronaut_jpeg(), scale_factor=1.05, min_neighbors=3)
    assert len(same.json()["faces"]) >= 1
    bad = upload(vision, "faces", astronaut_jpeg(), scale_factor="0.5")
    assert bad.status_code == 400 and "scale_factor" in bad.json()["error"]


def test_faces_raw_body(vision: ServerProcess) -> None:
    response = httpx.post(
        f"{vision.base_url}/v1/vision/faces",
        content=astronaut_jpeg(),
        headers={"content-type": "image/jpeg"},
        timeout=60,
    )
    assert response.status_code == 200 and len(response.json()["faces"]) == 1


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_faces_over_oip_with_bytes(vision: ServerProcess, transport: str) -> None:
    image = astronaut_jpeg()
    inputs = {
        "image": bytes_tensor([image, encode(np.full((50, 50, 3), 255, np.uint8))]),
        "detector": np.zeros((2, 3), np.float32),
    }
    out = oip(vision, transport, "face_detection", inputs, ["boxes", "count"])
    assert out["count"].tolist() == [1, 0]
    assert iou(out["boxes"][0, 0].tolist(), REFERENCE_FACE) >= 0.5


def digit_images(size: int, page: bool = False) -> tuple[list[bytes], np.ndarray[Any, Any]]:
    """The held-out digits drawn as dark ink on light paper, `size` pixels square, PNG; with
    `page`, drawn at that size into a corner of a 300 x 400 off-white page, JPEG."""
    import cv2

    from inferbridge.examples.build import digits_split

    _, X_test, _, y_test = digits_split()
    images = []
    for row in X_test:
        ink = (255 - row.reshape(8, 8) * (255 / 16)).round().astype(np.uint8)
        drawn = cv2.resize(ink, (size, size), interpolation=cv2.INTER_NEAREST)
        if page:
            sheet = np.full((300, 400), 245, np.uint8)
            sheet[20 : 20 + size, 30 : 30 + size] = np.minimum(drawn, 245)
            images.append(encode(sheet, ".jpg"))
        else:
            images.append(encode(drawn))
    return images, y_test


def classify_all(server: ServerProcess, images: list[bytes]) -> np.ndarray[Any, Any]:
    predicted: list[int] = []
    for start in range(0, len(images), 16):
        batch = {"image": bytes_tensor(images[start : start + 16])}
        out = oip(server, "grpc", "digits_classifier", batch, ["labels"])
        predicted.extend(int(row[0]) for row in out["labels"])
    return np.array(predicted)


@pytest.mark.parametrize("size", [8, 64, 200])
def test_digit_images_classified_at_the_models_accuracy(vision: ServerProcess, size: int) -> None:
    from inferbridge.examples.build import digits_classifier, digits_split

    _, X_test, _, y_test = digits_split()
    model_accuracy = float((digits_classifier().predict(X_test) == y_test).mean())
    images, labels = digit_images(size)
    accuracy = float((classify_all(vision, images) == labels).mean())
    assert accuracy >= model_accuracy - 0.005, (accuracy, model_accuracy)


def test_small_digits_on_a_page_are_cropped_first(vision: ServerProcess) -> None:
    images, labels = digit_images(64, page=True)
    accuracy = float((classify_all(vision, images) == labels).mean())
    assert accuracy >= 0.85, accuracy  # about 0.91; 0.10 without crop_to_content


def test_classify_over_rest(vision: ServerProcess) -> None:
    images, labels = digit_images(64)
    response = upload(vision, "classify", images[0])
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions[0]["label"] == str(labels[0])
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert len(upload(vision, "classify", images[0], top_k=1).json()["predictions"]) == 1


def test_detect_boxes_come_back_exactly(vision: ServerProcess) -> None:
    image = encode(np.full((128, 256, 3), 90, np.uint8), ".jpg")
    response = upload(vision, "detect", image)
    assert response.status_code == 200, response.text
    got = response.json()["detections"]
    for detection in got:
        detection["score"] = round(detection["score"], 6)
    assert got == EXPECTED_DETECTIONS


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_detect_over_oip(vision: ServerProcess, transport: str) -> None:
    small = encode(np.zeros((128, 256, 3), np.uint8))
    outputs = ["boxes", "scores", "classes", "labels", "count"]
    out = oip(vision, transport, "detection", {"image": bytes_tensor([small, small])}, outputs)
    assert out["count"].tolist() == [2, 2]
    want = [[d[k] for k in "xywh"] for d in EXPECTED_DETECTIONS]
    np.testing.assert_array_equal(out["boxes"][1], want)
    assert [v.decode() for v in out["labels"][0]] == list(DETECTION_CLASSES)


BAD_IMAGES = {
    "not an image": (b"just some text, not a picture", "not an image"),
    "truncated jpeg": (None, "truncated"),
    "30000x30000": (None, "900000000 pixels"),
    "empty": (b"", "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
@pytest.mark.parametrize("service", ["faces", "classify", "detect"])
def test_bad_uploads_are_clear_400s(vision: ServerProcess, service: str, case: str) -> None:
    data, message = BAD_IMAGES[case]
    if case == "truncated jpeg":
        data = astronaut_jpeg()[:5000]
    elif case == "30000x30000":
        data = bomb_png()
    assert data is not None
    response = upload(vision, service, data)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert httpx.get(f"{vision.base_url}/v2/health/ready", timeout=10).status_code == 200


def test_bad_requests_to_the_endpoints(vision: ServerProcess) -> None:
    url = f"{vision.base_url}/v1/vision/faces"
    missing = httpx.post(url, files={"picture": ("a.png", b"x", "image/png")}, timeout=10)
    assert missing.status_code == 400 and "no field 'image'" in missing.json()["error"]
    wrong_type = httpx.post(url, json={"image": "x"}, timeout=10)
    assert wrong_type.status_code == 400 and "multipart" in wrong_type.json()["error"]
    assert httpx.get(url, timeout=10).status_code == 405
    assert httpx.post(f"{vision.base_url}/v1/vision/nothing", timeout=10).status_code == 404
    unknown = upload(vision, "faces", astronaut_jpeg(), model="no_such_model")
    assert unknown.status_code == 404
    over_oip = oip_error(
        vision, {"image": bytes_tensor([b"not an image"]), "detector": np.zeros((1, 3), np.float32)}
    )
    assert "INVALID_ARGUMENT" in over_oip and "not an image" in over_oip
    assert len(upload(vision, "faces", astronaut_jpeg()).json()["faces"]) == 1


def oip_error(server: ServerProcess, inputs: dict[str, Any]) -> str:
    from tritonclient.utils import InferenceServerException

    try:
        oip(server, "grpc", "face_detection", inputs, ["count"])
    except InferenceServerException as exc:
        return f"{exc.status()} {exc.message()}"
    raise AssertionError("the request succeeded")
