"""OpenTelemetry through the pool gateway, exported to a real OTLP/gRPC receiver: a span
per request and one per upstream attempt (upstream, attempt number, status, retry
reason), and the traceparent an upstream gets being its attempt's span (seen in the
spans of a real, traced inferbridge server behind the gateway)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from tests.gateway.procs import (
    echo_repository,
    gateway_config,
    infer_body,
    start_faults,
    start_gateway,
    wait_for,
)
from tests.integration.test_tracing import Receiver, Span, grpc_receiver  # noqa: F401
from tests.serverproc import ServerProcess, start_server

pytestmark = pytest.mark.slow

GATEWAY = "inferbridge-gateway"
CALLER_SPAN = "ca11e40000000000"


def _caller(n: int) -> tuple[str, str]:
    trace_id = f"{0x6A7E0000 + n:032x}"
    return f"00-{trace_id}-{CALLER_SPAN}-01", trace_id


def _of(receiver: Receiver, trace_id: str) -> list[Span]:
    with receiver.lock:
        return [s for s in receiver.spans if s.trace_id == trace_id]


def test_a_span_per_attempt_and_the_upstream_continues_it(
    grpc_receiver: Receiver,  # noqa: F811
    server_a: ServerProcess,
    tmp_path: Path,
) -> None:
    traced = start_server(
        echo_repository(tmp_path / "repo", {"echo": ""}),
        "--trace-mode",
        "opentelemetry",
        "--trace-endpoint",
        grpc_receiver.endpoint,
    )
    proxy = start_faults(server_a.http_url)  # serves echo too; 503 once discovered
    gw = start_gateway(
        gateway_config(
            [
                {"name": "bad", "rest": proxy.url},
                {"name": "traced", "rest": traced.base_url, "grpc": traced.grpc_url},
            ],
            "health: {interval: 1h}\nbalancer: round-robin\n"
            "outlier: {consecutive_failures: 0}\n"
            "breaker: {consecutive_failures: 0, failure_rate: 0}\n"
            f"tracing: {{endpoint: '{grpc_receiver.endpoint}', rate: 0}}\n",
        ),
        tmp_path,
    )
    callers: dict[str, str] = {}
    try:
        wait_for(lambda: "echo" in gw.upstreams()["bad"]["models"], what="bad discovered")
        proxy.set(error_rate=1.0)
        for n in range(4):
            traceparent, trace_id = _caller(n)
            callers[f"rest{n}"] = trace_id
            r = httpx.post(
                f"{gw.base}/v2/models/echo/infer",
                json=infer_body(),
                headers={"traceparent": traceparent},
                timeout=30,
            )
            assert r.status_code == 200, r.text
        traceparent, trace_id = _caller(10)
        callers["grpc"] = trace_id
        with triton_grpc.InferenceServerClient(gw.grpc) as client:
            x = triton_grpc.InferInput("x", [1, 2], "FP32")
            x.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
            client.infer("echo", [x], headers={"traceparent": traceparent})
        # An unsampled caller with rate 0: nothing exported for it.
        unsampled = f"00-{0x6A7E00FF:032x}-{CALLER_SPAN}-00"
        r = httpx.post(
            f"{gw.base}/v2/models/echo/infer",
            json=infer_body(),
            headers={"traceparent": unsampled},
            timeout=30,
        )
        assert r.status_code == 200
    finally:
        gw.stop()  # flushes the gateway's spans
        traced.stop()
        proxy.stop()

    def complete(trace_id: str) -> list[Span] | None:
        spans = _of(grpc_receiver, trace_id)
        upstream = [s for s in spans if s.service != GATEWAY]
        return spans if upstream and any(s.service == GATEWAY for s in spans) else None

    retried = 0
    for caller, trace_id in callers.items():
        spans = wait_for(lambda t=trace_id: complete(t), what=f"the spans of {caller}")
        (request,) = [s for s in spans if s.service == GATEWAY and s.parent_id == CALLER_SPAN]
        attempts = sorted(
            (s for s in spans if s.service == GATEWAY and s.parent_id == request.span_id),
            key=lambda s: int(s.attributes["inferbridge.attempt"]),
        )
        assert [int(a.attributes["inferbridge.attempt"]) for a in attempts] == list(
            range(1, len(attempts) + 1)
        )
        last = attempts[-1]
        assert last.attributes["inferbridge.upstream"] == "traced"
        assert last.attributes["inferbridge.outcome"] == "ok"
        assert request.attributes["inferbridge.attempts"] == len(attempts)
        if caller == "grpc":
            assert request.name == "/inference.GRPCInferenceService/ModelInfer"
            assert last.attributes["rpc.grpc.status_code"] == 0
        else:
            assert request.name == "POST /v2/models/echo/infer"
            assert last.attributes["http.response.status_code"] == 200
        for failed in attempts[:-1]:
            assert failed.attributes["inferbridge.upstream"] == "bad"
            assert failed.attributes["http.response.status_code"] == 503
            assert failed.attributes["inferbridge.retry_reason"] == "503"
            retried += 1
        # The traced server's own span continues the trace from the attempt that reached it.
        server_spans = [s for s in spans if s.service != GATEWAY and s.parent_id]
        parents = {s.parent_id for s in server_spans}
        assert last.span_id in parents, (caller, last, server_spans)
        assert not parents & {a.span_id for a in attempts[:-1]}
    assert retried >= 1  # round-robin sent some caller to bad first
    assert _of(grpc_receiver, f"{0x6A7E00FF:032x}") == []
