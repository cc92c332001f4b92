"""TensorFlow SavedModels through their signatures (tensorflow-cpu, or tensorflow with GPUs)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import ModelLoadError
from inferbridge.protocol.datatypes import datatype_of
from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig
from inferbridge.runtimes.base import Arrays, Runtime, Signature

__all__ = ["TensorFlowRuntime"]


class TensorFlowRuntime(Runtime):
    """Runs a SavedModel directory (`model.savedmodel`) through one of its signatures.

    Parameters: `signature` (default `serving_default`), `intra_op_threads` and
    `inter_op_threads` (process-wide, and only before TensorFlow's first operation).
    Inputs and outputs are the signature's, by name; a `None` dimension is -1. A `gpu`
    instance group places the signature on `/GPU:N` (needs a TensorFlow with GPUs).
    """

    name = "tensorflow"
    platform = "tensorflow_savedmodel"
    default_model_file = "model.savedmodel"

    def __init__(self) -> None:
        self._loaded: Any = None
        self._function: Any = None
        self._device = "/CPU:0"
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._input_dtypes: dict[str, Any] = {}

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep C++ start-up chatter out
        _import_triton_first()
        import tensorflow as tf

        path = self.model_path(model_dir, config)
        params = config.parameters
        if not path.is_dir():
            raise ModelLoadError(f"{path} is not a SavedModel directory")
        try:
            if "intra_op_threads" in params:
                tf.config.threading.set_intra_op_parallelism_threads(
                    int(params["intra_op_threads"])
                )
            if "inter_op_threads" in params:
                tf.config.threading.set_inter_op_parallelism_threads(
                    int(params["inter_op_threads"])
                )
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path}: cannot apply thread settings: {exc}") from None
        if device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            gpus = tf.config.list_physical_devices("GPU")
            if index >= len(gpus):
                raise ModelLoadError(
                    f"{path}: instance group asks for {device} but TensorFlow sees "
                    f"{len(gpus)} GPU(s) (tensorflow-cpu has none)"
                )
            self._device = f"/GPU:{index}"
        else:
            self._device = "/CPU:0"
        try:
            with tf.device(self._device):
                loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # TensorFlow raises OSError, ValueError, its own errors ...
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"tf.saved_model.load cannot load {path}: {text}") from None
        signatures = dict(getattr(loaded, "signatures", {}) or {})
        key = str(params.get("signature", "serving_default"))
        if key not in signatures:
            raise ModelLoadError(
                f"{path}: the SavedModel has no signature {key!r} (it has {sorted(signatures)})"
            )
        function = signatures[key]
        _, kwargs = function.structured_input_signature
        self._inputs = [_spec(name, spec) for name, spec in sorted(kwargs.items())]
        self._input_dtypes = {name: spec.dtype for name, spec in kwargs.items()}
        outputs = function.structured_outputs
        if not isinstance(outputs, dict):
            raise ModelLoadError(f"{path}: signature {key!r} does not return named outputs")
        self._outputs = [_spec(name, spec) for name, spec in sorted(outputs.items())]
        self._loaded, self._function = loaded, function

    def metadata(self) -> Signature:
        return Signature(list(self._inputs), list(self._outputs))

    def infer(self, inputs: Arrays) -> Arrays:
        import tensorflow as tf

        if self._function is None:
            raise RuntimeError("SavedModel is not loaded")
        feed = {
            spec.name: tf.convert_to_tensor(
                _strings(inputs[spec.name]) if spec.datatype == "BYTES" else inputs[spec.name],
                dtype=self._input_dtypes[spec.name],
            )
            for spec in self._inputs
        }
        with tf.device(self._device):
            results = self._function(**feed)
        return {spec.name: np.asarray(results[spec.name].numpy()) for spec in self._outputs}

    def unload(self) -> None:
        self._function = None
        self._loaded = None


def _import_triton_first() -> None:
    """Import torch's triton before TensorFlow when both are installed.

    Each bundles LLVM: importing triton after TensorFlow aborts the whole process ("Option
    registered more than once"), which torch.compile or a transformers import in another
    model would do; the other order works.
    """
    if "tensorflow" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        importlib.import_module("triton")
    except Exception:  # a broken triton only matters to torch; TensorFlow must still load
        return


def _spec(name: str, spec: Any) -> TensorSpec:
    dtype = spec.dtype
    datatype = "BYTES" if dtype.name == "string" else datatype_of(np.dtype(dtype.as_numpy_dtype))
    dims = spec.shape.as_list() if spec.shape.rank is not None else [-1]
    return TensorSpec(name, datatype, tuple(-1 if d is None else int(d) for d in dims))


def _strings(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    flat = [x if isinstance(x, bytes) else str(x).encode() for x in array.reshape(-1)]
    return np.array(flat, dtype=object).reshape(array.shape)
