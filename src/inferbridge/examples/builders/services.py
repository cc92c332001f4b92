"""Service examples (issue #4): pipelines for face detection, digit images and object
detection. The text_embedding service is built by `text_embedding.py` in a child process
(it needs torch and sentence-transformers)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.examples.builders import SkipExample

__all__ = [
    "DETECTION_CLASSES",
    "DETECTION_INPUT_SIZE",
    "DETECTION_RAW",
    "build_services",
    "constant_yolo_onnx",
]

FACE_CASCADE = "haarcascade_frontalface_default.xml"
#: The constructed detector's input side and class names.
DETECTION_INPUT_SIZE = 64
DETECTION_CLASSES = ("person", "dog")
#: Its raw YOLOv8 output for every image: [4 + classes, anchors]; rows cx, cy, w, h, scores.
#: Anchors 0 and 1 overlap (IoU 0.88, same class): NMS keeps anchor 0. Anchor 2 is a dog;
#: anchors 3 and 4 are under the confidence threshold.
DETECTION_RAW = np.array(
    [
        [32.0, 34.0, 44.0, 16.0, 50.0],
        [32.0, 32.0, 40.0, 8.0, 12.0],
        [32.0, 32.0, 16.0, 8.0, 8.0],
        [16.0, 16.0, 8.0, 8.0, 8.0],
        [0.9, 0.8, 0.1, 0.1, 0.0],
        [0.0, 0.1, 0.7, 0.2, 0.0],
    ],
    dtype=np.float32,
)


def build_services(root: Path) -> None:
    """Write `face_detection`, `digits_classifier`, `detection` (+ `detection_yolo`)."""
    try:
        import cv2
    except ImportError as exc:
        raise SkipExample(f"opencv-python-headless is not installed ({exc})") from None
    cascades = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "/nonexistent")
    if (cascades / FACE_CASCADE).exists():
        _face_detection(root, cascades / FACE_CASCADE)
    _digits_classifier(root)
    _detection(root)


def _face_detection(root: Path, cascade: Path) -> None:
    (root / "face_detection" / "1").mkdir(parents=True)
    shutil.copy(cascade, root / "face_detection" / "1" / FACE_CASCADE)
    (root / "face_detection" / "config.yaml").write_text(
        "# Haar frontal-face detection on encoded images (JPEG/PNG/BMP).\n"
        "# Inputs: image (BYTES [N]) and detector (FP32 [N, 3]: scale factor, min neighbours,\n"
        "# min size per image; 0 keeps the configured value). Outputs: boxes (INT32 [N, M, 4]:\n"
        "# x, y, w, h) and count (INT32 [N]); rows of boxes past count are padding.\n"
        "runtime: pipeline\n"
        "max_batch_size: 8\n"
        "dynamic_batching: {max_queue_delay_ms: 1}\n"
        "inputs:\n"
        "  - {name: image, datatype: BYTES, shape: [-1]}\n"
        "  - {name: detector, datatype: FP32, shape: [-1, 3]}\n"
        "outputs:\n"
        "  - {name: boxes, datatype: INT32, shape: [-1, -1, 4]}\n"
        "  - {name: count, datatype: INT32, shape: [-1]}\n"
        "parameters:\n"
        "  steps:\n"
        "    - {processor: decode_image, inputs: [image], outputs: [pixels], color: gray}\n"
        "    - {processor: cascade, inputs: [pixels, detector], outputs: [boxes, count],\n"
        f"       cascade: {FACE_CASCADE}, scale_factor: 1.1, min_neighbors: 5, min_size: 30}}\n"
    )


def _digits_classifier(root: Path) -> None:
    (root / "digits_classifier" / "1").mkdir(parents=True)
    (root / "digits_classifier" / "1" / "labels.txt").write_text(
        "".join(f"{d}\n" for d in range(10))
    )
    (root / "digits_classifier" / "config.yaml").write_text(
        "# A photographed or drawn digit (dark ink on light paper, any size, JPEG/PNG/BMP) ->\n"
        "# the 3 likeliest digits through the `digits` model (8x8, 0..16 like load_digits).\n"
        "runtime: pipeline\n"
        "max_batch_size: 16\n"
        "dynamic_batching: {max_queue_delay_ms: 1}\n"
        "inputs:\n"
        "  - {name: image, datatype: BYTES, shape: [-1]}\n"
        "outputs:\n"
        "  - {name: labels, datatype: BYTES, shape: [-1, 3]}\n"
        "  - {name: scores, datatype: FP32, shape: [-1, 3]}\n"
        "parameters:\n"
        "  steps:\n"
        "    - {processor: decode_image, inputs: [image], outputs: [gray], color: gray}\n"
        "    # A digit drawn small on a large page is cropped to a square around its ink.\n"
        "    - {processor: crop_to_content, inputs: [gray], outputs: [framed], min_fill: 0.75}\n"
        "    - {processor: resize, inputs: [framed], outputs: [small], size: [8, 8],\n"
        "       interpolation: area}\n"
        "    # Dark ink on light paper (0..255) -> light ink on dark (16..0), as load_digits.\n"
        "    - {processor: normalize, inputs: [small], outputs: [ink], scale: -0.0627450980392,\n"
        "       offset: 16}\n"
        "    - {processor: flatten, inputs: [ink], outputs: [pixels]}\n"
        "    - {model: digits, inputs: {pixels: pixels}, outputs: {probabilities: probs}}\n"
        "    - {processor: top_k, inputs: [probs], outputs: [labels, scores], k: 3,\n"
        "       labels: labels.txt}\n"
    )


def constant_yolo_onnx(path: Path, raw: np.ndarray[Any, Any], size: int) -> None:
    """A YOLO-format ONNX model (input `images` [1, 3, size, size], output `output0`) whose
    raw output is `raw[np.newaxis]` whatever the image: the decoding path's known answer."""
    from onnx import TensorProto, checker, helper, numpy_helper

    constant = numpy_helper.from_array(raw[np.newaxis].astype(np.float32), "raw")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    shape = numpy_helper.from_array(np.array([1, 1, 1], np.int64), "shape")
    graph = helper.make_graph(
        [
            # The image must feed the output, or OpenCV's importer drops the input.
            helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
            helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
            helper.make_node("Reshape", ["nothing", "shape"], ["nothing3"]),
            helper.make_node("Add", ["raw", "nothing3"], ["output0"]),
        ],
        "constant_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, *raw.shape])],
        [constant, zero, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def _detection(root: Path) -> None:
    size = DETECTION_INPUT_SIZE
    constant_yolo_onnx(root / "detection_yolo" / "1" / "model.onnx", DETECTION_RAW, size)
    (root / "detection_yolo" / "config.yaml").write_text(
        "# A stand-in YOLOv8 network (no pretrained detector ships offline): its raw output is\n"
        "# a constant, so the detection pipeline's answer is known. Replace model.onnx with a\n"
        "# real yolov8n.onnx (and the shapes below) to detect for real; see the README.\n"
        "runtime: opencv\n"
        "inputs:\n"
        f"  - {{name: images, datatype: FP32, shape: [1, 3, {size}, {size}]}}\n"
        "outputs:\n"
        f"  - {{name: output0, datatype: FP32, shape: [1, {DETECTION_RAW.shape[0]}, "
        f"{DETECTION_RAW.shape[1]}]}}\n"
    )
    (root / "detection" / "1").mkdir(parents=True)
    (root / "detection" / "1" / "labels.txt").write_text("\n".join(DETECTION_CLASSES) + "\n")
    (root / "detection" / "config.yaml").write_text(
        "# Object detection on encoded images: letterbox, YOLO network (`detection_yolo`,\n"
        "# through cv2.dnn, one image at a time), YOLOv8 decoding, threshold and NMS. Boxes\n"
        "# are x, y, w, h in the original image's pixels; rows past `count` are padding.\n"
        "runtime: pipeline\n"
        "max_batch_size: 8\n"
        "dynamic_batching: {max_queue_delay_ms: 1}\n"
        "inputs:\n"
        "  - {name: image, datatype: BYTES, shape: [-1]}\n"
        "outputs:\n"
        "  - {name: boxes, datatype: FP32, shape: [-1, -1, 4]}\n"
        "  - {name: scores, datatype: FP32, shape: [-1, -1]}\n"
        "  - {name: classes, datatype: INT32, shape: [-1, -1]}\n"
        "  - {name: labels, datatype: BYTES, shape: [-1, -1]}\n"
        "  - {name: count, datatype: INT32, shape: [-1]}\n"
        "parameters:\n"
        "  steps:\n"
        "    - {processor: decode_image, inputs: [image], outputs: [pixels]}\n"
        "    - {processor: letterbox, inputs: [pixels], outputs: [boxed, transform],\n"
        f"       size: {size}}}\n"
        "    - {processor: to_blob, inputs: [boxed], outputs: [blob], scale: 0.00392156862745,\n"
        "       swap_rb: true}\n"
        "    - {model: detection_yolo, inputs: {images: blob}, outputs: {output0: raw},\n"
        "       per_item: true}\n"
        "    - {processor: yolo_decode, inputs: [raw, transform],\n"
        "       outputs: [boxes, scores, classes, count], layout: v8, conf_threshold: 0.25,\n"
        "       iou_threshold: 0.45}\n"
        "    - {processor: labels, inputs: [classes], outputs: [labels], labels: labels.txt}\n"
    )
