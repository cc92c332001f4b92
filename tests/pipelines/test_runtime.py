"""The pipeline runtime: processors and a model step loaded from the same repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferbridge.errors import ModelLoadError
from inferbridge.repository.config import load_config
from inferbridge.runtimes.pipeline import PipelineRuntime
from inferbridge.runtimes.registry import runtime_class

cv2 = pytest.importorskip("cv2")
onnx = pytest.importorskip("onnx")

PIPELINE = """
runtime: pipeline
max_batch_size: 4
inputs: [{name: image, datatype: BYTES, shape: [-1]}]
outputs:
  - {name: labels, datatype: BYTES, shape: [-1, 2]}
  - {name: scores, datatype: FP32, shape: [-1, 2]}
parameters:
  steps:
    - {processor: decode_image, inputs: [image], outputs: [pixels], color: gray}
    - {processor: resize, inputs: [pixels], outputs: [small], size: [2, 2]}
    - {processor: flatten, inputs: [small], outputs: [flat]}
    - {model: double, inputs: {x: flat}, outputs: {y: doubled}%s}
    - {processor: top_k, inputs: [doubled], outputs: [labels, scores], k: 2}
"""


def doubling_model(root: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (root / "double" / "1").mkdir(parents=True)
    (root / "double" / "config.yaml").write_text("runtime: onnx\n")
    (root / "double" / "1" / "model.onnx").write_bytes(model.SerializeToString())


def make_repo(root: Path, extra: str = "") -> Path:
    doubling_model(root)
    (root / "pipe" / "1").mkdir(parents=True)
    (root / "pipe" / "config.yaml").write_text(PIPELINE % extra)
    return root / "pipe"


def png(pixels: list[list[int]]) -> bytes:
    ok, data = cv2.imencode(".png", np.array(pixels, np.uint8))
    assert ok
    return bytes(data)


@pytest.mark.parametrize("extra", ["", ", per_item: true"])
def test_pipeline_runs_processors_and_model(tmp_path: Path, extra: str) -> None:
    pipe = make_repo(tmp_path, extra)
    runtime = runtime_class("pipeline")()
    assert isinstance(runtime, PipelineRuntime)
    runtime.load(pipe / "1", load_config(pipe / "config.yaml"), "cpu")
    images = np.array([png([[1, 9], [3, 4]]), png([[8, 0], [0, 0]])], dtype=object)
    out = runtime.infer({"image": images})
    assert out["labels"].tolist() == [[b"1", b"3"], [b"0", b"1"]]
    np.testing.assert_allclose(out["scores"], [[18, 8], [16, 0]])
    runtime.unload()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("processor: resize", "processor: nope"), "unknown processor"),
        (("inputs: [small]", "inputs: [missing]"), "not produced by an earlier step"),
        (("model: double", "model: absent"), "no model 'absent'"),
        (("k: 2}", "k: 0}"), "k must be at least 1"),
        (("outputs: [labels, scores]", "outputs: [labels]"), "returns 2 to 2 outputs"),
    ],
)
def test_bad_steps_fail_the_load(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    pipe = make_repo(tmp_path)
    config = pipe / "config.yaml"
    config.write_text(config.read_text().replace(*edit))
    with pytest.raises(ModelLoadError, match=message):
        PipelineRuntime().load(pipe / "1", load_config(config), "cpu")
