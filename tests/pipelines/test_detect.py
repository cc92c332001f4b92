"""YOLO decoding and NMS against a numpy reference; cascade boxes against OpenCV itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbridge.errors import InvalidInput
from inferbridge.pipelines.detect import CascadeBoxes, YoloDecode, decode_yolo, unletterbox

cv2 = pytest.importorskip("cv2")
Array = np.ndarray[Any, Any]


def iou(a: Array, b: Array) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


def reference(
    rows: Array, conf: float, iou_threshold: float, v5: bool
) -> tuple[list[list[float]], list[float], list[int]]:
    """Straightforward per-class greedy NMS over [anchors, columns] rows."""
    candidates = []
    for row in rows:
        cls_scores = row[5:] * row[4] if v5 else row[4:]
        cls = int(np.argmax(cls_scores))
        score = float(cls_scores[cls])
        if score >= conf:
            box = np.array([row[0] - row[2] / 2, row[1] - row[3] / 2, row[2], row[3]])
            candidates.append((score, cls, box))
    candidates.sort(key=lambda c: -c[0])
    kept: list[tuple[float, int, Array]] = []
    for score, cls, box in candidates:
        if all(k[1] != cls or iou(k[2], box) <= iou_threshold for k in kept):
            kept.append((score, cls, box))
    return [k[2].tolist() for k in kept], [k[0] for k in kept], [k[1] for k in kept]


def random_rows(v5: bool, anchors: int = 300, classes: int = 3) -> Array:
    rng = np.random.default_rng(1)
    centre = rng.uniform(0, 64, (anchors, 2))
    size = rng.uniform(4, 24, (anchors, 2))
    scores = rng.uniform(0, 1, (anchors, classes)) ** 3
    parts = [centre, size] + ([rng.uniform(0.5, 1, (anchors, 1))] if v5 else []) + [scores]
    return np.concatenate(parts, axis=1).astype(np.float32)


@pytest.mark.parametrize("v5", [False, True])
def test_decode_matches_reference_nms(v5: bool) -> None:
    rows = random_rows(v5)
    raw = rows if v5 else rows.T
    boxes, scores, classes = decode_yolo(raw, "v5" if v5 else "v8", 0.3, 0.45)
    want_boxes, want_scores, want_classes = reference(rows, 0.3, 0.45, v5)
    assert len(want_boxes) > 5
    np.testing.assert_allclose(boxes, want_boxes, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    assert classes.tolist() == want_classes


def test_processor_pads_batches_and_maps_back_through_letterbox() -> None:
    # Two images: one with two far-apart boxes, one with nothing above threshold.
    raw = np.zeros((2, 6, 4), np.float32)  # v8: 4 box rows + 2 classes, 4 anchors
    raw[0, :, 0] = [32, 32, 32, 16, 0.9, 0.0]
    raw[0, :, 1] = [10, 20, 4, 8, 0.0, 0.8]
    transforms = np.array([[0.25, 0, 16, 256, 128], [1, 0, 0, 64, 64]])
    boxes, scores, classes, count = YoloDecode({"layout": "v8"}, Path("."))(raw, transforms)
    assert np.asarray(count).tolist() == [2, 0]
    assert np.asarray(boxes).shape == (2, 2, 4)
    np.testing.assert_array_equal(np.asarray(boxes)[0], [[64, 32, 128, 64], [32, 0, 16, 32]])
    np.testing.assert_allclose(np.asarray(scores)[0], [0.9, 0.8])
    assert np.asarray(classes)[0].tolist() == [0, 1]


def test_unletterbox_clips_to_the_image() -> None:
    out = unletterbox(np.array([[-8.0, 0.0, 80.0, 80.0]]), np.array([0.5, 0, 0, 100, 100]))
    np.testing.assert_array_equal(out, [[0, 0, 100, 100]])


def test_decode_rejects_shapes_without_classes() -> None:
    with pytest.raises(InvalidInput, match="no class columns"):
        decode_yolo(np.zeros((4, 10), np.float32), "v8")


def astronaut_bgr() -> Array:
    skimage = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skimage.astronaut()[..., ::-1])


def test_cascade_matches_detect_multiscale() -> None:
    image = astronaut_bgr()
    step = CascadeBoxes({"cascade": "opencv:haarcascade_frontalface_default.xml"}, Path("."))
    boxes, count = step([image, np.full((60, 80, 3), 255, np.uint8)])
    classifier = cv2.CascadeClassifier(
        str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
    )
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    want = np.asarray(
        classifier.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
    ).reshape(-1, 4)
    assert np.asarray(count).tolist() == [len(want), 0]
    np.testing.assert_array_equal(np.asarray(boxes)[0, : len(want)], want)
    assert len(want) == 1 and iou(want[0].astype(float), np.array([177, 66, 95, 95.0])) > 0.5


def test_cascade_per_image_options() -> None:
    image = astronaut_bgr()
    step = CascadeBoxes({"cascade": "opencv:haarcascade_frontalface_default.xml"}, Path("."))
    _, count = step([image, image], np.array([[0, 0, 0], [0, 0, 400]], np.float32))
    assert np.asarray(count).tolist() == [1, 0]  # min size 400 is bigger than the face
    with pytest.raises(InvalidInput, match="scale_factor"):
        step([image], np.array([[0.5, 0, 0]], np.float32))
