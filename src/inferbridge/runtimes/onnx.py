"""ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inferbridge.errors import InvalidInput, ModelLoadError
from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig
from inferbridge.runtimes.base import Arrays, Runtime, Signature

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["OnnxRuntime"]

_ONNX_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


class OnnxRuntime(Runtime):
    """Runs `model.onnx` with onnxruntime.

    Parameters (config `parameters`): `intra_op_num_threads` (default 1: a server runs many
    requests at once, and one thread per call avoids oversubscribing the cores),
    `inter_op_num_threads` (default 1), `graph_optimization_level` (`all`, `extended`,
    `basic`, `disabled`; default `all`).
    """

    name = "onnx"
    platform = "onnx_onnxv1"
    default_model_file = "model.onnx"

    def __init__(self) -> None:
        self._session: onnxruntime.InferenceSession | None = None
        self._string_inputs: set[str] = set()
        self._output_names: list[str] = []

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        import onnxruntime as ort

        path = self.model_path(model_dir, config)
        params = config.parameters
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_num_threads", 1))
        options.inter_op_num_threads = int(params.get("inter_op_num_threads", 1))
        level = str(params.get("graph_optimization_level", "all"))
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        if level not in levels:
            raise ModelLoadError(
                f"parameter graph_optimization_level={level!r}; expected one of {', '.join(levels)}"
            )
        options.graph_optimization_level = levels[level]
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelLoadError(
                    f"device {device} requested but this onnxruntime has no CUDAExecutionProvider"
                )
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises several unrelated types for bad files
            raise ModelLoadError(f"onnxruntime cannot load {path}: {exc}") from None
        self._string_inputs = {
            i.name for i in self._session.get_inputs() if i.type == "tensor(string)"
        }
        self._output_names = [o.name for o in self._session.get_outputs()]

    def metadata(self) -> Signature:
        session = self._require_session()
        return Signature(
            inputs=[_spec(arg) for arg in session.get_inputs()],
            outputs=[_spec(arg) for arg in session.get_outputs()],
        )

    def infer(self, inputs: Arrays) -> Arrays:
        session = self._require_session()
        feed = {
            name: (_bytes_to_str(name, value) if name in self._string_inputs else value)
            for name, value in inputs.items()
        }
        results = session.run(self._output_names, feed)
        return dict(zip(self._output_names, (np.asarray(r) for r in results), strict=True))

    def unload(self) -> None:
        self._session = None

    def _require_session(self) -> onnxruntime.InferenceSession:
        if self._session is None:
            raise RuntimeError("ONNX model is not loaded")
        return self._session


def _spec(arg: Any) -> TensorSpec:
    datatype = _ONNX_TYPES.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"tensor '{arg.name}' has unsupported ONNX type {arg.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def _bytes_to_str(name: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # ONNX string tensors hold text; bytes that are not UTF-8 are the client's mistake.
    try:
        flat = [x.decode() if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"input '{name}': this ONNX model takes text, and a BYTES element is not UTF-8 "
            f"({exc.reason} at byte {exc.start})"
        ) from None
    return np.array(flat, dtype=object).reshape(array.shape)
