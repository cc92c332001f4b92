"""Find runtime classes by name.

Lookup order: a `module:Class` path given directly in config.yaml (`runtime: pkg.mod:MyRuntime`),
then the built-in table below, then the `inferbridge.runtimes` entry point group, so another
installed package can add a runtime by name. Two different classes under one name are an
error, never a silent override. Classes are imported only when a model needs them.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from inferbridge.runtimes.base import Runtime

__all__ = ["ENTRY_POINT_GROUP", "available_runtimes", "runtime_class"]

ENTRY_POINT_GROUP = "inferbridge.runtimes"

_BUILTIN: dict[str, str] = {
    "onnx": "inferbridge.runtimes.onnx:OnnxRuntime",
    "sklearn": "inferbridge.runtimes.sklearn:SklearnRuntime",
    "native": "inferbridge.runtimes.native:NativeRuntime",
    "wasm": "inferbridge.runtimes.wasm:WasmRuntime",
    "opencv": "inferbridge.runtimes.opencv:OpenCVRuntime",
    "tflite": "inferbridge.runtimes.tflite:TFLiteRuntime",
    "torchscript": "inferbridge.runtimes.torchscript:TorchScriptRuntime",
    "tensorflow": "inferbridge.runtimes.tensorflow:TensorFlowRuntime",
    "pipeline": "inferbridge.runtimes.pipeline:PipelineRuntime",
}


def available_runtimes() -> dict[str, str]:
    """Runtime names mapped to `module:Class` targets."""
    found = dict(_BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in found and found[entry.name] != entry.value:
            raise RuntimeError(
                f"runtime '{entry.name}' is registered twice: {found[entry.name]} and {entry.value}"
            )
        found[entry.name] = entry.value
    return found


def runtime_class(name: str) -> type[Runtime]:
    """The Runtime subclass registered as `name`; KeyError lists the known names."""
    if ":" in name:
        target = name
    else:
        targets = available_runtimes()
        if name not in targets:
            known = ", ".join(sorted(targets))
            raise KeyError(f"unknown runtime '{name}'; known runtimes: {known}")
        target = targets[name]
    module_name, _, attribute = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attribute, None)
    if not (isinstance(cls, type) and issubclass(cls, Runtime)):
        raise TypeError(f"runtime '{name}' ({target}) is not a Runtime subclass")
    return cls
