"""A MobileNet-class image classifier with random weights, as ONNX: input `image` FP32
[-1, 3, 224, 224], output `logits` FP32 [-1, 1000].

With torch importable it is a torch.nn module exported by the legacy exporter; otherwise the
same architecture is written directly with `onnx.helper` (no torch needed). Both: a strided
3x3 stem, depthwise-separable blocks (MobileNet v1 at width 0.5), global average pooling and
a fully connected layer — about 150 M multiply-adds per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["IMAGE_INPUT", "IMAGE_OUTPUT", "IMAGE_SHAPE", "build_image_model", "sample_image"]

IMAGE_INPUT = "image"
IMAGE_OUTPUT = "logits"
IMAGE_SHAPE = (3, 224, 224)
_CLASSES = 1000
# (output channels, stride) of each depthwise-separable block: MobileNet v1, width 0.5.
_BLOCKS = [
    (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2),
    (256, 1), (256, 1), (256, 1), (256, 1), (256, 1), (512, 2), (512, 1),
]  # fmt: skip
_STEM = 16
_SEED = 0


def sample_image(batch: int = 1) -> np.ndarray:
    """A deterministic normalised 'photo': float32 [batch, 3, 224, 224]."""
    rng = np.random.default_rng(_SEED)
    pixels = rng.integers(0, 256, size=(batch, *IMAGE_SHAPE), dtype=np.uint8)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)
    return ((pixels.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def build_image_model(path: Path) -> str:
    """Write the model to `path`; returns how it was built ("torch" or "onnx.helper")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import torch  # noqa: F401
    except ImportError:
        _build_with_onnx_helper(path)
        return "onnx.helper"
    try:
        _build_with_torch(path)
    except Exception as exc:  # an exporter problem must not stop the benchmark
        print(f"bench: torch export failed ({exc}); writing the graph with onnx.helper")
        _build_with_onnx_helper(path)
        return "onnx.helper"
    return "torch"


def _build_with_torch(path: Path) -> None:
    import torch
    from torch import nn

    def conv(cin: int, cout: int, stride: int, groups: int, kernel: int) -> list[nn.Module]:
        pad = kernel // 2
        return [nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups), nn.ReLU()]

    torch.manual_seed(_SEED)
    layers: list[nn.Module] = conv(3, _STEM, 2, 1, 3)
    channels = _STEM
    for out, stride in _BLOCKS:
        layers += conv(channels, channels, stride, channels, 3)
        layers += conv(channels, out, 1, 1, 1)
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, _CLASSES)]
    model = nn.Sequential(*layers).eval()
    example = torch.from_numpy(sample_image(1))
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[IMAGE_INPUT],
        output_names=[IMAGE_OUTPUT],
        dynamic_axes={IMAGE_INPUT: {0: "batch"}, IMAGE_OUTPUT: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def _build_with_onnx_helper(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(_SEED)
    nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []

    def conv(x: str, cin: int, cout: int, stride: int, groups: int, kernel: int) -> str:
        index = len(nodes)
        fan_in = cin // groups * kernel * kernel
        w = rng.normal(0, np.sqrt(2.0 / fan_in), size=(cout, cin // groups, kernel, kernel))
        b = np.zeros(cout)
        weights.append(numpy_helper.from_array(w.astype(np.float32), f"w{index}"))
        weights.append(numpy_helper.from_array(b.astype(np.float32), f"b{index}"))
        pad = kernel // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"w{index}", f"b{index}"],
                [f"c{index}"],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=groups,
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"]))
        return f"r{index}"

    x = conv(IMAGE_INPUT, 3, _STEM, 2, 1, 3)
    channels = _STEM
    for out, stride in _BLOCKS:
        x = conv(x, channels, channels, stride, channels, 3)
        x = conv(x, channels, out, 1, 1, 1)
        channels = out
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    fc = rng.normal(0, np.sqrt(1.0 / channels), size=(channels, _CLASSES)).astype(np.float32)
    weights.append(numpy_helper.from_array(fc, "fc_w"))
    weights.append(numpy_helper.from_array(np.zeros(_CLASSES, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["features", "fc_w", "fc_b"], [IMAGE_OUTPUT]))
    graph = helper.make_graph(
        nodes,
        "mobilenet_like",
        [helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.FLOAT, ["batch", *IMAGE_SHAPE])],
        [helper.make_tensor_value_info(IMAGE_OUTPUT, TensorProto.FLOAT, ["batch", _CLASSES])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
