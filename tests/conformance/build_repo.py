"""Build the conformance test repository: identity (echo) ONNX models for every datatype.

The repository is written with onnx.helper from the cases' needs, so every client in the
conformance suite (Python and Go) runs against the same models. Run it directly to write
the repository into a directory: `python tests/conformance/build_repo.py OUTDIR`.

Models (all `runtime: onnx`, metadata taken from the graph):
- `identity_<dt>` for each datatype: `INPUT0` -> `OUTPUT0`, shape [-1, -1].
- `identity_fp32_vector` ([-1]), `identity_int32_scalar` ([]), `identity_fp32_4d`
  ([-1, -1, -1, -1]): the same echo at other ranks.
- `multi_io`: inputs `A` FP32 [-1, 3], `B` INT64 [-1, 2], `C` BYTES [-1, 1]; outputs
  `A_OUT`, `A_TWICE` (A + A), `B_OUT`, `C_OUT`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["DATATYPES", "build_repository"]

DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
)  # fmt: skip
_OPSET = 17


def _onnx_type(datatype: str) -> int:
    from onnx import TensorProto

    return {
        "BOOL": TensorProto.BOOL,
        "UINT8": TensorProto.UINT8,
        "UINT16": TensorProto.UINT16,
        "UINT32": TensorProto.UINT32,
        "UINT64": TensorProto.UINT64,
        "INT8": TensorProto.INT8,
        "INT16": TensorProto.INT16,
        "INT32": TensorProto.INT32,
        "INT64": TensorProto.INT64,
        "FP16": TensorProto.FLOAT16,
        "FP32": TensorProto.FLOAT,
        "FP64": TensorProto.DOUBLE,
        "BYTES": TensorProto.STRING,
    }[datatype]


def _dims(rank: int, fixed: dict[int, int] | None = None) -> list[int | str]:
    """Symbolic (variable) dimensions, except those given in `fixed`."""
    fixed = fixed or {}
    return [fixed.get(axis, f"d{axis}") for axis in range(rank)]


def _save(root: Path, name: str, nodes: list[Any], inputs: list[Any], outputs: list[Any]) -> None:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8  # readable by every onnxruntime release of the last years
    onnx.checker.check_model(model)
    version_dir = root / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, version_dir / "model.onnx")
    (root / name / "config.yaml").write_text("runtime: onnx\n")


def _identity(root: Path, name: str, datatype: str, rank: int) -> None:
    from onnx import helper

    onnx_type = _onnx_type(datatype)
    _save(
        root,
        name,
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        [helper.make_tensor_value_info("INPUT0", onnx_type, _dims(rank))],
        [helper.make_tensor_value_info("OUTPUT0", onnx_type, _dims(rank))],
    )


def _multi_io(root: Path) -> None:
    from onnx import TensorProto, helper

    info = helper.make_tensor_value_info
    _save(
        root,
        "multi_io",
        [
            helper.make_node("Identity", ["A"], ["A_OUT"]),
            helper.make_node("Add", ["A", "A"], ["A_TWICE"]),
            helper.make_node("Identity", ["B"], ["B_OUT"]),
            helper.make_node("Identity", ["C"], ["C_OUT"]),
        ],
        [
            info("A", TensorProto.FLOAT, ["n", 3]),
            info("B", TensorProto.INT64, ["n", 2]),
            info("C", TensorProto.STRING, ["n", 1]),
        ],
        [
            info("A_OUT", TensorProto.FLOAT, ["n", 3]),
            info("A_TWICE", TensorProto.FLOAT, ["n", 3]),
            info("B_OUT", TensorProto.INT64, ["n", 2]),
            info("C_OUT", TensorProto.STRING, ["n", 1]),
        ],
    )


def build_repository(root: Path) -> Path:
    """Write every conformance model into `root` (created if missing); returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for datatype in DATATYPES:
        _identity(root, f"identity_{datatype.lower()}", datatype, 2)
    _identity(root, "identity_fp32_vector", "FP32", 1)
    _identity(root, "identity_int32_scalar", "INT32", 0)
    _identity(root, "identity_fp32_4d", "FP32", 4)
    _multi_io(root)
    return root


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: build_repo.py OUTDIR", file=sys.stderr)
        return 2
    print(build_repository(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
