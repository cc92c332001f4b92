"""torch.nn.Module -> TorchScript and/or ONNX, written as repository entries and verified."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import InferBridgeError
from inferbridge.export.verify import Verification, verify_entry
from inferbridge.repository.integrity import file_sha256

__all__ = ["FORMATS", "export_torch", "load_module"]

FORMATS = ("torchscript", "onnx")
_DATATYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32"}


def load_module(target: str | None, checkpoint: Path | None) -> Any:
    """`pkg.mod:factory` (a class or function returning a module) with an optional state-dict
    checkpoint, or a checkpoint holding a whole pickled module."""
    import importlib

    import torch

    if target is None:
        if checkpoint is None:
            raise InferBridgeError("give --module pkg.mod:Class, --checkpoint FILE, or both")
        module = torch.load(checkpoint, map_location="cpu", weights_only=False)
    else:
        module_name, _, attribute = target.partition(":")
        factory = getattr(importlib.import_module(module_name), attribute or "Model")
        module = factory()
        if checkpoint is not None:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            module.load_state_dict(state.get("state_dict", state))
    if not isinstance(module, torch.nn.Module):
        raise InferBridgeError(f"{target or checkpoint} is not a torch.nn.Module")
    return module.eval()


def export_torch(
    module: Any,
    samples: Sequence[np.ndarray[Any, Any]],
    repository: Path,
    name: str,
    *,
    formats: Sequence[str] = FORMATS,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    tolerance: float = 1e-4,
) -> list[Verification]:
    """Export `module` traced on `samples[0]` (one array per input, batch first; the batch
    dimension stays variable) and verify every entry on all `samples`.

    One format is written as `<name>`; both as `<name>_torchscript` and `<name>_onnx`."""
    import torch

    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InferBridgeError(f"unknown export formats {unknown}; use {', '.join(FORMATS)}")
    module = module.eval()
    example = tuple(torch.from_numpy(np.ascontiguousarray(s)) for s in _as_inputs(samples[0]))
    with torch.inference_mode():
        reference = _outputs(module(*example), output_names)
    results: list[Verification] = []
    for fmt in formats:
        entry = repository / (name if len(formats) == 1 else f"{name}_{fmt}")
        (entry / "1").mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and exporter chatter
            if fmt == "torchscript":
                traced = torch.jit.trace(module, example, check_trace=False)
                torch.jit.save(traced, str(entry / "1" / "model.pt"))
            else:
                _to_onnx(module, example, entry / "1" / "model.onnx", input_names, output_names)
        _write_config(entry, fmt, example, reference, input_names, output_names)
        inputs = {
            n: np.ascontiguousarray(a)
            for n, a in zip(input_names, _as_inputs(samples[0]), strict=True)
        }
        with torch.inference_mode():
            want = _outputs(module(*example), output_names)
        results.append(verify_entry(entry, inputs, want, tolerance))
        for extra in samples[1:]:
            arrays = _as_inputs(extra)
            tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
            with torch.inference_mode():
                want = _outputs(module(*tensors), output_names)
            feeds = dict(zip(input_names, arrays, strict=True))
            results.append(verify_entry(entry, feeds, want, tolerance))
    return results


def _as_inputs(sample: Any) -> list[np.ndarray[Any, Any]]:
    return list(sample) if isinstance(sample, list | tuple) else [sample]


def _outputs(result: Any, names: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
    tensors = list(result) if isinstance(result, list | tuple) else [result]
    if len(tensors) != len(names):
        raise InferBridgeError(
            f"the module returns {len(tensors)} tensors; name them all with --output-names"
        )
    return {n: t.detach().cpu().numpy() for n, t in zip(names, tensors, strict=True)}


def _to_onnx(
    module: Any, example: tuple[Any, ...], path: Path, inputs: Sequence[str], outputs: Sequence[str]
) -> None:
    import torch

    axes = {n: {0: "batch"} for n in [*inputs, *outputs]}
    torch.onnx.export(
        module,
        example,
        str(path),
        input_names=list(inputs),
        output_names=list(outputs),
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )


def _write_config(
    entry: Path,
    fmt: str,
    example: tuple[Any, ...],
    reference: dict[str, np.ndarray[Any, Any]],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> None:
    lines = [f"# Exported by `inferbridge export torch` ({fmt}).\n"]
    if fmt == "onnx":
        lines.append("runtime: onnx\n")
    else:
        lines.append("runtime: torchscript\ninputs:\n")
        for name, tensor in zip(input_names, example, strict=True):
            lines.append(_tensor_line(name, str(tensor.dtype).removeprefix("torch."), tensor.shape))
        lines.append("outputs:\n")
        for name in output_names:
            array = reference[name]
            lines.append(_tensor_line(name, str(array.dtype), array.shape))
        # The archive carries code: the server loads it because its digest is pinned.
        digest = file_sha256(entry / "1" / "model.pt")
        lines.append(f"sha256: {{1/model.pt: '{digest}'}}\n")
    lines.append("max_batch_size: 64\n")
    (entry / "config.yaml").write_text("".join(lines))


def _tensor_line(name: str, dtype: str, shape: Sequence[int]) -> str:
    if dtype not in _DATATYPES:
        raise InferBridgeError(f"tensor '{name}' has dtype {dtype}, which export does not map")
    dims = ", ".join(["-1", *(str(int(d)) for d in list(shape)[1:])])
    return f"  - {{name: {name}, datatype: {_DATATYPES[dtype]}, shape: [{dims}]}}\n"
