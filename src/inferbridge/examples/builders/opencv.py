"""OpenCV examples: the digits classifier as plain ONNX for cv2.dnn, and a Haar face cascade."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.examples.builders import SkipExample
from inferbridge.examples.builders.native import digits_weights

__all__ = ["FACE_CASCADE", "build_opencv", "digits_linear_onnx"]

FACE_CASCADE = "haarcascade_frontalface_default.xml"


def digits_linear_onnx(digits_model: Any, path: Path) -> None:
    """The digits classifier with standard ONNX ops only (Gemm + Softmax), which cv2.dnn reads.

    The scaler is folded into the linear layer; outputs `scores` and `probabilities`.
    """
    from onnx import TensorProto, checker, helper, numpy_helper

    coef, intercept = digits_weights(digits_model)
    weights = numpy_helper.from_array(coef.T.astype(np.float32), "weights")
    bias = numpy_helper.from_array(intercept.astype(np.float32), "bias")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["pixels", "weights", "bias"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
        ],
        "digits_linear",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 64])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
        ],
        [weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def build_opencv(root: Path, digits_model: Any) -> None:
    """Write `digits_opencv` (cv2.dnn over ONNX) and `faces` (Haar frontal-face cascade)."""
    try:
        import cv2
    except ImportError as exc:
        raise SkipExample(f"opencv-python-headless is not installed ({exc})") from None
    digits_linear_onnx(digits_model, root / "digits_opencv" / "1" / "model.onnx")
    (root / "digits_opencv" / "config.yaml").write_text(
        "# The digits classifier as plain ONNX (Gemm + Softmax) run by cv2.dnn.\n"
        "runtime: opencv\n"
        "parameters: {backend: opencv, target: cpu}\n"
        "inputs:\n"
        "  - {name: pixels, datatype: FP32, shape: [-1, 64]}\n"
        "outputs:\n"
        "  - {name: scores, datatype: FP32, shape: [-1, 10]}\n"
        "  - {name: probabilities, datatype: FP32, shape: [-1, 10]}\n"
    )
    cascades = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "/nonexistent")
    if not (cascades / FACE_CASCADE).exists():
        raise SkipExample(f"this OpenCV ships no {FACE_CASCADE} (opencv-python-headless>=5?)")
    (root / "faces" / "1").mkdir(parents=True)
    shutil.copy(cascades / FACE_CASCADE, root / "faces" / "1" / "model.xml")
    (root / "faces" / "config.yaml").write_text(
        "# OpenCV's Haar frontal-face cascade. Input: a batch of grayscale images (UINT8\n"
        "# [N, H, W]); output: one row per face: (image index, x, y, w, h).\n"
        "runtime: opencv\n"
        "model_file: model.xml\n"
        "parameters: {mode: cascade, scale_factor: 1.1, min_neighbors: 5, min_size: 30}\n"
        "inputs:\n"
        "  - {name: image, datatype: UINT8, shape: [-1, -1, -1]}\n"
        "outputs:\n"
        "  - {name: boxes, datatype: INT32, shape: [-1, 5]}\n"
    )
