"""TensorFlow Lite models through ai-edge-litert's Interpreter."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import ModelLoadError
from inferbridge.protocol.datatypes import datatype_of
from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig
from inferbridge.runtimes.base import Arrays, Runtime, Signature

__all__ = ["TFLiteRuntime"]


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str  # the served name (after `tensor_names`)
    key: str  # the signature's key, or the tensor's name without signatures
    index: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # the model's shape signature; -1 where it is dynamic


@dataclass(slots=True)
class _Worker:
    interpreter: Any
    runner: Any  # a SignatureRunner, or None to drive tensors by index
    shapes: dict[int, tuple[int, ...]]  # the input shapes the interpreter is allocated for


class TFLiteRuntime(Runtime):
    """Runs `model.tflite` with ai_edge_litert.interpreter.Interpreter.

    When the model has signatures, inputs and outputs are its `signature` (parameter;
    default `serving_default`, else the first one) with their signature names; otherwise
    the graph's input and output tensors by name. The first dimension is the batch: a
    model exported with a fixed batch size (litert-torch exports those) serves any batch
    by running it in chunks of that size, the last one padded with zeros; a dynamic batch
    dimension is resized to each request. Parameters: `num_threads` (default 1),
    `tensor_names` (a mapping from the model's names to served names, for exports named
    `args_0`, `output_0`, ...). Each worker thread has its own interpreter (interpreters
    are not thread-safe).
    """

    name = "tflite"
    platform = "tflite"
    default_model_file = "model.tflite"

    def __init__(self) -> None:
        self._path = Path()
        self._threads = 1
        self._signature: str | None = None
        self._inputs: list[_Tensor] = []
        self._outputs: list[_Tensor] = []
        self._local = threading.local()
        self._generation = 0

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        path = self.model_path(model_dir, config)
        if device != "cpu":
            raise ModelLoadError(f"{path}: the tflite runtime runs on the CPU only, not {device}")
        params = config.parameters
        try:
            self._threads = int(params.get("num_threads", 1))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path}: bad parameter num_threads: {exc}") from None
        self._path = path
        interpreter = self._interpreter()
        signatures = interpreter.get_signature_list()
        wanted = params.get("signature")
        if wanted is not None and wanted not in signatures:
            raise ModelLoadError(
                f"{path}: parameter signature={wanted!r}; the model has {sorted(signatures)}"
            )
        if signatures:
            key = str(
                wanted
                or (
                    "serving_default" if "serving_default" in signatures else next(iter(signatures))
                )
            )
            runner = interpreter.get_signature_runner(key)
            self._signature = key
            self._inputs = [_tensor(n, d) for n, d in runner.get_input_details().items()]
            self._outputs = [_tensor(n, d) for n, d in runner.get_output_details().items()]
        else:
            self._signature = None
            self._inputs = [_tensor(d["name"], d) for d in interpreter.get_input_details()]
            self._outputs = [_tensor(d["name"], d) for d in interpreter.get_output_details()]
        renames = params.get("tensor_names", {}) or {}
        if not isinstance(renames, dict):
            raise ModelLoadError(f"{path}: parameter tensor_names must map model names to names")
        unknown = sorted(set(renames) - {t.key for t in (*self._inputs, *self._outputs)})
        if unknown:
            raise ModelLoadError(
                f"{path}: parameter tensor_names renames {unknown}, which the model does not "
                f"have (it has {[t.key for t in (*self._inputs, *self._outputs)]})"
            )
        self._inputs = [_renamed(t, renames) for t in self._inputs]
        self._outputs = [_renamed(t, renames) for t in self._outputs]
        for tensor in (*self._inputs, *self._outputs):
            if not tensor.shape:
                raise ModelLoadError(
                    f"{path}: tensor '{tensor.name}' is a scalar; the first dimension must be "
                    "the batch"
                )
        batches = {t.shape[0] for t in self._inputs}
        if len(batches) > 1:
            raise ModelLoadError(
                f"{path}: inputs disagree on the batch dimension: {sorted(batches)}"
            )
        self._generation += 1
        self._local.worker = _Worker(interpreter, self._runner(interpreter), {})
        self._local.generation = self._generation

    def metadata(self) -> Signature:
        def spec(tensor: _Tensor) -> TensorSpec:
            return TensorSpec(tensor.name, datatype_of(tensor.dtype), (-1, *tensor.shape[1:]))

        return Signature([spec(t) for t in self._inputs], [spec(t) for t in self._outputs])

    def infer(self, inputs: Arrays) -> Arrays:
        worker = self._worker()
        arrays = {t.name: np.asarray(inputs[t.name], dtype=t.dtype) for t in self._inputs}
        rows = int(next(iter(arrays.values())).shape[0])
        fixed = self._inputs[0].shape[0]
        if fixed == -1:
            return self._run(worker, arrays)
        parts: list[Arrays] = []
        for start in range(0, rows, fixed):
            chunk = {n: a[start : start + fixed] for n, a in arrays.items()}
            short = fixed - int(next(iter(chunk.values())).shape[0])
            if short:
                chunk = {
                    n: np.concatenate([a, np.zeros((short, *a.shape[1:]), a.dtype)])
                    for n, a in chunk.items()
                }
            result = self._run(worker, chunk)
            parts.append({n: v[: fixed - short] for n, v in result.items()})
        if not parts:
            return {t.name: np.zeros((0, *t.shape[1:]), t.dtype) for t in self._outputs}
        return {t.name: np.concatenate([p[t.name] for p in parts]) for t in self._outputs}

    def unload(self) -> None:
        self._generation += 1
        self._local = threading.local()

    # -- internals ---------------------------------------------------------------------------

    def _interpreter(self) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_path=str(self._path), num_threads=self._threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"ai-edge-litert cannot load {self._path}: {exc}") from None
        return interpreter

    def _runner(self, interpreter: Any) -> Any:
        return interpreter.get_signature_runner(self._signature) if self._signature else None

    def _worker(self) -> _Worker:
        if getattr(self._local, "generation", -1) != self._generation:
            interpreter = self._interpreter()
            self._local.worker = _Worker(interpreter, self._runner(interpreter), {})
            self._local.generation = self._generation
        worker: _Worker = self._local.worker
        return worker

    def _run(self, worker: _Worker, arrays: Arrays) -> Arrays:
        if worker.runner is not None:
            # The signature runner resizes inputs whose shape differs and copies outputs.
            results = worker.runner(**{t.key: arrays[t.name] for t in self._inputs})
            return {t.name: np.asarray(results[t.key]) for t in self._outputs}
        interpreter = worker.interpreter
        resized = False
        for tensor in self._inputs:
            shape = arrays[tensor.name].shape
            if worker.shapes.get(tensor.index, tensor.shape) != shape:
                interpreter.resize_tensor_input(tensor.index, list(shape))
                worker.shapes[tensor.index] = shape
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for tensor in self._inputs:
            interpreter.set_tensor(tensor.index, arrays[tensor.name])
        interpreter.invoke()
        return {t.name: interpreter.get_tensor(t.index) for t in self._outputs}


def _tensor(name: str, details: dict[str, Any]) -> _Tensor:
    signature = details.get("shape_signature")
    shape = signature if signature is not None and len(signature) else details["shape"]
    return _Tensor(
        name,
        name,
        int(details["index"]),
        np.dtype(details["dtype"]),
        tuple(int(d) for d in shape),
    )


def _renamed(tensor: _Tensor, renames: dict[str, Any]) -> _Tensor:
    if tensor.key not in renames:
        return tensor
    return _Tensor(str(renames[tensor.key]), tensor.key, tensor.index, tensor.dtype, tensor.shape)
