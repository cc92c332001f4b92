"""The transport-neutral core: health, metadata and inference over the loaded repository."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from inferbridge import __version__
from inferbridge.batching.scheduler import Scheduler
from inferbridge.dataplane.executor import build_scheduler
from inferbridge.dataplane.validation import validate_inputs, validate_requested_outputs
from inferbridge.errors import (
    InferBridgeError,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotReady,
)
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    OutputTensor,
    TensorSpec,
)
from inferbridge.repository.repository import LoadedVersion, ModelRecord, unload_version

__all__ = ["EXTENSIONS", "DataPlane", "ModelMetadata", "RepositoryEntry", "ServerMetadata"]

logger = logging.getLogger(__name__)

EXTENSIONS = ("binary_tensor_data", "model_repository")
SERVER_NAME = "inferbridge"


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]
    model_errors: dict[str, str]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass(frozen=True, slots=True)
class RepositoryEntry:
    name: str
    version: str
    state: str
    reason: str


class DataPlane:
    """Everything the front ends call. It knows nothing about HTTP or gRPC."""

    def __init__(self, *, strict_readiness: bool = False) -> None:
        self._records: dict[str, ModelRecord] = {}
        self._schedulers: dict[tuple[str, int], Scheduler] = {}
        # Each model's default version, resolved once: versions change state only while the
        # repository loads (before install) and when they unload at shutdown.
        self._defaults: dict[str, LoadedVersion | None] = {}
        self._strict_readiness = strict_readiness
        self._loaded = False
        self.draining = False

    # -- lifecycle -------------------------------------------------------------------------

    def install(self, records: list[ModelRecord]) -> None:
        """Serve these loaded records (called once the repository has loaded)."""
        for record in records:
            self._records[record.name] = record
            self._defaults[record.name] = record.default_version
            for version in record.versions.values():
                if version.ready:
                    self._schedulers[(record.name, version.version)] = build_scheduler(version)
        self._loaded = True

    def shutdown(self) -> None:
        for scheduler in self._schedulers.values():
            scheduler.close()
        self._schedulers.clear()
        for record in self._records.values():
            for version in record.versions.values():
                unload_version(version)

    # -- health and metadata ---------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        if self.draining or not self._loaded:
            return False
        if self._strict_readiness:
            return not self.model_errors()
        return True

    def model_errors(self) -> dict[str, str]:
        """Models (or versions) that failed to load, with the reason."""
        errors: dict[str, str] = {}
        for record in self._records.values():
            if record.error:
                errors[record.name] = record.error
            for version in record.versions.values():
                if not version.ready:
                    errors[f"{record.name}/{version.version}"] = version.reason
        return errors

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, EXTENSIONS, self.model_errors())

    def model_names(self) -> list[str]:
        return sorted(self._records)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self._find(name, version).ready

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        found = self._find(name, version)
        if not found.ready:
            raise ModelNotReady(f"model '{name}' is not ready: {found.reason}")
        record = self._records[name]
        versions = [
            str(v.version) for v in sorted(record.versions.values(), key=_number) if v.ready
        ]
        return ModelMetadata(name, versions, found.platform, found.inputs, found.outputs)

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        found = self._find(name, version)
        assert found.config is not None
        return found.config.model_dump(mode="json")

    def repository_index(self) -> list[RepositoryEntry]:
        entries: list[RepositoryEntry] = []
        for record in sorted(self._records.values(), key=lambda r: r.name):
            if not record.versions:
                entries.append(RepositoryEntry(record.name, "", "UNAVAILABLE", record.error))
            for version in sorted(record.versions.values(), key=_number):
                entries.append(
                    RepositoryEntry(
                        record.name, str(version.version), version.state.value, version.reason
                    )
                )
        return entries

    # -- inference -------------------------------------------------------------------------

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        if self.draining:
            raise ServerNotReady("the server is shutting down")
        version = self._find(request.model_name, request.model_version)
        if not version.ready:
            raise ModelNotReady(f"model '{request.model_name}' is not ready: {version.reason}")
        inputs = validate_inputs(request, version.inputs, _max_batch(version))
        validate_requested_outputs(request, version.outputs)
        scheduler = self._schedulers[(version.model, version.version)]
        outputs = await scheduler.submit(
            inputs,
            deadline=self._deadline(request, version),
            priority=_int_parameter(request, "priority"),
            caller_gone=request.caller_gone,
        )
        return self._response(request, version, outputs)

    def check_admission(self, name: str, version: str | None = None) -> None:
        """Refuse early (QueueFull) when the model's queue is full; unknown or unready models
        pass here and get their error from infer()."""
        try:
            found = self._find(name, version)
        except InferBridgeError:
            return
        scheduler = self._schedulers.get((found.model, found.version))
        if scheduler is not None and not self.draining:
            scheduler.check_admission()

    def admission_bounds(self) -> dict[str, int]:
        """Per model whose versions all have a bounded queue: the sum over its versions of
        `max_queue_size` plus one per instance, the most requests a front end should let
        reach it at once (queued or running) so that it never has to refuse one itself.

        With batching, an instance runs up to max_batch_size requests besides the queue, so
        the model could hold more; counting one per instance stops short of that on purpose:
        refusing costs the event loop up to half a served request, and a shorter queue waits
        less."""
        bounds: dict[str, int] = {}
        unbounded: set[str] = set()
        for (name, _), scheduler in self._schedulers.items():
            queue = scheduler.policy.max_queue_size
            if queue <= 0:
                unbounded.add(name)
            else:
                bounds[name] = bounds.get(name, 0) + queue + scheduler.instances
        return {name: bound for name, bound in bounds.items() if name not in unbounded}

    @staticmethod
    def _deadline(request: InferenceRequest, version: LoadedVersion) -> float | None:
        """The earliest of the transport's deadline, the `timeout` parameter (microseconds,
        Triton's) and the model's default_timeout_ms; absolute, in time.monotonic() seconds."""
        deadline = request.deadline
        timeout_us = _int_parameter(request, "timeout")
        if timeout_us > 0:
            candidate = time.monotonic() + timeout_us / 1e6
            deadline = candidate if deadline is None else min(deadline, candidate)
        batching = version.config.dynamic_batching if version.config is not None else None
        if batching is not None and batching.default_timeout_ms > 0 and deadline is None:
            deadline = time.monotonic() + batching.default_timeout_ms / 1000.0
        return deadline

    def _response(
        self, request: InferenceRequest, version: LoadedVersion, outputs: dict[str, Any]
    ) -> InferenceResponse:
        wanted = [o.name for o in request.outputs] if request.outputs else None
        tensors: list[OutputTensor] = []
        for spec in version.outputs:
            if wanted is not None and spec.name not in wanted:
                continue
            array = outputs[spec.name]
            if spec.datatype != "BYTES":
                dtype = dtype_of(spec.datatype)
                if array.dtype is not dtype and array.dtype != dtype:
                    array = array.astype(dtype)
            if not spec.accepts_shape(array.shape):
                raise InferenceFailed(
                    f"model '{version.model}' returned output '{spec.name}' with shape "
                    f"{list(array.shape)}, which does not match its metadata {list(spec.shape)}"
                )
            tensors.append(OutputTensor(spec.name, spec.datatype, array))
        return InferenceResponse(
            model_name=version.model,
            model_version=str(version.version),
            outputs=tensors,
            id=request.id,
        )

    def _find(self, name: str, version: str | None) -> LoadedVersion:
        record = self._records.get(name)
        if record is None:
            raise ModelNotFound(f"unknown model '{name}'")
        if version is None or version == "":
            found = self._defaults[name]
            if found is None:
                raise ModelNotReady(f"model '{name}' is not ready: {record.error}")
            return found
        if not version.isdigit() or int(version) not in record.versions:
            served = ", ".join(str(v) for v in sorted(record.versions)) or "none"
            raise ModelNotFound(
                f"model '{name}' has no version '{version}' (versions served: {served})"
            )
        return record.versions[int(version)]


def _int_parameter(request: InferenceRequest, name: str) -> int:
    value = request.parameters.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"parameter '{name}' must be a non-negative integer, got {value!r}")
    return value


def _number(version: LoadedVersion) -> int:
    return version.version


def _max_batch(version: LoadedVersion) -> int:
    return version.config.max_batch_size if version.config is not None else 0
