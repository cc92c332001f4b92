"""The transport-neutral core: health, metadata, inference and model control over the live
model set (`inferbridge.models`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferbridge import __version__
from inferbridge.dataplane.streaming import iterate_on_thread
from inferbridge.dataplane.validation import validate_inputs, validate_requested_outputs
from inferbridge.errors import (
    ConfigError,
    InferBridgeError,
    InferenceFailed,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    QueueFull,
    RepositoryNotModifiable,
    ServerNotReady,
)
from inferbridge.models.manager import ControlMode, ModelManager
from inferbridge.models.requests import parse_load_parameters, parse_unload_parameters
from inferbridge.models.served import ModelView, ServingVersion
from inferbridge.observability.logs import ANSWERED
from inferbridge.observability.stats import VersionStats, failure_reason
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.shared_memory import SharedMemoryRegistry
from inferbridge.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    OutputTensor,
    TensorSpec,
)
from inferbridge.repository.config import ModelConfig
from inferbridge.repository.repository import LoadedVersion
from inferbridge.repository.triton_view import config_document, triton_config

if TYPE_CHECKING:
    from inferbridge.observability.tracing import Tracing
    from inferbridge.protocol.generated.model_config_pb2 import ModelConfig as TritonConfig
    from inferbridge.release.controller import RolloutController
    from inferbridge.release.router import Route

__all__ = [
    "EXTENSIONS",
    "DataPlane",
    "ModelMetadata",
    "RepositoryEntry",
    "ServerMetadata",
    "VersionReport",
]

logger = logging.getLogger(__name__)

#: Triton's extensions this server serves, as server metadata lists them (each is probed by
#: tests/integration/test_triton_compat.py): `schedule_policy` is the `priority` and
#: `timeout` request parameters; `model_repository(unload_dependents)` the unload parameter.
EXTENSIONS = (
    "binary_tensor_data",
    "model_repository",
    "model_repository(unload_dependents)",
    "model_configuration",  # GET /v2/models/{m}/config and ModelConfig: Triton's shape
    "schedule_policy",
    "statistics",
    "system_shared_memory",
    "logging",
    "trace",
)
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


@dataclass(frozen=True, slots=True)
class VersionReport:
    """One model version as the metrics collector reads it."""

    model: str
    version: str
    state: str  # loading, ready, unavailable, draining
    stats: VersionStats | None
    queued: int
    inflight: int


#: Returns the current trace context (when tracing is on), handed to the scheduler.
TraceContext = Callable[[], object]


class DataPlane:
    """Everything the front ends call. It knows nothing about HTTP or gRPC."""

    def __init__(
        self,
        manager: ModelManager | None = None,
        *,
        strict_readiness: bool = False,
        control_mode: ControlMode = ControlMode.NONE,
        trace_context: TraceContext | None = None,
        tracing: Tracing | None = None,
        report_answers: bool = False,
    ) -> None:
        self.models = manager if manager is not None else ModelManager(None)
        self._views = self.models.views  # read once per request; the manager swaps entries
        self._strict_readiness = strict_readiness
        self.control_mode = control_mode
        #: The server's tracing, when on: the front ends wrap themselves with it.
        self.tracing = tracing
        if trace_context is None and tracing is not None:
            trace_context = tracing.request_context
        self._trace_context = trace_context
        # The access log wants the version and trace that answered each request.
        self._report_answers = report_answers
        self._loaded = manager is None
        self.draining = False
        #: Registered system shared-memory regions (both front ends read and write them).
        self.shared_memory = SharedMemoryRegistry()
        #: Models under a rollout: which version each unversioned request goes to. The
        #: rollout controller swaps whole entries; requests read one per call.
        self.routes: dict[str, Route] = {}
        #: The rollout controller, when the server runs one (the REST API reaches it here).
        self.release: RolloutController | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def mark_loaded(self) -> None:
        """The start-up load has finished: readiness may turn true."""
        self._loaded = True

    async def shutdown(self) -> None:
        await self.models.shutdown()
        self.shared_memory.close()

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
        for view in self._views.values():
            if not view.versions and view.error:
                errors[view.name] = view.error
            for number, failed in view.failed.items():
                errors[f"{view.name}/{number}"] = failed.reason
            for number, serving in view.versions.items():
                # An isolated runtime that gave up after a crash loop stays down until a
                # reload: a failure like a failed load (a restart in progress is not).
                down = serving.unavailable_reason
                if down.startswith("crash loop"):
                    errors[f"{view.name}/{number}"] = down
        return errors

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, EXTENSIONS, self.model_errors())

    def model_names(self) -> list[str]:
        return sorted(self._views)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        view = self._view(name)
        if view.draining:
            return False
        if version is None or version == "":
            return view.default is not None and not view.default.unavailable_reason
        number = _version_number(view, version)
        if number in view.failed and number not in view.versions:
            return False
        return not self._find(name, version).unavailable_reason  # e.g. a worker restarting

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        found = self._find(name, version).loaded
        view = self._views[name]
        versions = [str(n) for n in sorted(view.versions)]
        return ModelMetadata(name, versions, found.platform, found.inputs, found.outputs)

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Triton's ModelConfig JSON of the model (or version), our config under
        `inferbridge`: what `GET /v2/models/{m}/config` answers."""
        config, _ = self._config_of(name, version)
        return config_document(self.model_config_message(name, version), config)

    def model_config_message(self, name: str, version: str | None = None) -> TritonConfig:
        """Triton's ModelConfig message (model_config_pb2) of the model, for gRPC."""
        config, loaded = self._config_of(name, version)
        return triton_config(name, config, loaded)

    def model_settings(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Our own config of the model (config.yaml's schema, as JSON values)."""
        return self._config_of(name, version)[0].model_dump(mode="json")

    def _config_of(
        self, name: str, version: str | None
    ) -> tuple[ModelConfig, LoadedVersion | None]:
        view = self._view(name)
        config = view.config
        loaded = view.default.loaded if view.default is not None else None
        if version not in (None, ""):
            loaded = self._find(name, version).loaded
            config = loaded.config
        if config is None:
            raise ModelNotReady(f"model '{name}' is not ready: {view.error}")
        return config, loaded

    # -- model control ---------------------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        return [
            RepositoryEntry(e.name, e.version, e.state, e.reason)
            for e in self.models.index(ready_only)
        ]

    async def load_model(
        self, name: str, parameters: Mapping[str, Any], *, base64_files: bool
    ) -> None:
        """Triton's RepositoryModelLoad: (re)load `name`, optionally with a config override
        and files sent in the request; returns once the new versions serve."""
        self._check_modifiable("load")
        try:
            request = parse_load_parameters(parameters, base64_files=base64_files, model=name)
            await self.models.load(
                name, request if request.overrides else None, reason="load API"
            )
        except (InvalidInput, ModelNotFound, ModelLoadError, ConfigError) as error:
            # Triton's phrase, which its clients and examples match on; the reason follows.
            error.message = f"failed to load '{name}': {error.message}"
            raise

    async def unload_model(self, name: str, parameters: Mapping[str, Any]) -> None:
        """Triton's RepositoryModelUnload: drain and unload `name` (and, with
        `unload_dependents`, the pipelines that use it)."""
        self._check_modifiable("unload")
        dependents = parse_unload_parameters(parameters)
        await self.models.unload(name, reason="unload API", unload_dependents=dependents)

    def _check_modifiable(self, action: str) -> None:
        if self.control_mode is not ControlMode.EXPLICIT:
            how = (
                "changes come from the repository directory"
                if self.control_mode is ControlMode.POLL
                else "models are loaded once at start-up"
            )
            # Triton's phrase first (its clients and QA match it), ours after.
            raise RepositoryNotModifiable(
                "explicit model load / unload is not allowed if polling is enabled: "
                f"cannot {action} models: the repository is not modifiable in model control "
                f"mode '{self.control_mode.value}' ({how}); start the server with "
                "--model-control-mode explicit to load and unload through the API"
            )

    # -- statistics and metrics ------------------------------------------------------------

    def model_statistics(
        self, name: str | None = None, version: str | None = None
    ) -> list[dict[str, Any]]:
        """Triton's statistics extension: one document per served version (all models when
        `name` is empty)."""
        if not name:
            return [
                s.stats.to_json(view.name, str(n))
                for view in sorted(self._views.values(), key=lambda v: v.name)
                for n, s in sorted(view.versions.items())
            ]
        view = self._view(name)
        if version not in (None, ""):
            serving = self._find(name, version)
            return [serving.stats.to_json(name, str(serving.number))]
        return [s.stats.to_json(name, str(n)) for n, s in sorted(view.versions.items())]

    def version_reports(self) -> Iterator[VersionReport]:
        """Every known model version with its state, for the metrics collector."""
        for entry in self.models.index():
            view = self._views.get(entry.name)
            serving = None
            if view is not None and entry.version.isdigit():
                serving = view.versions.get(int(entry.version))
            state = _METRIC_STATES.get(entry.state, "unavailable")
            yield VersionReport(
                entry.name,
                entry.version,
                state,
                serving.stats if serving is not None else None,
                serving.scheduler.queued if serving is not None else 0,
                serving.inflight if serving is not None else 0,
            )

    # -- inference -------------------------------------------------------------------------

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        if self.draining:
            raise ServerNotReady("the server is shutting down")
        route = self.routes.get(request.model_name) if not request.model_version else None
        if route is None:
            serving = self._find(request.model_name, request.model_version)
        else:
            serving = self._routed(request, route)
        version = serving.loaded
        if version.runtime is not None and version.runtime.decoupled:
            raise InvalidInput(
                f"model '{version.model}' is decoupled (it may answer a request with several "
                "responses): infer it with gRPC ModelStreamInfer; ModelInfer and the HTTP "
                "endpoint don't support models with decoupled transaction policy"
            )
        start = time.monotonic()
        serving.inflight += 1
        try:
            inputs = validate_inputs(request, version.inputs, _max_batch(version))
            validate_requested_outputs(request, version.outputs)
            trace = self._trace_context() if self._trace_context is not None else None
            if self._report_answers:
                _report_answer(version, trace)
            outputs = await serving.scheduler.submit(
                inputs,
                deadline=self._deadline(request, version),
                priority=_int_parameter(request, "priority"),
                caller_gone=request.caller_gone,
                trace=trace,
            )
            response = self._response(request, version, outputs)
        except InferBridgeError as error:
            serving.stats.request_failed(time.monotonic() - start, failure_reason(error))
            raise
        except asyncio.CancelledError:
            serving.stats.request_failed(time.monotonic() - start, "canceled")
            raise
        except Exception:
            serving.stats.request_failed(time.monotonic() - start, "backend")
            raise
        else:
            serving.stats.request_succeeded(time.monotonic() - start)
            if route is not None and route.shadow is not None and serving.number != route.candidate:
                view = self._views.get(request.model_name)
                candidate = view.versions.get(route.candidate) if view is not None else None
                route.shadow.offer(candidate, inputs, outputs)
            return response
        finally:
            serving.leave()

    def decoupled(self, name: str, version: str | None = None) -> bool:
        """Whether the version a request names is served by a decoupled runtime (False when
        it names none that serves: infer reports why)."""
        try:
            runtime = self._find(name, version).loaded.runtime
        except InferBridgeError:
            return False
        return runtime is not None and runtime.decoupled

    async def infer_stream(
        self, request: InferenceRequest
    ) -> AsyncGenerator[InferenceResponse, None]:
        """The responses to one request, for a stream: a decoupled model's as its runtime
        yields them (on a worker thread, unbatched; the next is produced only once the
        previous one is taken), any other model's one response from `infer`."""
        if self.draining:
            raise ServerNotReady("the server is shutting down")
        route = self.routes.get(request.model_name) if not request.model_version else None
        if route is None:
            serving = self._find(request.model_name, request.model_version)
        else:
            serving = self._routed(request, route)
        version = serving.loaded
        runtime = version.runtime
        if runtime is None or not runtime.decoupled:
            yield await self.infer(request)
            return
        _admit_decoupled(serving)
        start = time.monotonic()
        serving.inflight += 1
        try:
            inputs = validate_inputs(request, version.inputs, _max_batch(version))
            validate_requested_outputs(request, version.outputs)
            # aclosing: a consumer that stops early stops the runtime's iterator at once.
            async with contextlib.aclosing(
                iterate_on_thread(runtime.infer_stream(inputs))
            ) as items:
                async for outputs in items:
                    yield self._response(request, version, outputs)
        except InferBridgeError as error:
            serving.stats.request_failed(time.monotonic() - start, failure_reason(error))
            raise
        except (asyncio.CancelledError, GeneratorExit):
            serving.stats.request_failed(time.monotonic() - start, "canceled")
            raise
        except Exception as exc:
            serving.stats.request_failed(time.monotonic() - start, "backend")
            raise InferenceFailed(f"model '{version.model}': {exc}") from exc
        else:
            serving.stats.request_succeeded(time.monotonic() - start)
        finally:
            serving.leave()

    def check_admission(self, name: str, version: str | None = None) -> None:
        """Refuse early, before the request is decoded: a model (or version) this server does
        not have raises ModelNotFound, the error infer() would give, so that a request for it
        is answered 404 whatever its body holds; a full queue raises QueueFull. Unready
        models, routed names and a draining server pass here and get their error from
        infer()."""
        if self.draining:
            return  # infer() says the server is shutting down, for every model
        try:
            serving = self._find(name, version)
        except ModelNotFound:
            if not version and name in self.routes:
                return  # a rollout's name: infer() resolves it to its targets
            raise
        except InferBridgeError:
            return
        try:
            serving.scheduler.check_admission()
        except QueueFull:
            serving.stats.request_failed(0.0, "rejected")
            raise

    def admission_bounds(self) -> dict[str, int]:
        """Per model whose versions all have a bounded queue: the sum over its versions of
        `max_queue_size` plus one per instance, the most requests a front end should let
        reach it at once (queued or running) so that it never has to refuse one itself.

        With batching, an instance runs up to max_batch_size requests besides the queue, so
        the model could hold more; counting one per instance stops short of that on purpose:
        refusing costs the event loop up to half a served request, and a shorter queue waits
        less."""
        bounds: dict[str, int] = {}
        for name, view in self._views.items():
            total = 0
            for serving in view.versions.values():
                queue = serving.scheduler.policy.max_queue_size
                if queue <= 0:
                    break
                total += queue + serving.scheduler.instances
            else:
                if view.versions:
                    bounds[name] = total
        return bounds

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

    def _view(self, name: str) -> ModelView:
        view = self._views.get(name)
        if view is None:
            raise _unknown_model(name)
        return view

    def _routed(self, request: InferenceRequest, route: Route) -> ServingVersion:
        """The version a rollout's route picks for an unversioned request (the default if
        that version is not serving: a route never makes a request fail)."""
        view = self._views.get(request.model_name)
        if view is not None and not view.draining:
            serving = view.versions.get(route.pick(request))
            if serving is not None and not serving.draining:
                return serving
        return self._find(request.model_name, None)

    def _find(self, name: str, version: str | None) -> ServingVersion:
        view = self._views.get(name)
        if view is None:
            raise _unknown_model(name)
        if view.draining:
            raise ModelNotReady(f"model '{name}' is unloading")
        if version is None or version == "":
            found = view.default
            if found is None:
                raise ModelNotReady(f"model '{name}' is not ready: {view.error}")
            return found
        number = _version_number(view, version)
        serving = view.versions.get(number)
        if serving is None:
            failed = view.failed.get(number)
            if failed is not None:
                raise ModelNotReady(f"model '{name}' is not ready: {failed.reason}")
            raise _unknown_version(view, version)
        return serving


_METRIC_STATES = {
    "READY": "ready",
    "LOADING": "loading",
    "UNLOADING": "draining",
    "UNAVAILABLE": "unavailable",
}


def _version_number(view: ModelView, version: str) -> int:
    if not version.isdigit():
        raise _unknown_version(view, version)
    return int(version)


# Triton's wording: its clients and tests match on "Request for unknown model".
def _admit_decoupled(serving: ServingVersion) -> None:
    """A decoupled request runs at once on a worker thread, never in the scheduler's queue,
    so it is admitted here against the bound admission_bounds gives a queued model:
    max_queue_size plus one per instance, at once (QueueFull beyond it)."""
    queue = serving.scheduler.policy.max_queue_size
    if queue > 0 and serving.inflight >= queue + serving.scheduler.instances:
        serving.stats.request_failed(0.0, "rejected")
        raise QueueFull(
            f"model '{serving.loaded.model}': queue is full ({serving.inflight} requests "
            f"running, max_queue_size {queue}); retry later"
        )


def _unknown_model(name: str) -> ModelNotFound:
    return ModelNotFound(f"Request for unknown model: '{name}' is not found")


def _unknown_version(view: ModelView, version: str) -> ModelNotFound:
    served = ", ".join(str(v) for v in sorted(view.versions)) or "none"
    return ModelNotFound(
        f"Request for unknown model: '{view.name}' version {version} is not found: "
        f"the model has no version '{version}' (versions served: {served})"
    )


def _report_answer(version: LoadedVersion, trace: object) -> None:
    trace_id = getattr(trace, "trace_id", 0)
    ANSWERED.set((str(version.version), f"{trace_id:032x}" if trace_id else ""))


def _int_parameter(request: InferenceRequest, name: str) -> int:
    value = request.parameters.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"parameter '{name}' must be a non-negative integer, got {value!r}")
    return value


def _max_batch(version: LoadedVersion) -> int:
    return version.config.max_batch_size if version.config is not None else 0
