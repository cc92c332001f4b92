"""Tracing in-process: configuration, the ASGI and RPC server spans, and the batch observer
(against an in-memory exporter; the OTLP export itself is tested in tests/integration)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)

from inferbridge.batching.scheduler import BatchTiming
from inferbridge.observability.tracing import (
    Tracing,
    TracingError,
    configure_tracing,
    http_route,
    otlp_endpoint,
    tracing_requested,
)
from inferbridge.settings import Settings

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[Tracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider)
    provider.shutdown()


def _by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


# -- configuration ---------------------------------------------------------------------------


def test_off_by_default_and_explicit_off_beats_the_environment() -> None:
    assert not tracing_requested(Settings(), {})
    assert tracing_requested(Settings(), {"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing_requested(Settings(), {"OTEL_TRACES_EXPORTER": "console, otlp"})
    assert not tracing_requested(Settings(), {"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing_requested(
        Settings(), {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing_requested(Settings(trace_mode="off"), {"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing_requested(Settings(trace_mode="opentelemetry"), {})
    assert configure_tracing(Settings(), {}) is None


def test_off_imports_no_opentelemetry() -> None:
    code = (
        "import sys; from inferbridge.server import InferBridgeServer; "
        "from inferbridge.observability.tracing import configure_tracing; "
        "from inferbridge.settings import Settings; "
        "assert configure_tracing(Settings(), {}) is None; "
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_missing_extra_fails_start_up_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(TracingError, match=r"pip install 'inferbridge\[tracing\]'"):
        configure_tracing(Settings(trace_mode="opentelemetry"), {})


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(TracingError, match="http/json"):
        configure_tracing(
            Settings(trace_mode="opentelemetry"), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
        )


@pytest.mark.parametrize(
    ("endpoint", "protocol", "expected"),
    [
        (None, "grpc", None),
        ("127.0.0.1:4317", "grpc", "http://127.0.0.1:4317"),
        ("https://collector:4317", "grpc", "https://collector:4317"),
        ("127.0.0.1:4318", "http/protobuf", "http://127.0.0.1:4318/v1/traces"),
        ("http://c:4318/", "http/protobuf", "http://c:4318/v1/traces"),
        ("http://c:4318/custom/path", "http/protobuf", "http://c:4318/custom/path"),
    ],
)
def test_endpoints(endpoint: str | None, protocol: str, expected: str | None) -> None:
    assert otlp_endpoint(endpoint, protocol) == expected


def test_the_provider_samples_by_rate_and_names_the_service() -> None:
    tracing = configure_tracing(
        Settings(trace_mode="opentelemetry", trace_rate=0.25, trace_endpoint="127.0.0.1:1"), {}
    )
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes["service.name"] == "inferbridge"
        description = tracing.provider.sampler.get_description()
        assert "ParentBased" in description and "0.25" in description
    finally:
        tracing.shutdown()


def test_otel_service_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "models-eu")
    tracing = configure_tracing(Settings(), {"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes["service.name"] == "models-eu"
    finally:
        tracing.shutdown()


# -- routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "route", "model"),
    [
        ("/v2/models/iris/infer", "/v2/models/{model}/infer", "iris"),
        ("/v2/models/iris/versions/2/infer", "/v2/models/{model}/versions/{version}/infer", "iris"),
        ("/v2/models/iris", "/v2/models/{model}", "iris"),
        ("/v2/models/iris/ready/", "/v2/models/{model}/ready", "iris"),
        ("/v2/models/stats", "/v2/models/stats", None),
        ("/v2/health/ready", "/v2/health/ready", None),
        ("/v2", "/v2", None),
        ("/v2/repository/models/iris/load", "/v2/repository/models/{model}/load", "iris"),
        ("/v1/models/iris:predict", "/v1/models/{model}:predict", "iris"),
        ("/predict", "/predict", None),
        ("/v1/vision/faces", "/v1/vision/{service}", None),
        ("/v1/vision/faces/extra", None, None),
        ("/metrics", "/metrics", None),
        ("/v2/models/iris/nope", None, None),
        ("/", None, None),
    ],
)
def test_http_route(path: str, route: str | None, model: str | None) -> None:
    assert http_route(path) == (route, model)


# -- REST ------------------------------------------------------------------------------------


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "scheme": "http",
        "http_version": "1.1",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "server": None,
    }


async def _call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_the_rest_span_continues_traceparent_and_is_current_in_the_app(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    seen: list[object] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(tracing.request_context())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent = await _call(
        tracing.asgi(app),
        _scope("/v2/models/iris/infer", [(b"traceparent", TRACEPARENT.encode())]),
    )
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    (span,) = exporter.get_finished_spans()
    assert span.name == "POST /v2/models/{model}/infer"
    assert span.kind is SpanKind.SERVER
    assert span.context is not None and span.context.trace_id == TRACE_ID
    assert span.parent is not None and span.parent.span_id == PARENT_ID
    assert span.parent.is_remote
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST",
        "url.path": "/v2/models/iris/infer",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "http.route": "/v2/models/{model}/infer",
        "inferbridge.model.name": "iris",
        "http.response.status_code": 200,
    }
    assert seen == [span.context]
    assert span.status.status_code is StatusCode.UNSET


async def test_a_5xx_is_an_error_a_4xx_is_not_and_unknown_paths_keep_one_name(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        status = 500 if scope["path"].endswith("infer") else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    traced = tracing.asgi(app)
    await _call(traced, _scope("/v2/models/iris/infer", []))
    await _call(traced, _scope("/no/such/thing", []))
    failed, missing = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "500"
    assert failed.parent is None  # no traceparent: a new trace
    assert missing.name == "POST"
    assert "http.route" not in (missing.attributes or {})
    assert missing.status.status_code is StatusCode.UNSET


async def test_an_unsampled_parent_is_respected(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    seen: list[object] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(tracing.request_context())
        await send({"type": "http.response.start", "status": 200, "headers": []})

    unsampled = TRACEPARENT[:-2] + "00"
    await _call(
        tracing.asgi(app), _scope("/v2/health/ready", [(b"traceparent", unsampled.encode())])
    )
    assert exporter.get_finished_spans() == ()
    assert seen == [None]


async def test_non_http_scopes_pass_through(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])

    await tracing.asgi(app)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert calls == ["lifespan"]
    assert exporter.get_finished_spans() == ()


# -- gRPC ------------------------------------------------------------------------------------


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self.code = code


class _Context:
    def __init__(self, metadata: list[tuple[str, str | bytes]]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> list[tuple[str, str | bytes]]:
        return self.metadata


def _rpc_table(handler: Any) -> Any:
    from tritonclient.grpc import service_pb2

    return {"/inference.GRPCInferenceService/ModelInfer": (handler, service_pb2.ModelInferRequest)}


async def test_the_rpc_span_continues_the_metadata_trace_and_records_the_status(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    from tritonclient.grpc import service_pb2

    seen: list[object] = []

    async def handler(request: Any, context: Any) -> str:
        seen.append(tracing.request_context())
        if request.id == "fail":
            raise _Aborted(grpc.StatusCode.INTERNAL)
        if request.id == "missing":
            raise _Aborted(grpc.StatusCode.NOT_FOUND)
        return "ok"

    ((_, (traced, _)),) = tracing.wrap_rpcs(_rpc_table(handler)).items()
    metadata: list[tuple[str, str | bytes]] = [
        ("traceparent", TRACEPARENT),
        ("x-bin", b"\x00"),
    ]
    request = service_pb2.ModelInferRequest(model_name="iris", model_version="1")
    assert await traced(request, _Context(metadata)) == "ok"
    for failing in ("fail", "missing"):
        with pytest.raises(_Aborted):
            await traced(service_pb2.ModelInferRequest(model_name="iris", id=failing), _Context([]))
    ok, failed, missing = exporter.get_finished_spans()
    assert ok.name == "inference.GRPCInferenceService/ModelInfer"
    assert ok.kind is SpanKind.SERVER
    assert ok.context is not None and ok.context.trace_id == TRACE_ID
    assert ok.parent is not None and ok.parent.span_id == PARENT_ID
    assert dict(ok.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer",
        "inferbridge.model.name": "iris",
        "inferbridge.model.version": "1",
        "rpc.grpc.status_code": 0,
    }
    assert seen[0] == ok.context
    assert (failed.attributes or {})["rpc.grpc.status_code"] == 13
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.parent is None
    assert (missing.attributes or {})["rpc.grpc.status_code"] == 5
    assert missing.status.status_code is StatusCode.UNSET


async def test_a_grpc_aio_abort_reads_its_code_from_the_context(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    class AioContext(_Context):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

    async def handler(request: Any, context: Any) -> str:
        raise grpc.aio.AbortError()

    ((_, (traced, request_type)),) = tracing.wrap_rpcs(_rpc_table(handler)).items()
    with pytest.raises(grpc.aio.AbortError):
        await traced(request_type(), AioContext([]))
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["rpc.grpc.status_code"] == 14


async def test_a_cancelled_rpc_is_cancelled(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    async def handler(request: Any, context: Any) -> str:
        await asyncio.sleep(10)
        return "late"

    ((_, (traced, request_type)),) = tracing.wrap_rpcs(_rpc_table(handler)).items()
    task = asyncio.ensure_future(traced(request_type(), _Context([])))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["rpc.grpc.status_code"] == 1


# -- batches ---------------------------------------------------------------------------------


def _request_span(tracing: Tracing, name: str) -> Any:
    return tracing.tracer.start_span(name, context=Context(), kind=SpanKind.SERVER)


def test_a_batch_gives_queue_spans_and_a_linked_batch_span(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    first, second = _request_span(tracing, "first"), _request_span(tracing, "second")
    timing = BatchTiming(
        rows=5,
        queue_waits=[0.002, 0.001, 0.0],
        traces=[first.get_span_context(), None, second.get_span_context()],
        started=100.0,
        joined=100.001,
        ran=100.004,
        ended=100.005,
        failed=False,
    )
    observe = tracing.batch_observer("iris", 3)
    observe(timing)
    first.end()
    second.end()
    spans = exporter.get_finished_spans()
    queues = [s for s in spans if s.name == "queue"]
    assert [q.parent.span_id for q in queues if q.parent] == [
        first.get_span_context().span_id,
        second.get_span_context().span_id,
    ]
    assert [q.context.trace_id for q in queues if q.context] == [
        first.get_span_context().trace_id,
        second.get_span_context().trace_id,
    ]
    queue = queues[0]
    assert queue.end_time is not None and queue.start_time is not None
    assert queue.end_time - queue.start_time == 2_000_000
    named = _by_name(spans)
    batch = named["batch"]
    assert batch.parent is not None and batch.parent.span_id == first.get_span_context().span_id
    assert [link.context.span_id for link in batch.links] == [
        first.get_span_context().span_id,
        second.get_span_context().span_id,
    ]
    assert dict(batch.attributes or {}) == {
        "inferbridge.model.name": "iris",
        "inferbridge.model.version": "3",
        "inferbridge.batch.rows": 5,
        "inferbridge.batch.requests": 3,
    }
    assert batch.start_time == queue.end_time
    assert batch.status.status_code is StatusCode.UNSET
    assert batch.end_time is not None and batch.start_time is not None
    assert batch.end_time - batch.start_time == pytest.approx(5_000_000, abs=2)
    phases = [named[n] for n in ("compute_input", "compute_infer", "compute_output")]
    for phase in phases:
        assert phase.parent is not None and phase.parent.span_id == batch.context.span_id  # type: ignore[union-attr]
    assert phases[0].start_time == batch.start_time
    assert phases[2].end_time == batch.end_time
    assert phases[0].end_time == phases[1].start_time
    assert phases[1].end_time == phases[2].start_time


def test_a_failed_batch_is_an_error_and_an_untraced_batch_makes_nothing(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    observe = tracing.batch_observer("iris", 1)
    observe(BatchTiming(1, [0.0], [None], 1.0, 1.0, 2.0, 2.0, False))
    assert exporter.get_finished_spans() == ()
    request = _request_span(tracing, "r")
    observe(BatchTiming(1, [0.0], [request.get_span_context()], 1.0, 1.0, 2.0, 2.0, True))
    batch = _by_name(exporter.get_finished_spans())["batch"]
    assert batch.status.status_code is StatusCode.ERROR


def test_request_context_is_none_outside_a_sampled_span(tracing: Tracing) -> None:
    assert tracing.request_context() is None
    unsampled = SpanContext(TRACE_ID, PARENT_ID, is_remote=True, trace_flags=TraceFlags(0))
    from opentelemetry import context as otel_context

    token = otel_context.attach(set_span_in_context(NonRecordingSpan(unsampled)))
    try:
        assert get_current_span().get_span_context() == unsampled
        assert tracing.request_context() is None
    finally:
        otel_context.detach(token)


async def test_at_rate_zero_only_callers_with_a_trace_context_get_spans(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, new_traces=False)
    answered: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        answered.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def handler(request: Any, context: Any) -> str:
        return "ok"

    traced_app = tracing.asgi(app)
    await _call(traced_app, _scope("/v2/models/iris/infer", []))
    ((_, (rpc, request_type)),) = tracing.wrap_rpcs(_rpc_table(handler)).items()
    assert await rpc(request_type(), _Context([])) == "ok"
    assert exporter.get_finished_spans() == ()
    await _call(
        traced_app, _scope("/v2/models/iris/infer", [(b"traceparent", TRACEPARENT.encode())])
    )
    assert await rpc(request_type(), _Context([("traceparent", TRACEPARENT)])) == "ok"
    assert [s.name for s in exporter.get_finished_spans()] == [
        "POST /v2/models/{model}/infer",
        "inference.GRPCInferenceService/ModelInfer",
    ]
    assert answered == ["/v2/models/iris/infer"] * 2
    provider.shutdown()
