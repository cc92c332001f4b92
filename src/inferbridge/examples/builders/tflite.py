"""TFLite example: the digits classifier written as a .tflite flatbuffer by the project's code.

Writes FULLY_CONNECTED (scores) -> SOFTMAX (probabilities) and ARG_MAX (label) with a
fixed batch dimension, like a litert-torch export, plus a `serving_default` signature.
Needs only ai-edge-litert's schema module and flatbuffers (no TensorFlow, no torch).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.examples.builders import SkipExample
from inferbridge.examples.builders.native import digits_weights

__all__ = ["FIXED_BATCH", "build_tflite", "linear_tflite"]

#: The example's fixed batch size: the runtime serves any batch by running it in chunks.
FIXED_BATCH = 4


def linear_tflite(
    coef: np.ndarray[Any, Any],
    intercept: np.ndarray[Any, Any],
    batch: int,
    input_name: str,
    *,
    signature: bool = True,
) -> bytes:
    """A .tflite model: scores = x @ coef.T + intercept, softmax, argmax, for [batch, features].

    `batch` -1 makes the batch dimension dynamic; `signature` adds `serving_default`.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    classes, features = coef.shape
    buffers = [schema.BufferT()]  # buffer 0 is the empty sentinel

    def buffer(array: np.ndarray[Any, Any] | None) -> int:
        item = schema.BufferT()
        if array is not None:
            item.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)
        buffers.append(item)
        return len(buffers) - 1

    def tensor(name: str, shape: list[int], kind: int, data: Any = None) -> Any:
        item = schema.TensorT()
        item.name, item.type = name, kind
        item.shape = [1 if d == -1 else d for d in shape]
        item.shapeSignature = shape
        item.buffer = buffer(data)
        return item

    f32, i32, i64 = schema.TensorType.FLOAT32, schema.TensorType.INT32, schema.TensorType.INT64
    tensors = [
        tensor(input_name, [batch, features], f32),
        tensor("weights", [classes, features], f32, coef.astype("<f4")),
        tensor("bias", [classes], f32, intercept.astype("<f4")),
        tensor("scores", [batch, classes], f32),
        tensor("probabilities", [batch, classes], f32),
        tensor("axis", [1], i32, np.array([1], "<i4")),
        tensor("label", [batch], i64),
    ]
    codes = []
    for builtin in (
        schema.BuiltinOperator.FULLY_CONNECTED,
        schema.BuiltinOperator.SOFTMAX,
        schema.BuiltinOperator.ARG_MAX,
    ):
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
        codes.append(code)

    def operator(
        opcode: int, inputs: list[int], outputs: list[int], kind: int, options: Any
    ) -> Any:
        item = schema.OperatorT()
        item.opcodeIndex, item.inputs, item.outputs = opcode, inputs, outputs
        item.builtinOptionsType, item.builtinOptions = kind, options
        return item

    fully_connected = schema.FullyConnectedOptionsT()
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    argmax = schema.ArgMaxOptionsT()
    argmax.outputType = i64
    graph = schema.SubGraphT()
    graph.name = "main"
    graph.tensors = tensors
    graph.inputs, graph.outputs = [0], [3, 4, 6]
    graph.operators = [
        operator(0, [0, 1, 2], [3], schema.BuiltinOptions.FullyConnectedOptions, fully_connected),
        operator(1, [3], [4], schema.BuiltinOptions.SoftmaxOptions, softmax),
        operator(2, [3, 5], [6], schema.BuiltinOptions.ArgMaxOptions, argmax),
    ]

    def tensor_map(name: str, index: int) -> Any:
        item = schema.TensorMapT()
        item.name, item.tensorIndex = name, index
        return item

    serving = schema.SignatureDefT()
    serving.signatureKey, serving.subgraphIndex = "serving_default", 0
    serving.inputs = [tensor_map(input_name, 0)]
    serving.outputs = [
        tensor_map(n, i) for n, i in (("scores", 3), ("probabilities", 4), ("label", 6))
    ]
    model = schema.ModelT()
    model.version, model.description = 3, "inferbridge digits linear classifier"
    model.operatorCodes, model.subgraphs, model.buffers = codes, [graph], buffers
    model.signatureDefs = [serving] if signature else []
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


#: The torch digits MLP converted by litert-torch (examples/tflite/convert_torch.py).
TORCH_CONVERTED = Path(__file__).resolve().parent.parent / "tflite" / "digits_torch.tflite"


def build_tflite(root: Path, digits_model: Any) -> None:
    """Write `digits_tflite`: the digits classifier with a fixed batch of FIXED_BATCH."""
    try:
        import ai_edge_litert  # noqa: F401
        import flatbuffers  # noqa: F401
    except ImportError as exc:
        raise SkipExample(f"ai-edge-litert is not installed ({exc})") from None
    coef, intercept = digits_weights(digits_model)
    model_dir = root / "digits_tflite"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.tflite").write_bytes(
        linear_tflite(coef, intercept, FIXED_BATCH, "pixels")
    )
    (model_dir / "config.yaml").write_text(
        f"# The digits classifier as TFLite with a fixed batch of {FIXED_BATCH}; any batch size\n"
        "# is served in chunks. Inputs and outputs come from the serving_default signature.\n"
        "runtime: tflite\n"
        "parameters: {num_threads: 1}\n"
    )
    if TORCH_CONVERTED.exists():
        torch_dir = root / "digits_tflite_torch"
        (torch_dir / "1").mkdir(parents=True)
        shutil.copy(TORCH_CONVERTED, torch_dir / "1" / "model.tflite")
        (torch_dir / "config.yaml").write_text(
            "# The torch digits MLP converted by litert-torch (fixed batch 1, served in\n"
            "# chunks); its signature's names args_0/output_0/output_1 are renamed.\n"
            "runtime: tflite\n"
            "parameters:\n"
            "  num_threads: 1\n"
            "  tensor_names: {args_0: pixels, output_0: probabilities, output_1: label}\n"
        )
