"""Traces from a real server to a small OTLP receiver on loopback: a known traceparent is
continued over REST and gRPC through both front ends (the Go gateway; uvicorn and grpc.aio),
queue spans hang under their request, batch spans link to every request they served, and
sampling follows --trace-rate and the caller's sampled flag.

Each server runs one round of requests, then stops: its shutdown flushes every span, so the
tests read a finished record and nothing waits on the exporter's schedule.
"""

from __future__ import annotations

import gzip
import http.server
import itertools
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

from tests.serverproc import start_server

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = "tests.support.runtimes:SleepEcho"
REST_SPAN = "POST /v2/models/{model}/infer"
GRPC_SPAN = "inference.GRPCInferenceService/ModelInfer"

_ids = itertools.count(1)


# -- the OTLP receivers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    service: str


def _value(value: common_pb2.AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which is not None else None


def _spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[Span]:
    spans = []
    for resource in request.resource_spans:
        attrs = {a.key: _value(a.value) for a in resource.resource.attributes}
        for scope in resource.scope_spans:
            for s in scope.spans:
                spans.append(
                    Span(
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(),
                        kind=s.kind,
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        service=str(attrs.get("service.name")),
                    )
                )
    return spans


@dataclass
class Receiver:
    """Collects every span exported to it; `endpoint` is what --trace-endpoint takes."""

    endpoint: str
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self.lock:
            self.spans.extend(_spans(request))


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.receiver.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def grpc_receiver() -> Iterator[Receiver]:
    """OTLP/gRPC, from opentelemetry-proto's service definition."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    port = server.add_insecure_port("127.0.0.1:0")
    receiver = Receiver(f"http://127.0.0.1:{port}")
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(receiver), server)
    server.start()
    yield receiver
    server.stop(0)


@pytest.fixture(scope="module")
def http_receiver() -> Iterator[Receiver]:
    """OTLP/HTTP: POST /v1/traces with a binary ExportTraceServiceRequest."""
    receiver = Receiver("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            encoding = self.headers.get("content-encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            assert self.path == "/v1/traces"
            assert self.headers["content-type"] == "application/x-protobuf"
            receiver.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.endpoint = f"127.0.0.1:{server.server_address[1]}"  # the /v1/traces is implied
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


# -- one round of requests -------------------------------------------------------------------


def _traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """A new caller context: (traceparent, trace id, parent span id)."""
    n = next(_ids)
    trace_id = f"{0x5EED0000 + n:032x}"
    parent_id = f"{0xCA11E400 + n:016x}"
    return f"00-{trace_id}-{parent_id}-{'01' if sampled else '00'}", trace_id, parent_id


def _rest(base_url: str, model: str, traceparent: str | None) -> None:
    headers = {"traceparent": traceparent} if traceparent else {}
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
    response = httpx.post(
        f"{base_url}/v2/models/{model}/infer", json=body, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text


def _grpc(url: str, model: str, traceparent: str | None) -> None:
    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.array([[1.0, 2.0]], dtype=np.float32))
        headers = {"traceparent": traceparent} if traceparent else None
        client.infer(model, [tensor], headers=headers, client_timeout=30)


@dataclass
class Round:
    """What one server exported for a known set of callers."""

    spans: list[Span]
    callers: dict[str, tuple[str, str]]  # name -> (trace id, caller's span id)
    output: list[str]

    def of_trace(self, caller: str) -> list[Span]:
        trace_id = self.callers[caller][0]
        return [s for s in self.spans if s.trace_id == trace_id]

    def request_span(self, caller: str, name: str) -> Span:
        (span,) = [s for s in self.of_trace(caller) if s.name == name]
        return span


def _repository(root: Path) -> Path:
    for name, config in (
        ("echo", ""),
        # While one call holds the only instance, the next two queue and fill a batch; the
        # long window only matters if one of them is missing.
        (
            "pair",
            "max_batch_size: 2\ndynamic_batching: {max_queue_delay_ms: 5000}\n"
            "parameters: {sleep_s: 0.5}\n",
        ),
    ):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.yaml").write_text(f"runtime: {RUNTIME}\n{config}")
    return root


def _serve_one_round(
    repository: Path, receiver: Receiver, *args: str, env: dict[str, str] | None = None
) -> Round:
    start = len(receiver.spans)
    server = start_server(
        repository,
        "--trace-mode",
        "opentelemetry",
        "--trace-endpoint",
        receiver.endpoint,
        *args,
        env={"PYTHONPATH": str(ROOT), **(env or {})},
    )
    callers: dict[str, tuple[str, str]] = {}

    def caller(name: str, sampled: bool = True) -> str:
        traceparent, trace_id, parent_id = _traceparent(sampled)
        callers[name] = (trace_id, parent_id)
        return traceparent

    try:
        _rest(server.base_url, "echo", caller("rest"))
        _grpc(server.grpc_url, "echo", caller("grpc"))
        _rest(server.base_url, "echo", caller("rest unsampled", sampled=False))
        _grpc(server.grpc_url, "echo", caller("grpc unsampled", sampled=False))
        _rest(server.base_url, "echo", None)
        _grpc(server.grpc_url, "echo", None)
        with futures.ThreadPoolExecutor(3) as pool:
            # The call holding the instance is not traced (its caller says so).
            blocker = caller("blocker", sampled=False)
            calls = [pool.submit(_rest, server.base_url, "pair", blocker)]
            time.sleep(0.1)
            calls += [
                pool.submit(_rest, server.base_url, "pair", caller("rest paired")),
                pool.submit(_grpc, server.grpc_url, "pair", caller("grpc paired")),
            ]
            for done in calls:
                done.result()
    finally:
        assert server.stop() == 0, "\n".join(server.output)
    with receiver.lock:
        spans = receiver.spans[start:]
    return Round(spans, callers, server.output)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _repository(tmp_path_factory.mktemp("traced"))


@pytest.fixture(scope="module", params=["gateway", "python"])
def traced(
    request: pytest.FixtureRequest,
    repository: Path,
    grpc_receiver: Receiver,
    http_receiver: Receiver,
) -> Round:
    """A round through the Go gateway exported over OTLP/gRPC, and one through uvicorn and
    grpc.aio exported over OTLP/HTTP."""
    if request.param == "gateway":
        return _serve_one_round(repository, grpc_receiver)
    return _serve_one_round(
        repository,
        http_receiver,
        "--rest-frontend",
        "uvicorn",
        "--grpc-frontend",
        "grpcio",
        "--trace-protocol",
        "http/protobuf",
    )


@pytest.fixture(scope="module")
def unsampled_round(repository: Path, grpc_receiver: Receiver) -> Round:
    return _serve_one_round(repository, grpc_receiver, "--trace-rate", "0")


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize(("caller", "name"), [("rest", REST_SPAN), ("grpc", GRPC_SPAN)])
def test_an_incoming_traceparent_is_continued(traced: Round, caller: str, name: str) -> None:
    span = traced.request_span(caller, name)
    assert span.parent_id == traced.callers[caller][1]
    assert span.kind == 2  # SPAN_KIND_SERVER
    assert span.service == "inferbridge"
    assert span.attributes["inferbridge.model.name"] == "echo"


def test_the_rest_span_follows_the_http_conventions(traced: Round) -> None:
    attributes = traced.request_span("rest", REST_SPAN).attributes
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == "/v2/models/{model}/infer"
    assert attributes["url.path"] == "/v2/models/echo/infer"
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == "127.0.0.1"


def test_the_grpc_span_follows_the_rpc_conventions(traced: Round) -> None:
    attributes = traced.request_span("grpc", GRPC_SPAN).attributes
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == "inference.GRPCInferenceService"
    assert attributes["rpc.method"] == "ModelInfer"
    assert attributes["rpc.grpc.status_code"] == 0


@pytest.mark.parametrize(("caller", "name"), [("rest", REST_SPAN), ("grpc", GRPC_SPAN)])
def test_queue_and_batch_spans_hang_under_the_request(
    traced: Round, caller: str, name: str
) -> None:
    request = traced.request_span(caller, name)
    spans = traced.of_trace(caller)
    (queue,) = [s for s in spans if s.name == "queue"]
    (batch,) = [s for s in spans if s.name == "batch"]
    assert queue.parent_id == request.span_id
    assert batch.parent_id == request.span_id  # its batch's first (here: only) request
    assert batch.links == [(request.trace_id, request.span_id)]
    assert batch.attributes["inferbridge.model.name"] == "echo"
    assert batch.attributes["inferbridge.model.version"] == "1"
    assert batch.attributes["inferbridge.batch.rows"] == 1
    phases = sorted(s.name for s in spans if s.parent_id == batch.span_id)
    assert phases == ["compute_infer", "compute_input", "compute_output"]


def test_a_batch_span_links_to_every_request_it_served(traced: Round) -> None:
    rest = traced.request_span("rest paired", REST_SPAN)
    grpc_span = traced.request_span("grpc paired", GRPC_SPAN)
    batches = [
        s
        for s in traced.spans
        if s.name == "batch" and s.attributes.get("inferbridge.model.name") == "pair"
    ]
    (batch,) = batches
    assert sorted(batch.links) == sorted(
        [(rest.trace_id, rest.span_id), (grpc_span.trace_id, grpc_span.span_id)]
    )
    assert batch.parent_id in (rest.span_id, grpc_span.span_id)
    assert batch.attributes["inferbridge.batch.requests"] == 2
    assert batch.attributes["inferbridge.batch.rows"] == 2
    for request in (rest, grpc_span):
        (queue,) = [s for s in traced.spans if s.name == "queue" and s.trace_id == request.trace_id]
        assert queue.parent_id == request.span_id


@pytest.mark.parametrize("caller", ["rest unsampled", "grpc unsampled"])
def test_an_unsampled_caller_is_respected(traced: Round, caller: str) -> None:
    assert traced.of_trace(caller) == []


def test_without_a_traceparent_a_request_starts_a_trace(traced: Round) -> None:
    known = {trace_id for trace_id, _ in traced.callers.values()}
    roots = [
        s for s in traced.spans if s.trace_id not in known and s.name in (REST_SPAN, GRPC_SPAN)
    ]
    assert sorted(s.name for s in roots) == sorted([REST_SPAN, GRPC_SPAN])
    assert all(s.parent_id == "" for s in roots)


def test_rate_zero_traces_nothing_new_but_continues_sampled_callers(
    unsampled_round: Round,
) -> None:
    known = {trace_id for trace_id, _ in unsampled_round.callers.values()}
    assert [s for s in unsampled_round.spans if s.trace_id not in known] == []
    assert (
        unsampled_round.request_span("rest", REST_SPAN).parent_id
        == (unsampled_round.callers["rest"][1])
    )
    assert (
        unsampled_round.request_span("grpc", GRPC_SPAN).parent_id
        == (unsampled_round.callers["grpc"][1])
    )
    assert unsampled_round.of_trace("rest unsampled") == []


# -- faults ----------------------------------------------------------------------------------


def test_an_unreachable_collector_costs_requests_nothing(tmp_path: Path) -> None:
    """The OTLP endpoint is a closed port: requests are answered as usual, the exporter's
    failures stay in the log, and the server still stops within its grace period."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on once this closes
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    root = tmp_path / "repo"
    (root / "echo" / "1").mkdir(parents=True)
    (root / "echo" / "config.yaml").write_text(f"runtime: {RUNTIME}\nmax_batch_size: 4\n")
    server = start_server(
        root,
        "--trace-mode",
        "opentelemetry",
        "--trace-endpoint",
        f"127.0.0.1:{dead}",
        env={"PYTHONPATH": str(ROOT), "OTEL_BSP_SCHEDULE_DELAY": "50"},
    )
    try:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            for _ in range(20):
                assert client.post("/v2/models/echo/infer", json=body).status_code == 200
        time.sleep(0.3)  # let the exporter try, and fail, at least once
    finally:
        code = server.stop(timeout=60)
    assert code == 0, "\n".join(server.output[-20:])
