"""Pipelines: ordered processor and model steps declared in config.yaml, run in the server.

```yaml
runtime: pipeline
max_batch_size: 8
inputs:  [{name: image, datatype: BYTES, shape: [-1]}]
outputs: [{name: labels, datatype: BYTES, shape: [-1, 3]}, ...]
parameters:
  steps:
    - {processor: decode_image, inputs: [image], outputs: [pixels], color: gray}
    - {model: digits, inputs: {pixels: flat}, outputs: {probabilities: probs}}
    - {processor: top_k, inputs: [probs], outputs: [labels, scores], k: 3}
```

A processor step names its input and output values in order (see `inferbridge.pipelines`);
its other keys are its parameters. A model step loads another model of the same repository
(`<repository>/<model>/<version>`, the highest version unless `version` says) with its own
runtime, maps the model's input names to pipeline values (`inputs`) and its outputs back
(`outputs`); `per_item: true` runs it one batch row at a time (networks exported with a
fixed batch of 1). The pipeline's own inputs and outputs are declared in config.yaml and
served, batched and described like any model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import ModelLoadError
from inferbridge.pipelines import PROCESSORS, Processor, Value
from inferbridge.repository.config import ModelConfig, find_config, read_config
from inferbridge.repository.integrity import verify_pinned_files
from inferbridge.runtimes.base import Arrays, Runtime, Signature
from inferbridge.runtimes.registry import runtime_class

__all__ = ["PipelineRuntime"]


@dataclass(slots=True)
class _Step:
    label: str
    inputs: list[str]
    outputs: list[str]
    processor: Processor | None = None
    runtime: Runtime | None = None
    #: model input name -> pipeline value; model output name -> pipeline value.
    feeds: dict[str, str] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    per_item: bool = False


class PipelineRuntime(Runtime):
    """Runs `parameters.steps` in order over a whole batch."""

    name = "pipeline"
    platform = "pipeline"
    default_model_file = "config.yaml"
    releases_gil = True  # the heavy steps (OpenCV, ONNX Runtime, tokenizers) release it

    def __init__(self) -> None:
        self._steps: list[_Step] = []
        self._inputs: list[str] = []
        self._outputs: list[str] = []

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        steps = config.parameters.get("steps")
        if not isinstance(steps, list) or not steps:
            raise ModelLoadError("a pipeline needs parameters.steps: a non-empty list of steps")
        if not config.inputs or not config.outputs:
            raise ModelLoadError("a pipeline's config.yaml must declare its inputs and outputs")
        self._inputs = [t.name for t in config.inputs]
        self._outputs = [t.name for t in config.outputs]
        known = set(self._inputs)
        loaded: list[_Step] = []
        try:
            for index, spec in enumerate(steps):
                step = self._build(index, spec, model_dir, device)
                missing = [name for name in step.inputs if name not in known]
                if missing:
                    raise ModelLoadError(
                        f"{step.label}: values {missing} are not produced by an earlier step "
                        f"(known: {sorted(known)})"
                    )
                known.update(step.outputs)
                loaded.append(step)
        except Exception:
            for step in loaded:
                if step.runtime is not None:
                    step.runtime.unload()
            raise
        absent = [name for name in self._outputs if name not in known]
        if absent:
            raise ModelLoadError(f"pipeline outputs {absent} are produced by no step")
        self._steps = loaded

    def _build(self, index: int, spec: Any, model_dir: Path, device: str) -> _Step:
        if not isinstance(spec, dict):
            raise ModelLoadError(f"step {index}: expected a mapping, got {spec!r}")
        spec = dict(spec)
        if "processor" in spec:
            return self._processor_step(index, spec, model_dir)
        if "model" in spec:
            return self._model_step(index, spec, model_dir, device)
        raise ModelLoadError(f"step {index}: name a `processor` or a `model`")

    @staticmethod
    def _processor_step(index: int, spec: dict[str, Any], model_dir: Path) -> _Step:
        kind = str(spec.pop("processor"))
        label = f"step {index} ({kind})"
        cls = PROCESSORS.get(kind)
        if cls is None:
            raise ModelLoadError(f"{label}: unknown processor; known: {sorted(PROCESSORS)}")
        inputs, outputs = spec.pop("inputs", None), spec.pop("outputs", None)
        if not _names(inputs) or not _names(outputs):
            raise ModelLoadError(f"{label}: `inputs` and `outputs` must be lists of value names")
        low, high = cls.arity
        if not low <= len(inputs) <= high:
            raise ModelLoadError(f"{label}: takes {low} to {high} inputs, got {len(inputs)}")
        low, high = cls.returns
        if not low <= len(outputs) <= high:
            raise ModelLoadError(f"{label}: returns {low} to {high} outputs, got {len(outputs)}")
        try:
            processor = cls(spec, model_dir)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{label}: {exc.message}") from None
        return _Step(label, list(inputs), list(outputs), processor=processor)

    @staticmethod
    def _model_step(index: int, spec: dict[str, Any], model_dir: Path, device: str) -> _Step:
        name = str(spec["model"])
        label = f"step {index} (model {name})"
        if not name or name.startswith(".") or "/" in name or "\\" in name or "\x00" in name:
            raise ModelLoadError(f"{label}: a step's model is a model of the same repository")
        feeds: Any = spec.get("inputs")
        results: Any = spec.get("outputs")
        if not _mapping(feeds) or not _mapping(results):
            raise ModelLoadError(
                f"{label}: `inputs` and `outputs` map the model's tensor names to values"
            )
        model_root = model_dir.parent.parent / name
        config_path = find_config(model_root)
        if config_path is None:
            raise ModelLoadError(
                f"{label}: no model '{name}' beside the pipeline "
                f"({model_root / 'config.yaml'} or config.pbtxt)"
            )
        config = read_config(config_path, name)
        version = spec.get("version")
        if version is None:
            numbers = [int(p.name) for p in model_root.iterdir() if p.name.isdigit()]
            chosen = config.version_policy.select(numbers)
            if not chosen:
                raise ModelLoadError(f"{label}: model '{name}' has no version directory")
            version = chosen[-1]
        elif not str(version).isdigit():
            raise ModelLoadError(f"{label}: `version` is a version number, got {version!r}")
        try:
            runtime = runtime_class(config.runtime)()
        except (KeyError, ImportError, TypeError, RuntimeError) as exc:
            raise ModelLoadError(
                f"{label}: runtime '{config.runtime}' unavailable: {exc}"
            ) from None
        try:
            verify_pinned_files(model_root / str(version), config)
            runtime.load(model_root / str(version), config, device)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{label}: {exc.message}") from None
        return _Step(
            label,
            list(feeds.values()),
            list(results.values()),
            runtime=runtime,
            feeds=dict(feeds),
            results=dict(results),
            per_item=bool(spec.get("per_item", False)),
        )

    def metadata(self) -> Signature:
        return Signature()  # config.yaml declares a pipeline's tensors

    def infer(self, inputs: Arrays) -> Arrays:
        values: dict[str, Value] = dict(inputs)
        for step in self._steps:
            if step.processor is not None:
                produced = step.processor(*(values[name] for name in step.inputs))
                values.update(zip(step.outputs, produced, strict=False))
            else:
                values.update(self._run_model(step, values))
        return {name: np.asarray(values[name]) for name in self._outputs}

    @staticmethod
    def _run_model(step: _Step, values: dict[str, Value]) -> dict[str, Value]:
        assert step.runtime is not None
        feeds = {tensor: np.asarray(values[value]) for tensor, value in step.feeds.items()}
        if not step.per_item:
            outputs = step.runtime.infer(feeds)
        else:
            rows = len(next(iter(feeds.values())))
            parts = [
                step.runtime.infer({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(rows)
            ]
            outputs = (
                {k: np.concatenate([p[k] for p in parts]) for k in step.results} if parts else {}
            )
        return {value: outputs[tensor] for tensor, value in step.results.items()}

    def unload(self) -> None:
        for step in self._steps:
            if step.runtime is not None:
                step.runtime.unload()
        self._steps = []


def _names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _mapping(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    )
