"""The model repositories Triton's QA scripts (qa/L0_http/test.sh, qa/L0_grpc/test.sh) set
up for their Python tests, rebuilt here in Triton's layout: a `config.pbtxt` as Triton's
generators write it (qa/common/gen_qa_identity_models.py, docs/examples/model_repository)
beside an ONNX graph written with onnx.helper.

Where Triton's model is a Python-backend model (`simple_identity`, `string_identity`), the
same signature is served by an ONNX identity: inferbridge refuses the `python` backend, and
the tests only look at the tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "build_aio_repository",
    "build_generate_repository",
    "build_grpc_unit_repository",
    "build_http_repository",
]

_OPSET = 17
_ONNX_TYPES = {"FP32": 1, "INT32": 6, "INT64": 7, "STRING": 8, "FP16": 10}


def _tensor(name: str, datatype: str, dims: list[int]) -> str:
    shape = ", ".join(str(d) for d in dims)
    return f'  {{\n    name: "{name}"\n    data_type: TYPE_{datatype}\n    dims: [ {shape} ]\n  }}'


def _config(name: str, max_batch: int, tensors: list[tuple[str, str, list[int]]]) -> str:
    inputs = [_tensor(f"INPUT{i}", dt, dims) for i, (_, dt, dims) in enumerate(tensors)]
    outputs = [_tensor(f"OUTPUT{i}", dt, dims) for i, (_, dt, dims) in enumerate(tensors)]
    separator = ",\n"
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
        f"input [\n{separator.join(inputs)}\n]\noutput [\n{separator.join(outputs)}\n]\n"
    )


def _save(root: Path, name: str, config: str, graph: Any) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, root / name / "1" / "model.onnx")
    (root / name / "config.pbtxt").write_text(config)


def _identity(root: Path, name: str, datatype: str, dims: list[int], count: int = 1,
              max_batch: int = 8, extra: str = "") -> None:  # fmt: skip
    """Triton's onnx_zero_<count>_<type>: INPUTi -> OUTPUTi, each `dims` after the batch."""
    from onnx import helper

    onnx_type = _ONNX_TYPES[datatype]
    rank = len(dims) + (1 if max_batch > 0 else 0)
    symbolic: list[int | str] = [f"d{axis}" for axis in range(rank)]
    nodes = [helper.make_node("Identity", [f"INPUT{i}"], [f"OUTPUT{i}"]) for i in range(count)]
    inputs = [helper.make_tensor_value_info(f"INPUT{i}", onnx_type, symbolic) for i in range(count)]
    outputs = [
        helper.make_tensor_value_info(f"OUTPUT{i}", onnx_type, symbolic) for i in range(count)
    ]
    config = _config(name, max_batch, [("", datatype, dims)] * count) + extra
    _save(root, name, config, helper.make_graph(nodes, name, inputs, outputs))


def _simple(root: Path) -> None:
    """docs/examples/model_repository/simple: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 -
    INPUT1, INT32 [16], max_batch_size 8."""
    from onnx import helper

    shape: list[int | str] = ["batch", 16]
    tensors = [("", "INT32", [16])] * 2
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [helper.make_tensor_value_info(f"INPUT{i}", 6, shape) for i in range(2)],
        [helper.make_tensor_value_info(f"OUTPUT{i}", 6, shape) for i in range(2)],
    )
    _save(root, "simple", _config("simple", 8, tensors), graph)


# qa/L0_http/test.sh appends this to onnx_zero_1_float32's config for the error-code test.
QUEUE_OF_ONE = """dynamic_batching {
    max_queue_delay_microseconds: 1000000
    preferred_batch_size: [ 8 ]
    default_queue_policy {
        max_queue_size: 1
    }
}
"""


def build_http_repository(root: Path) -> Path:
    """qa/L0_http/test.sh's python_unit_test_models, for http_test.py."""
    _identity(root, "onnx_zero_1_float32", "FP32", [-1])
    _identity(root, "onnx_zero_1_object", "STRING", [-1])
    _identity(root, "onnx_zero_1_object_1_element", "STRING", [1])
    _identity(root, "onnx_zero_1_float16", "FP16", [-1, -1])
    _identity(root, "onnx_zero_3_float32", "FP32", [-1], count=3)
    _identity(root, "onnx_zero_1_float32_queue", "FP32", [-1], extra=QUEUE_OF_ONE)
    _identity(root, "simple_identity", "STRING", [-1])
    _identity(root, "simple_identity_int64", "INT64", [-1])
    return root


def build_aio_repository(root: Path, count: int) -> Path:
    """`count` models with `simple` among them: the aio tests count the index (7 in
    L0_http's repository, 8 in L0_grpc's)."""
    _simple(root)
    for i in range(1, count):
        _identity(root, f"onnx_zero_1_float32_{i}", "FP32", [-1])
    return root


def build_grpc_unit_repository(root: Path) -> Path:
    """qa/L0_grpc/test.sh's grpc_test_models: `simple` and `string_identity` (STRING,
    dims [-1] after its sed, no batching)."""
    _simple(root)
    _identity(root, "string_identity", "STRING", [-1], max_batch=0)
    return root


def build_generate_repository(root: Path) -> Path:
    """qa/python_models/generate_models: `mock_llm` (a Python-backend model in Triton),
    served by the MockLLM test runtime with Triton's default of one repetition; the
    server needs the repository root on PYTHONPATH."""
    (root / "mock_llm" / "1").mkdir(parents=True, exist_ok=True)
    (root / "mock_llm" / "config.yaml").write_text(
        "runtime: tests.support.runtimes:MockLLM\nmax_batch_size: 0\n"
        "parameters: {repetition: 1}\n"
    )
    return root
