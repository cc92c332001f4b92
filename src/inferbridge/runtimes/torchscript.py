"""TorchScript models (torch.jit.save files) on the CPU or a CUDA device."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import ModelLoadError
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig
from inferbridge.repository.integrity import require_code_trust
from inferbridge.runtimes.base import Arrays, Runtime, Signature

__all__ = ["TorchScriptOutputError", "TorchScriptRuntime"]

_TORCH_DTYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}


class TorchScriptOutputError(RuntimeError):
    """The module returned something that does not match the declared outputs."""


class TorchScriptRuntime(Runtime):
    """Runs `model.pt` (a TorchScript archive) with torch.jit.load under inference mode.
    An archive carries code: it loads only when config.yaml pins its sha256 or sets
    `trust_pickle: true` (docs/security.md).

    TorchScript has no tensor names: config.yaml declares `inputs` (passed to `forward`
    positionally, in order) and `outputs` (mapped from a returned tensor, a tuple or list
    in order, or a dict by name). The device is the instance group's (`cpu`, or `cuda:N`
    for `kind: gpu`). Parameters: `num_threads` (torch.set_num_threads; process-wide, so
    the last model loaded wins; unset leaves torch's default), `num_interop_threads` (only
    settable before torch's first parallel work), `freeze` (torch.jit.freeze, default
    false), `pin_memory` (stage CUDA inputs in pinned memory, default true on CUDA).
    """

    name = "torchscript"
    platform = "pytorch_torchscript"
    default_model_file = "model.pt"

    def __init__(self) -> None:
        self._module: Any = None
        self._device: Any = None
        self._path = Path()
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._pin = False

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        import torch

        path = self.model_path(model_dir, config)
        if not config.inputs or not config.outputs:
            raise ModelLoadError(
                f"{path}: TorchScript has no tensor names; "
                "config.yaml must declare both inputs and outputs"
            )
        for spec in (*config.input_specs(), *config.output_specs()):
            if spec.datatype not in _TORCH_DTYPES:
                raise ModelLoadError(
                    f"{path}: tensor '{spec.name}' has datatype {spec.datatype}, "
                    "which torch does not support"
                )
        params = config.parameters
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ModelLoadError(
                    f"{path}: instance group asks for {device} but torch sees no CUDA device"
                )
            index = int(device.partition(":")[2] or 0)
            if index >= torch.cuda.device_count():
                raise ModelLoadError(
                    f"{path}: instance group asks for {device} but torch sees "
                    f"{torch.cuda.device_count()} CUDA device(s)"
                )
        try:
            if "num_threads" in params:
                torch.set_num_threads(int(params["num_threads"]))
            if "num_interop_threads" in params:
                torch.set_num_interop_threads(int(params["num_interop_threads"]))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path}: cannot apply thread settings: {exc}") from None
        self._device = torch.device(device)
        # An archive's TorchScript code runs in the server, and torch.load's weights_only
        # check cannot vouch for it (torch refuses weights_only for TorchScript archives).
        require_code_trust(path, model_dir, config, "a TorchScript archive")
        with warnings.catch_warnings():
            # torch >= 2.10 marks TorchScript deprecated (FutureWarning) but still runs it.
            warnings.simplefilter("ignore", FutureWarning)
            try:
                module = torch.jit.load(str(path), map_location=self._device)
            except Exception as exc:  # torch raises RuntimeError, ValueError, zipfile errors
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelLoadError(f"torch.jit.load cannot load {path}: {text}") from None
            module.eval()
            if bool(params.get("freeze", False)):
                module = torch.jit.freeze(module)
        self._module, self._path = module, path
        self._inputs, self._outputs = config.input_specs(), config.output_specs()
        self._pin = self._device.type == "cuda" and bool(params.get("pin_memory", True))

    def metadata(self) -> Signature:
        return Signature(list(self._inputs), list(self._outputs))

    def infer(self, inputs: Arrays) -> Arrays:
        import torch

        if self._module is None:
            raise RuntimeError("TorchScript module is not loaded")
        tensors = []
        for spec in self._inputs:
            array = np.asarray(inputs[spec.name], dtype=dtype_of(spec.datatype))
            if not (array.flags.writeable and array.flags.c_contiguous):
                array = np.array(array, order="C")  # torch.from_numpy wants a writable array
            tensor = torch.from_numpy(array)
            if self._device.type != "cpu":
                if self._pin:
                    tensor = tensor.pin_memory()
                tensor = tensor.to(self._device, non_blocking=True)
            tensors.append(tensor)
        with torch.inference_mode():
            result = self._module(*tensors)
        return self._named(result)

    def unload(self) -> None:
        self._module = None

    def _named(self, result: Any) -> Arrays:
        names = [s.name for s in self._outputs]
        if isinstance(result, dict):
            missing = [n for n in names if n not in result]
            if missing:
                raise TorchScriptOutputError(
                    f"{self._path.name} returned a dict without {missing} (keys {sorted(result)})"
                )
            values = [result[n] for n in names]
        elif isinstance(result, tuple | list):
            if len(result) != len(names):
                raise TorchScriptOutputError(
                    f"{self._path.name} returned {len(result)} values; config declares "
                    f"{len(names)} outputs {names}"
                )
            values = list(result)
        else:
            if len(names) != 1:
                raise TorchScriptOutputError(
                    f"{self._path.name} returned one tensor; config declares outputs {names}"
                )
            values = [result]
        return {n: v.detach().cpu().numpy() for n, v in zip(names, values, strict=True)}
