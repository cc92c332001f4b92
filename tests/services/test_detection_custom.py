"""A detection pipeline the test builds itself: a YOLOv5-layout ONNX network with a known raw
output, 96-pixel letterbox, picked with ?model= - boxes must come back exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from inferbridge.examples.builders.services import constant_yolo_onnx
from tests.serverproc import ServerProcess, start_server
from tests.services.common import bytes_tensor, encode, oip

pytest.importorskip("cv2")

# v5: [anchors, cx cy w h objectness + 3 class scores], in 96 x 96 letterboxed pixels.
RAW = np.array(
    [
        [48, 48, 32, 16, 0.9, 0.1, 0.9, 0.0],  # class 1, score 0.81
        [50, 48, 32, 16, 0.9, 0.1, 0.8, 0.0],  # suppressed by the first (IoU 0.88)
        [48, 48, 32, 16, 0.8, 0.0, 0.0, 0.5],  # class 2, score 0.4: kept (other class)
        [10, 30, 4, 4, 0.2, 0.0, 0.0, 0.9],  # 0.18: under the threshold
    ],
    dtype=np.float32,
)


@pytest.fixture(scope="module")
def custom(examples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not (examples_dir / "detection").exists():
        pytest.skip("detection example not built")
    root = tmp_path_factory.mktemp("yolo")
    constant_yolo_onnx(root / "yolo5" / "1" / "model.onnx", RAW, 96)
    (root / "yolo5" / "config.yaml").write_text(
        "runtime: opencv\n"
        "inputs: [{name: images, datatype: FP32, shape: [1, 3, 96, 96]}]\n"
        "outputs: [{name: output0, datatype: FP32, shape: [1, 4, 8]}]\n"
    )
    (root / "detect5" / "1").mkdir(parents=True)
    (root / "detect5" / "1" / "labels.txt").write_text("cat\ncar\nbus\n")
    config = (examples_dir / "detection" / "config.yaml").read_text()
    for old, new in [
        ("size: 64", "size: 96"),
        ("model: detection_yolo", "model: yolo5"),
        ("layout: v8", "layout: v5"),
    ]:
        assert old in config
        config = config.replace(old, new)
    (root / "detect5" / "config.yaml").write_text(config)
    server = start_server(root)
    yield server
    server.stop()


def test_v5_boxes_come_back_exactly(custom: ServerProcess) -> None:
    image = encode(np.full((192, 384, 3), 30, np.uint8))  # letterbox scale 1/4, top pad 24
    response = httpx.post(
        f"{custom.base_url}/v1/vision/detect",
        params={"model": "detect5"},
        files={"image": ("x.png", image, "image/png")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    got = [
        (d["label"], round(d["score"], 6), d["x"], d["y"], d["w"], d["h"])
        for d in response.json()["detections"]
    ]
    assert got == [("car", 0.81, 128.0, 64.0, 128.0, 64.0), ("bus", 0.4, 128.0, 64.0, 128.0, 64.0)]
    out = oip(custom, "grpc", "detect5", {"image": bytes_tensor([image])}, ["boxes", "count"])
    assert out["count"].tolist() == [2]
    np.testing.assert_array_equal(out["boxes"][0], [[128, 64, 128, 64]] * 2)
