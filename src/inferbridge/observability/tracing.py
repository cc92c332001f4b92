"""OpenTelemetry traces: a server span per request (REST and gRPC), and per executed batch a
`queue` span for each traced request and one `batch` span with its compute phases.

Off by default, and then nothing is installed anywhere: no ASGI wrapper, no RPC wrapper, no
batch observer, and OpenTelemetry is never imported. On, `configure_tracing` builds its own
TracerProvider (never the global one) and everything else is a closure over its tracer.

Spans, as a trace viewer shows them:

    POST /v2/models/{model}/infer          (server; or inference.GRPCInferenceService/ModelInfer)
    ├── queue                              from the request's arrival to its batch's start
    └── batch                              child of the batch's FIRST traced request, with a
        ├── compute_input                  link to every traced request span it served
        ├── compute_infer
        └── compute_output

The batch span is parented to its first request rather than being a trace of its own so that
it is sampled with that request (ParentBased) and shows up inside a request's trace; the links
lead from it to every other request it served.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from inferbridge import __version__
from inferbridge.observability import frontend
from inferbridge.observability.trace_settings import TraceSettings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

    from inferbridge.batching.scheduler import BatchObserver, BatchTiming
    from inferbridge.frontends.grpc.servicers import MethodTable
    from inferbridge.settings import Settings

__all__ = ["Tracing", "TracingError", "configure_tracing", "http_route", "tracing_requested"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Attribute names of our own (no semantic convention covers an inference server's model).
MODEL = "inferbridge.model.name"
VERSION = "inferbridge.model.version"

_HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
# gRPC codes that make a server span an error (OpenTelemetry's RPC conventions).
_GRPC_SERVER_ERRORS = frozenset((2, 4, 12, 13, 14, 15))
_GRPC_CANCELLED = 1
_DEFAULT_MAX_LINKS = 1024  # a batch links to each of its requests (the SDK's default is 128)


class TracingError(RuntimeError):
    """Tracing was asked for but cannot start (the `tracing` extra is missing, or a setting
    is unusable); the message says what to do."""


def tracing_requested(settings: Settings, environ: Mapping[str, str] = os.environ) -> bool:
    """`--trace-mode opentelemetry`, or OTEL_TRACES_EXPORTER naming otlp unless the trace
    mode was set to off explicitly (or OTEL_SDK_DISABLED=true)."""
    if settings.trace_mode == "opentelemetry":
        return True
    if "trace_mode" in settings.model_fields_set:
        return False
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "")
    return "otlp" in (e.strip().lower() for e in exporters.split(","))


def configure_tracing(
    settings: Settings, environ: Mapping[str, str] = os.environ
) -> Tracing | None:
    """The server's tracing, or None when it is off (then OpenTelemetry is not imported)."""
    if not tracing_requested(settings, environ):
        return None
    protocol = (
        settings.trace_protocol
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if protocol not in ("grpc", "http/protobuf"):
        raise TracingError(
            f"OTLP protocol '{protocol}' is not supported; use grpc or http/protobuf"
        )
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBased

        exporter: SpanExporter
        endpoint = otlp_endpoint(settings.trace_endpoint, protocol)
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as OTLPHttpSpanExporter,
            )

            exporter = OTLPHttpSpanExporter(endpoint=endpoint)
    except ImportError as exc:
        raise TracingError(
            "tracing was requested (--trace-mode opentelemetry or OTEL_TRACES_EXPORTER=otlp) "
            f"but OpenTelemetry is not installed ({exc.name or exc}); install the extra: "
            "pip install 'inferbridge[tracing]'"
        ) from exc
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "inferbridge"}))
    limits = SpanLimits(
        max_links=None if "OTEL_SPAN_LINK_COUNT_LIMIT" in environ else _DEFAULT_MAX_LINKS
    )
    trace_settings = TraceSettings(settings.trace_rate)
    provider = TracerProvider(
        sampler=ParentBased(_runtime_sampler(trace_settings)),
        resource=resource,
        span_limits=limits,
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, settings=trace_settings)


def _runtime_sampler(settings: TraceSettings) -> Any:
    """The root sampler: a trace-id ratio (as TraceIdRatioBased) that follows the trace
    settings at run time, per model (the span's model attribute) or globally."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import get_current_span

    class RuntimeSampler(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            model = attributes.get(MODEL) if attributes else None
            sampled = settings.sample(model if isinstance(model, str) else None, trace_id)
            return SamplingResult(
                Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP,
                attributes if sampled else None,
                get_current_span(parent_context).get_span_context().trace_state,
            )

        def get_description(self) -> str:
            return f"TraceSettings{{ratio={settings.ratio:g}}}"

    return RuntimeSampler()


def otlp_endpoint(endpoint: str | None, protocol: str) -> str | None:
    """`--trace-endpoint` as the exporter wants it: a scheme (http:// when none is given, so a
    bare host:port is a plaintext connection) and, for http/protobuf, the /v1/traces path
    when the URL has none. None leaves the choice to the OTEL_EXPORTER_OTLP_* variables."""
    if not endpoint:
        return None
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    if protocol == "http/protobuf" and urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return endpoint


class Tracing:
    """Spans for one server, all from one TracerProvider."""

    def __init__(
        self,
        provider: TracerProvider,
        *,
        new_traces: bool = True,
        settings: TraceSettings | None = None,
    ) -> None:
        """`new_traces` False (a rate of 0): only requests whose caller sent a trace context
        get a span; the others pass straight through, with no sampling decision to make.
        `settings`: the run-time trace settings that the provider's sampler follows (their
        `new_traces` then decides the pass-through)."""
        from opentelemetry import propagate
        from opentelemetry.context import Context

        self.provider = provider
        if settings is None:
            settings = TraceSettings(1.0 if new_traces else 0.0)
        self.settings = settings
        self.tracer = provider.get_tracer("inferbridge", __version__)
        self._propagator = propagate.get_global_textmap()  # W3C tracecontext and baggage
        self._fields = frozenset(self._propagator.fields)
        self._empty = Context()
        # time.monotonic() seconds (the scheduler's clock) -> wall-clock ns, one offset.
        self._offset_ns = time.time_ns() - int(time.monotonic() * 1e9)

    def shutdown(self) -> None:
        """Export what is buffered and stop (blocks up to the exporter's timeout)."""
        self.provider.shutdown()

    # -- the dataplane's hook --------------------------------------------------------------

    def request_context(self) -> object:
        """The current request span's context if it is sampled (the scheduler hands it back
        with the batch); None otherwise, so unsampled requests cost the batch nothing."""
        from opentelemetry.trace import get_current_span

        context = get_current_span().get_span_context()
        return context if context.trace_flags.sampled else None

    def _parent(self, carrier: dict[str, str]) -> Context:
        """The caller's context (traceparent, tracestate, baggage), or a fresh root."""
        if not carrier:
            return self._empty
        return self._propagator.extract(carrier, context=self._empty)

    # -- REST ------------------------------------------------------------------------------

    def asgi(self, app: ASGIApp) -> ASGIApp:
        """`app` with an HTTP server span around each request (OpenTelemetry's HTTP
        conventions); the span is the current context while the app runs."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        tracer = self.tracer
        fields = frozenset(f.encode("latin-1") for f in self._fields)
        parent_of = self._parent
        settings = self.settings

        async def traced(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            carrier: dict[str, str] = {}
            host = None
            for key, value in scope["headers"]:
                if key in fields:
                    carrier[key.decode("latin-1")] = value.decode("latin-1")
                elif key == b"host":
                    host = value.decode("latin-1")
            if not carrier and not settings.new_traces:
                await app(scope, receive, send)
                return
            method: str = scope["method"]
            path: str = scope["path"]
            route, model = http_route(path)
            attributes: dict[str, Any] = {
                "http.request.method": method if method in _HTTP_METHODS else "_OTHER",
                "url.path": path,
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", "1.1"),
            }
            if method not in _HTTP_METHODS:
                attributes["http.request.method_original"] = method
            _server_address(attributes, scope.get("server"), host)
            if route is not None:
                attributes["http.route"] = route
            if model is not None:
                attributes[MODEL] = model
            name = method if method in _HTTP_METHODS else "HTTP"
            if route is not None:
                name = f"{name} {route}"
            status: list[int] = []

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                await send(message)

            with tracer.start_as_current_span(
                name,
                context=parent_of(carrier),
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    await app(scope, receive, send_status)
                except asyncio.CancelledError:
                    raise  # the client went away: no status, not a server error
                except Exception as exc:
                    span.record_exception(exc)
                    span.set_attribute("error.type", type(exc).__qualname__)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    raise
                if status:
                    code = status[0]
                    span.set_attribute("http.response.status_code", code)
                    if code >= 500:
                        span.set_attribute("error.type", str(code))
                        span.set_status(Status(StatusCode.ERROR))

        return traced

    # -- gRPC ------------------------------------------------------------------------------

    def wrap_rpcs(self, table: MethodTable) -> MethodTable:
        """Every RPC of `table` with a gRPC server span around it (OpenTelemetry's RPC
        conventions), continuing the trace in the call's metadata."""
        return {
            path: (self._traced_rpc(path, handler, request_type), request_type)
            for path, (handler, request_type) in table.items()
        }

    def _traced_rpc(
        self, path: str, handler: Callable[[Any, Any], Awaitable[Any]], request_type: type[Any]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        service, method = path[1:].split("/")
        base: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        names = request_type.DESCRIPTOR.fields_by_name
        model_field = next((f for f in ("model_name", "name") if f in names), None)
        if "SharedMemory" in method:
            model_field = None  # there `name` is a shared memory region's
        version_field = next((f for f in ("model_version", "version") if f in names), None)
        tracer = self.tracer
        fields = self._fields
        parent_of = self._parent
        settings = self.settings
        span_name = path[1:]

        async def traced(request: Any, context: Any) -> Any:
            carrier = _metadata_carrier(context, fields)
            if not carrier and not settings.new_traces:
                return await handler(request, context)
            attributes = dict(base)
            if model_field is not None:
                attributes[MODEL] = getattr(request, model_field)
                if version_field is not None and getattr(request, version_field):
                    attributes[VERSION] = getattr(request, version_field)
            with tracer.start_as_current_span(
                span_name,
                context=parent_of(carrier),
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                code = 0
                try:
                    return await handler(request, context)
                except asyncio.CancelledError:
                    code = _GRPC_CANCELLED
                    raise
                except BaseException as exc:
                    code = _abort_code(exc, context)
                    raise
                finally:
                    span.set_attribute("rpc.grpc.status_code", code)
                    if code in _GRPC_SERVER_ERRORS:
                        span.set_attribute("error.type", str(code))
                        span.set_status(Status(StatusCode.ERROR))

        return traced

    # -- batches ---------------------------------------------------------------------------

    def batch_observer(self, model: str, version: int) -> BatchObserver:
        """The scheduler's observer for one model version (`models.TracerFactory`): queue and
        batch spans for the traced requests of each batch; nothing for an untraced batch."""
        from opentelemetry.trace import (
            Link,
            NonRecordingSpan,
            SpanContext,
            Status,
            StatusCode,
            set_span_in_context,
        )

        tracer = self.tracer
        offset = self._offset_ns
        labels: dict[str, Any] = {MODEL: model, VERSION: str(version)}
        failed_status = Status(StatusCode.ERROR, "the batch failed")

        def ns(seconds: float) -> int:
            return int(seconds * 1e9) + offset

        def observe(batch: BatchTiming) -> None:
            traced = [
                (context, wait)
                for context, wait in zip(batch.traces, batch.queue_waits, strict=False)
                if isinstance(context, SpanContext)
            ]
            if not traced:
                return
            started = ns(batch.started)
            parents = [set_span_in_context(NonRecordingSpan(c)) for c, _ in traced]
            for parent, (_, wait) in zip(parents, traced, strict=True):
                queued = tracer.start_span(
                    "queue", context=parent, attributes=labels, start_time=started - int(wait * 1e9)
                )
                queued.end(end_time=started)
            span = tracer.start_span(
                "batch",
                context=parents[0],
                links=[Link(c) for c, _ in traced],
                attributes={
                    **labels,
                    "inferbridge.batch.rows": batch.rows,
                    "inferbridge.batch.requests": len(batch.traces),
                },
                start_time=started,
            )
            if batch.failed:
                span.set_status(failed_status)
            inside = set_span_in_context(span)
            for name, begin, end in _phases(batch):
                phase = tracer.start_span(name, context=inside, start_time=ns(begin))
                phase.end(end_time=ns(end))
            span.end(end_time=ns(batch.ended))

        return observe


def _phases(batch: BatchTiming) -> Iterable[tuple[str, float, float]]:
    yield "compute_input", batch.started, batch.joined
    yield "compute_infer", batch.joined, batch.ran
    yield "compute_output", batch.ran, batch.ended


def http_route(path: str) -> tuple[str | None, str | None]:
    """The REST app's route template for `path` and the model it names, e.g.
    ("/v2/models/{model}/infer", "iris"); (None, None) for a path no route serves (the span
    name is then the method alone, so unknown paths do not make new span names). The same
    templates as the front-end metrics' `route` label."""
    route = frontend.http_route(path)
    if route == "other":
        return None, None
    model, _ = frontend.path_model(path)
    return route, model or None


def _server_address(
    attributes: dict[str, Any], server: tuple[str, int | None] | None, host: str | None
) -> None:
    """server.address/port: the listening socket when the ASGI server names it, else the
    Host header (the gateway's scope has no socket)."""
    if server is not None:
        attributes["server.address"] = server[0]
        if server[1] is not None:
            attributes["server.port"] = server[1]
        return
    if not host:
        return
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and not name.endswith(":"):
        attributes["server.address"] = name.strip("[]")
        attributes["server.port"] = int(port)
    else:
        attributes["server.address"] = host


def _metadata_carrier(context: Any, fields: frozenset[str]) -> dict[str, str]:
    """The trace fields of a call's metadata: (key, value) pairs from invocation_metadata(),
    which grpc.aio's context and the gateway's have (a context without it starts a trace)."""
    invocation_metadata = getattr(context, "invocation_metadata", None)
    metadata = invocation_metadata() if invocation_metadata is not None else None
    if not metadata:
        return {}
    return {key: value for key, value in metadata if key in fields and isinstance(value, str)}


def _abort_code(exc: BaseException, context: Any) -> int:
    """The status an RPC ended with: the gateway's abort carries it; grpc.aio's context
    remembers it."""
    code = getattr(exc, "code", None)
    if code is None or callable(code):
        code = context.code() if callable(getattr(context, "code", None)) else None
    value = getattr(code, "value", None)
    if isinstance(value, tuple) and value and isinstance(value[0], int):
        return value[0]
    return 2  # UNKNOWN
