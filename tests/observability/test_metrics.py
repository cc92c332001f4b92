"""The metrics module alone: the collector over a dataplane's reports, the front-end
counters, route templates (the gateway's), the merge with the gateway's text; the JSON log
formatter and the access log."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferbridge.batching.scheduler import BatchTiming
from inferbridge.dataplane.dataplane import VersionReport
from inferbridge.observability.frontend import http_route, infer_model, path_model
from inferbridge.observability.logs import AccessLog, JsonFormatter, configure_logging, trace_id
from inferbridge.observability.metrics import MetricsEndpoint, serve_metrics
from inferbridge.observability.stats import VersionStats


@dataclass
class _FakeDataPlane:
    reports: list[VersionReport]

    def version_reports(self) -> Iterator[VersionReport]:
        return iter(self.reports)


def _stats() -> VersionStats:
    stats = VersionStats()
    for seconds in (0.0002, 0.003, 0.003):
        stats.request_succeeded(seconds)
    stats.request_failed(0.0, "rejected")
    stats.batch_done(
        BatchTiming(
            rows=3,
            queue_waits=[0.001, 0.002],
            traces=[None, None],
            started=1.0,
            joined=1.001,
            ran=1.011,
            ended=1.012,
            failed=False,
        )
    )
    return stats


def _samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def _endpoint(*reports: VersionReport) -> MetricsEndpoint:
    return MetricsEndpoint(_FakeDataPlane(list(reports)))  # type: ignore[arg-type]


def test_the_model_families_read_the_stats() -> None:
    ready = VersionReport("m", "1", "ready", _stats(), queued=2, inflight=5)
    loading = VersionReport("m", "2", "loading", None, queued=0, inflight=0)
    samples = _samples(asyncio.run(_endpoint(ready, loading).render()))
    v1 = {"model": "m", "version": "1"}

    def get(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert get("inferbridge_request_success_total", **v1) == 3
    assert get("inferbridge_request_failure_total", **v1, reason="rejected") == 1
    assert get("inferbridge_request_failure_total", **v1, reason="backend") == 0
    assert get("inferbridge_inference_count_total", **v1) == 3
    assert get("inferbridge_execution_count_total", **v1) == 1
    assert get("inferbridge_pending_requests", **v1) == 2
    assert get("inferbridge_inflight_requests", **v1) == 5
    assert get("inferbridge_request_duration_seconds_bucket", **v1, le="0.00025") == 2
    assert get("inferbridge_request_duration_seconds_bucket", **v1, le="0.0025") == 2
    assert get("inferbridge_request_duration_seconds_bucket", **v1, le="0.005") == 4
    assert get("inferbridge_request_duration_seconds_count", **v1) == 4
    assert get("inferbridge_request_duration_seconds_sum", **v1) == pytest.approx(0.0062)
    assert get("inferbridge_queue_duration_seconds_count", **v1) == 2
    assert get("inferbridge_compute_infer_duration_seconds_bucket", **v1, le="0.01") == 0
    assert get("inferbridge_compute_infer_duration_seconds_bucket", **v1, le="0.025") == 1
    assert get("inferbridge_batch_size_bucket", **v1, le="2.0") == 0
    assert get("inferbridge_batch_size_bucket", **v1, le="4.0") == 1
    assert get("inferbridge_model_state", **v1, state="ready") == 1
    assert get("inferbridge_model_state", **v1, state="draining") == 0
    v2 = {"model": "m", "version": "2"}
    assert get("inferbridge_model_state", **v2, state="loading") == 1
    assert ("inferbridge_request_success_total", frozenset(v2.items())) not in samples
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)
    assert any(name == "python_gc_collections_total" for name, _ in samples)


def test_the_registry_is_not_the_global_one() -> None:
    from prometheus_client import REGISTRY, generate_latest

    endpoint = _endpoint(VersionReport("m", "1", "ready", _stats(), queued=0, inflight=0))
    assert endpoint.registry is not REGISTRY
    assert b"inferbridge_" not in generate_latest(REGISTRY)


def test_front_end_counters_and_the_gateways_text_merge_without_duplicates() -> None:
    """The gateway serves gRPC, uvicorn HTTP: one family each, HTTP samples from Python."""
    endpoint = _endpoint()
    http = endpoint.serve_protocol("http")
    http.inflight = 1
    http.request_bytes = 10
    http.done("/v2/models/{model}/infer", "200", 0.001)
    http.reject("m", "queue_full")
    http.connections = 2
    http.connections_total = 3
    gateway = (
        "# HELP inferbridge_frontend_inflight_requests In progress.\n"
        "# TYPE inferbridge_frontend_inflight_requests gauge\n"
        'inferbridge_frontend_inflight_requests{protocol="grpc"} 4\n'
        'inferbridge_frontend_inflight_requests{protocol="http"} 0\n'
        "# HELP inferbridge_frontend_connections_total Accepted.\n"
        "# TYPE inferbridge_frontend_connections_total counter\n"
        'inferbridge_frontend_connections_total{protocol="grpc"} 7\n'
        'inferbridge_frontend_connections_total{protocol="http"} 0\n'
        "# HELP go_goroutines Goroutines.\n"
        "# TYPE go_goroutines gauge\n"
        "go_goroutines 12\n"
    )

    async def pull() -> bytes:
        return gateway.encode()

    endpoint.source = pull
    text = asyncio.run(endpoint.render())
    types = [line.split()[2] for line in text.decode().splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
    samples = _samples(text)

    def get(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert get("inferbridge_frontend_inflight_requests", protocol="grpc") == 4
    assert get("inferbridge_frontend_inflight_requests", protocol="http") == 1
    assert get("inferbridge_frontend_connections_total", protocol="grpc") == 7
    assert get("inferbridge_frontend_connections_total", protocol="http") == 3
    assert get("inferbridge_frontend_connections", protocol="http") == 2
    assert get("go_goroutines") == 12
    route = {"protocol": "http", "route": "/v2/models/{model}/infer", "code": "200"}
    assert get("inferbridge_frontend_requests_total", **route) == 1
    rejected = {"protocol": "http", "model": "m", "reason": "queue_full"}
    assert get("inferbridge_frontend_rejected_total", **rejected) == 1
    assert get("inferbridge_frontend_request_duration_seconds_count", protocol="http") == 1


def test_with_the_gateway_serving_everything_its_text_is_appended() -> None:
    endpoint = _endpoint()

    async def pull() -> bytes:
        return b"# TYPE go_goroutines gauge\ngo_goroutines 3\n"

    endpoint.source = pull
    text = asyncio.run(endpoint.render())
    assert text.endswith(b"go_goroutines 3\n")
    assert b"inferbridge_frontend" not in text


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v2", "/v2"),
        ("/v2/", "/v2"),
        ("/v2/health/live", "/v2/health/live"),
        ("/v2/health/ready", "/v2/health/ready"),
        ("/v2/models/stats", "/v2/models/stats"),
        ("/v2/models/iris", "/v2/models/{model}"),
        ("/v2/models/iris/ready", "/v2/models/{model}/ready"),
        ("/v2/models/iris/config", "/v2/models/{model}/config"),
        ("/v2/models/iris/stats", "/v2/models/{model}/stats"),
        ("/v2/models/iris/infer", "/v2/models/{model}/infer"),
        ("/v2/models/iris/versions/3", "/v2/models/{model}/versions/{version}"),
        ("/v2/models/iris/versions/3/ready", "/v2/models/{model}/versions/{version}/ready"),
        ("/v2/models/iris/versions/3/infer", "/v2/models/{model}/versions/{version}/infer"),
        ("/v2/models/iris/versions/3/stats", "/v2/models/{model}/versions/{version}/stats"),
        ("/v2/models/llm/generate", "/v2/models/{model}/generate"),
        ("/v2/models/llm/generate_stream", "/v2/models/{model}/generate_stream"),
        ("/v2/models/llm/versions/2/generate", "/v2/models/{model}/versions/{version}/generate"),
        (
            "/v2/models/llm/versions/2/generate_stream",
            "/v2/models/{model}/versions/{version}/generate_stream",
        ),
        ("/v2/repository/index", "/v2/repository/index"),
        ("/v2/logging", "/v2/logging"),
        ("/v2/trace/setting", "/v2/trace/setting"),
        ("/v2/models/iris/trace/setting", "/v2/models/{model}/trace/setting"),
        ("/v2/models/iris/versions/1/trace/setting", "other"),
        ("/v2/systemsharedmemory/status", "/v2/systemsharedmemory/status"),
        (
            "/v2/systemsharedmemory/region/in0/register",
            "/v2/systemsharedmemory/region/{region}/register",
        ),
        (
            "/v2/cudasharedmemory/region/x/unregister",
            "/v2/cudasharedmemory/region/{region}/unregister",
        ),
        ("/v2/systemsharedmemory/region//status", "other"),
        ("/v2/repository/models/iris/load", "/v2/repository/models/{model}/load"),
        ("/v2/repository/models/iris/unload", "/v2/repository/models/{model}/unload"),
        ("/metrics", "/metrics"),
        ("/predict", "/predict"),
        ("/v1/models/iris:predict", "/v1/models/{model}:predict"),
        ("/v1/vision/classify", "/v1/vision/{service}"),
        ("/v1/text/embed", "/v1/text/{service}"),
        ("/v1/text/a/b", "other"),
        ("/v2/models//infer", "other"),
        ("/v2/models/iris/versions", "other"),
        ("/v2/models/iris/nope", "other"),
        ("/anything/else", "other"),
    ],
)
def test_routes_are_templated_as_the_gateway_does(path: str, route: str) -> None:
    assert http_route(path) == route


def test_paths_name_their_model() -> None:
    assert infer_model("/v2/models/iris/versions/2/infer") == "iris"
    assert infer_model("/v2/models/iris/ready") == ""
    assert infer_model("/v2/models/llm/generate_stream") == "llm"
    assert path_model("/v2/models/iris/versions/2/infer") == ("iris", "2")
    assert path_model("/v2/repository/models/iris/load") == ("iris", "")
    assert path_model("/v2/models/stats") == ("", "")


def test_the_metrics_port_answers_only_metrics() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        server = await serve_metrics(_endpoint(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def get(path: str) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            return answer

        try:
            return await get("/metrics"), await get("/")
        finally:
            server.close()

    metrics, other = asyncio.run(scenario())
    assert metrics.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"text/plain; version=0.0.4" in metrics
    assert b"process_open_fds" in metrics
    assert other.startswith(b"HTTP/1.1 404")


# -- logs ----------------------------------------------------------------------------------


def test_json_lines_carry_the_common_and_extra_fields() -> None:
    record = logging.LogRecord("inferbridge.x", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    record.model = "iris"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING"
    assert line["logger"] == "inferbridge.x"
    assert line["message"] == "a b"
    assert line["model"] == "iris"
    assert line["timestamp"].endswith("+00:00") and "T" in line["timestamp"]


def test_configure_logging_replaces_the_root_handlers() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        configure_logging("warning", "json")
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING
        configure_logging("info", "text")
        assert not isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_trace_ids_come_from_traceparent() -> None:
    assert trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert trace_id(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").startswith("4bf9")
    assert trace_id("garbage") == ""
    assert trace_id(None) == ""


def test_the_access_log_writes_one_record_with_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="inferbridge.access"):
        AccessLog().request(
            protocol="http",
            method="POST",
            route="/v2/models/m/infer",
            model="m",
            version="",
            status="200",
            duration_s=0.0015,
            request_bytes=10,
            response_bytes=20,
            trace=None,
        )
    (record,) = caplog.records
    assert record.name == "inferbridge.access"
    assert record.__dict__["duration_ms"] == 1.5
    assert record.__dict__["status"] == "200"
    assert "POST /v2/models/m/infer 200" in record.getMessage()
