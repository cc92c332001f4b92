"""The on-disk model repository: `<root>/<model>/config.yaml` (or Triton's `config.pbtxt`)
plus numbered version dirs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import ConfigError, InferBridgeError, ModelLoadError
from inferbridge.isolation.runtime import make_runtime
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import CONFIG_FILE, ModelConfig, find_config, read_config
from inferbridge.repository.integrity import verify_pinned_files
from inferbridge.runtimes.base import Runtime

__all__ = ["CONFIG_FILE", "LoadedVersion", "ModelRecord", "ModelRepository", "VersionState"]

logger = logging.getLogger(__name__)


class VersionState(StrEnum):
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class LoadedVersion:
    """One model version: its runtime when it loaded, or the reason it did not."""

    model: str
    version: int
    path: Path
    config: ModelConfig | None
    runtime: Runtime | None = None
    platform: str = ""
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    state: VersionState = VersionState.UNAVAILABLE
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.state is VersionState.READY


@dataclass(slots=True)
class ModelRecord:
    """A model directory: its versions, or the config error that stopped all of them."""

    name: str
    path: Path
    config: ModelConfig | None
    versions: dict[int, LoadedVersion] = field(default_factory=dict)
    error: str = ""

    @property
    def default_version(self) -> LoadedVersion | None:
        """The highest version that is ready, else the highest version at all."""
        ready = [v for v in self.versions.values() if v.ready]
        pool = ready or list(self.versions.values())
        return max(pool, key=lambda v: v.version) if pool else None


class ModelRepository:
    """Scans a repository directory and loads every model version the policies select."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def scan(self) -> list[ModelRecord]:
        if not self.root.is_dir():
            raise ConfigError(f"model repository {self.root} is not a directory")
        records: list[ModelRecord] = []
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if model_dir.name.startswith((".", "_")):
                continue
            records.append(self._scan_model(model_dir))
        return records

    def load_all(self) -> list[ModelRecord]:
        records = self.scan()
        for record in records:
            for version in record.versions.values():
                load_version(version)
        return records

    def _scan_model(self, model_dir: Path) -> ModelRecord:
        name = model_dir.name
        config_path = find_config(model_dir)
        if config_path is None:
            error = f"model '{name}': {model_dir / CONFIG_FILE} (or config.pbtxt) is missing"
            logger.error(error)
            return ModelRecord(name, model_dir, None, error=error)
        try:
            config = read_config(config_path, name)
        except ConfigError as exc:
            logger.error("model '%s' not loaded: %s", name, exc.message)
            return ModelRecord(name, model_dir, None, error=exc.message)
        available = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        chosen = config.version_policy.select(available)
        record = ModelRecord(name, model_dir, config)
        if not chosen:
            record.error = (
                f"model '{name}': no version directory matches its version policy "
                f"(found {sorted(available) or 'none'})"
            )
            logger.error(record.error)
        for number in chosen:
            record.versions[number] = LoadedVersion(name, number, model_dir / str(number), config)
        return record


def load_version(version: LoadedVersion) -> None:
    """Load one version in place; failures are recorded on it, never raised."""
    config = version.config
    assert config is not None
    try:
        runtime = make_runtime(config)
    except (KeyError, ImportError, TypeError, RuntimeError) as exc:
        _fail(version, f"runtime '{config.runtime}' is not available: {_text(exc)}")
        return
    try:
        verify_pinned_files(version.path, config)  # before any runtime reads a byte
        runtime.load(version.path, config, config.device())
        signature = runtime.metadata()
        version.inputs = _merge(version, config.input_specs(), signature.inputs, "inputs")
        version.outputs = _merge(version, config.output_specs(), signature.outputs, "outputs")
    except InferBridgeError as exc:
        _fail(version, exc.message)
        return
    except Exception as exc:  # a runtime's framework may raise anything on a bad artefact
        _fail(version, f"{type(exc).__name__}: {exc}")
        return
    if config.max_batch_size > 0:
        version.inputs = [_batched(s) for s in version.inputs]
        version.outputs = [_batched(s) for s in version.outputs]
    if config.warmup:
        try:
            warm_up(runtime, version.inputs, config)
        except Exception as exc:  # a model that cannot run synthetic input is not ready
            _fail(version, f"warm-up failed: {type(exc).__name__}: {exc}")
            return
    version.runtime = runtime
    version.platform = config.platform or runtime.platform
    version.state = VersionState.READY
    version.reason = ""
    logger.info("loaded model '%s' version %d (%s)", version.model, version.version, config.runtime)


def warm_up(runtime: Runtime, inputs: list[TensorSpec], config: ModelConfig) -> None:
    """Run each preferred batch size (or one row) of zeros through the runtime, so the first
    real request does not pay for lazy initialisation."""
    batching = config.dynamic_batching
    sizes = (batching.preferred_batch_sizes if batching is not None else []) or [1]
    for size in sizes:
        runtime.infer({spec.name: _zeros(spec, size, config.max_batch_size > 0) for spec in inputs})
    logger.info("warmed up with batch sizes %s", sizes)


def _zeros(spec: TensorSpec, rows: int, batched: bool) -> np.ndarray[Any, Any]:
    shape = [max(d, 1) for d in spec.shape]
    if batched and shape:
        shape[0] = rows
    if spec.datatype == "BYTES":
        array = np.empty(shape, dtype=object)
        array.fill(b"")
        return array
    return np.zeros(shape, dtype=dtype_of(spec.datatype))


def unload_version(version: LoadedVersion) -> None:
    if version.runtime is not None:
        version.runtime.unload()
    version.runtime = None
    version.state = VersionState.UNAVAILABLE
    version.reason = "unloaded"


def _merge(
    version: LoadedVersion, declared: list[TensorSpec], derived: list[TensorSpec], what: str
) -> list[TensorSpec]:
    if not declared:
        if not derived:
            raise ModelLoadError(
                f"config declares no {what} and the runtime cannot derive them from the file"
            )
        return derived
    if derived:
        known = {s.name for s in derived}
        unknown = [s.name for s in declared if s.name not in known]
        if unknown:
            raise ModelLoadError(
                f"config {what} {unknown} are not in the model file, which has {sorted(known)}"
            )
    return declared


def _batched(spec: TensorSpec) -> TensorSpec:
    if not spec.shape or spec.shape[0] == -1:
        return spec
    return TensorSpec(spec.name, spec.datatype, (-1, *spec.shape[1:]))


def _fail(version: LoadedVersion, reason: str) -> None:
    version.state = VersionState.UNAVAILABLE
    version.reason = f"model '{version.model}' version {version.version}: {reason}"
    logger.error("not loaded: %s", version.reason)


def _text(exc: BaseException) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
