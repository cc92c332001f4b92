"""Detection heads: YOLO output decoding (v5 and v8 layouts) with threshold and NMS, and
cascade-classifier boxes. Both return padded per-image tensors plus a count per image, so
a batch keeps one row per request."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import InvalidInput, ModelLoadError
from inferbridge.pipelines.base import Array, Params, Processor, Value, param, rows_of

__all__ = ["CascadeBoxes", "YoloDecode", "decode_yolo", "nms", "pad_rows"]


def nms(boxes: Array, scores: Array, iou_threshold: float, classes: Array | None = None) -> Array:
    """Indices kept by greedy non-maximum suppression, best score first (cv2.dnn.NMSBoxes;
    per class when `classes` is given). `boxes` are [x, y, w, h]."""
    import cv2

    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    rects = [[float(v) for v in box] for box in boxes]
    confidences = [float(s) for s in scores]
    if classes is None:
        kept = cv2.dnn.NMSBoxes(rects, confidences, -np.inf, iou_threshold)
    else:
        kept = cv2.dnn.NMSBoxesBatched(
            rects, confidences, [int(c) for c in classes], -np.inf, iou_threshold
        )
    order: Array = np.asarray(kept, np.int64).reshape(-1)
    result: Array = order[np.argsort(-scores[order], kind="stable")]
    return result


def decode_yolo(
    raw: Array,
    layout: str = "v8",
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
    class_agnostic: bool = False,
) -> tuple[Array, Array, Array]:
    """One image's raw YOLO output -> (boxes [M, 4] as x, y, w, h in the network's input
    pixels, scores [M], classes [M]) after the threshold and NMS, best first.

    v8: [4 + C, anchors] rows cx, cy, w, h, class scores. v5: [anchors, 5 + C] columns
    cx, cy, w, h, objectness, class scores (score = objectness x class score)."""
    raw = np.asarray(raw, np.float32)
    if layout == "v8":
        table = raw.T
        class_scores = table[:, 4:]
    else:
        table = raw
        class_scores = table[:, 5:] * table[:, 4:5]
    if class_scores.shape[1] == 0:
        raise InvalidInput(f"YOLO {layout} output {list(raw.shape)} has no class columns")
    classes = np.argmax(class_scores, axis=1)
    scores = class_scores[np.arange(len(table)), classes]
    keep = scores >= conf_threshold
    centre, size = table[keep, 0:2], table[keep, 2:4]
    boxes = np.concatenate([centre - size / 2, size], axis=1)
    scores, classes = scores[keep], classes[keep]
    kept = nms(boxes, scores, iou_threshold, None if class_agnostic else classes)
    kept = kept[:max_detections]
    return boxes[kept], scores[kept], classes[kept].astype(np.int32)


def unletterbox(boxes: Array, transform: Array) -> Array:
    """Boxes [M, 4] (x, y, w, h) in letterboxed pixels -> original image pixels, clipped."""
    ratio, left, top, width, height = (float(v) for v in transform)
    out = np.asarray(boxes, np.float64).copy()
    x1 = np.clip((out[:, 0] - left) / ratio, 0, width)
    y1 = np.clip((out[:, 1] - top) / ratio, 0, height)
    x2 = np.clip((out[:, 0] + out[:, 2] - left) / ratio, 0, width)
    y2 = np.clip((out[:, 1] + out[:, 3] - top) / ratio, 0, height)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).astype(np.float32)


def pad_rows(rows: list[Array], width: tuple[int, ...], dtype: Any) -> Array:
    """Stack per-image arrays of different lengths into [N, max_len, *width], zero-padded."""
    longest = max((len(r) for r in rows), default=0)
    out = np.zeros((len(rows), longest, *width), dtype=dtype)
    for index, row in enumerate(rows):
        out[index, : len(row)] = row
    return out


class YoloDecode(Processor):
    """Raw YOLO output [N, ...] (+ letterbox transforms [N, 5]) -> boxes FP32 [N, M, 4]
    (x, y, w, h in original image pixels), scores FP32 [N, M], classes INT32 [N, M],
    count INT32 [N]; rows past `count` are padding.

    Parameters: `layout` (v8, v5 or auto: v8 when the second dimension is the smaller),
    `conf_threshold` (0.25), `iou_threshold` (0.45), `max_detections` (300),
    `class_agnostic` (false)."""

    name = "yolo_decode"
    arity = (1, 2)
    returns = (4, 4)

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        self.layout = param(params, "layout", str, "auto", self.name)
        if self.layout not in ("auto", "v5", "v8"):
            raise ModelLoadError(f"yolo_decode: layout={self.layout!r}; use v5, v8 or auto")
        self.conf = param(params, "conf_threshold", float, 0.25, self.name)
        self.iou = param(params, "iou_threshold", float, 0.45, self.name)
        self.max_det = param(params, "max_detections", int, 300, self.name)
        self.agnostic = param(params, "class_agnostic", bool, False, self.name)

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        raw = np.asarray(values[0])
        if raw.ndim != 3:
            raise InvalidInput(f"yolo_decode expects [N, a, b] outputs, got {list(raw.shape)}")
        layout = self.layout
        if layout == "auto":
            layout = "v8" if raw.shape[1] < raw.shape[2] else "v5"
        transforms = rows_of(values[1]) if len(values) > 1 else [None] * len(raw)
        boxes, scores, classes = [], [], []
        for image_raw, transform in zip(raw, transforms, strict=True):
            b, s, c = decode_yolo(
                image_raw, layout, self.conf, self.iou, self.max_det, self.agnostic
            )
            boxes.append(b if transform is None else unletterbox(b, transform))
            scores.append(s)
            classes.append(c)
        count = np.array([len(s) for s in scores], np.int32)
        return (
            pad_rows(boxes, (4,), np.float32),
            pad_rows(scores, (), np.float32),
            pad_rows(classes, (), np.int32),
            count,
        )


class CascadeBoxes(Processor):
    """Images -> boxes INT32 [N, M, 4] (x, y, w, h) and count INT32 [N] from a Haar/LBP
    cascade.

    Parameters: `cascade` (an XML file in the version directory, or `opencv:<name>` for one
    that OpenCV ships), `scale_factor` (1.1), `min_neighbors` (5), `min_size` (30),
    `equalize_hist` (false). An optional second input FP32 [N, 3] overrides scale factor,
    min neighbours and min size per image; a value <= 0 keeps the configured one."""

    name = "cascade"
    arity = (1, 2)
    returns = (2, 2)

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        import cv2

        source = param(params, "cascade", str, "", self.name)
        if source.startswith("opencv:"):
            shipped = Path(getattr(cv2, "data").haarcascades)  # noqa: B009 - not in the stubs
            path = shipped / source.removeprefix("opencv:")
        else:
            path = model_dir / source
        if not source or not path.is_file():
            raise ModelLoadError(f"cascade: cascade file {path} does not exist")
        self.path = path
        self.scale_factor = param(params, "scale_factor", float, 1.1, self.name)
        self.min_neighbors = param(params, "min_neighbors", int, 5, self.name)
        self.min_size = param(params, "min_size", int, 30, self.name)
        self.equalize = param(params, "equalize_hist", bool, False, self.name)
        if self.scale_factor <= 1.0:
            raise ModelLoadError("cascade: scale_factor must be above 1.0")
        self._local = threading.local()
        self._classifier()  # a bad file fails the load, not the first request

    def _classifier(self) -> Any:
        import cv2

        classifier = getattr(self._local, "classifier", None)
        if classifier is None:
            classifier = cv2.CascadeClassifier()
            if not classifier.load(str(self.path)) or classifier.empty():
                raise ModelLoadError(f"cascade: {self.path} is not a cascade XML file")
            self._local.classifier = classifier  # not thread-safe: one per thread
        return classifier

    def options(self, row: Array | None) -> dict[str, Any]:
        scale, neighbours, size = self.scale_factor, self.min_neighbors, self.min_size
        if row is not None:
            given = [float(v) for v in np.asarray(row, np.float64).reshape(-1)[:3]]
            given += [0.0] * (3 - len(given))
            if given[0] > 0:
                if given[0] <= 1.0 or given[0] > 10:
                    raise InvalidInput(f"scale_factor must be in (1, 10]; got {given[0]}")
                scale = given[0]
            if given[1] > 0:
                neighbours = int(given[1])
            if given[2] > 0:
                size = int(given[2])
        return {"scaleFactor": scale, "minNeighbors": neighbours, "minSize": (size, size)}

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        import cv2

        classifier = self._classifier()
        images = rows_of(values[0])
        overrides = rows_of(values[1]) if len(values) > 1 else [None] * len(images)
        found: list[Array] = []
        for image, row in zip(images, overrides, strict=True):
            gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            if self.equalize:
                gray = cv2.equalizeHist(gray)
            boxes = classifier.detectMultiScale(np.ascontiguousarray(gray), **self.options(row))
            found.append(np.asarray(boxes, np.int32).reshape(-1, 4))
        return pad_rows(found, (4,), np.int32), np.array([len(f) for f in found], np.int32)
