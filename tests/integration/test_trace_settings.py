"""Trace settings changed at run time decide which requests start traces: a real server
exporting to the OTLP receiver of test_tracing, its settings changed with tritonclient
between rounds of requests (one model per round, so that the spans, all flushed at
shutdown, tell the rounds apart)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.integration.test_tracing import (
    GRPC_SPAN,
    REST_SPAN,
    ROOT,
    RUNTIME,
    Receiver,
    _grpc,
    _rest,
    _traceparent,
    grpc_receiver,
)
from tests.serverproc import start_server

__all__ = ["grpc_receiver"]  # the receiver fixture, used here too

MODEL = "inferbridge.model.name"


@pytest.mark.parametrize("frontends", ["gateway", "python"])
def test_run_time_settings_decide_new_traces(
    tmp_path: Path, grpc_receiver: Receiver, frontends: str
) -> None:
    for name in ("off", "counted", "model_off", "model_on"):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.yaml").write_text(f"runtime: {RUNTIME}\n")
    extra = [] if frontends == "gateway" else ["--grpc-frontend", "grpcio"]
    start = len(grpc_receiver.spans)
    server = start_server(
        tmp_path,
        "--trace-mode",
        "opentelemetry",
        "--trace-endpoint",
        grpc_receiver.endpoint,
        *extra,
        env={"PYTHONPATH": str(ROOT)},
    )
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        # Level OFF: nothing new is traced; a sampled caller is still continued.
        http.update_trace_settings(settings={"trace_level": ["OFF"]})
        for _ in range(2):
            _rest(server.base_url, "off", None)
            _grpc(server.grpc_url, "off", None)
        traceparent, caller_trace, _ = _traceparent()
        _rest(server.base_url, "off", traceparent)
        # On again with a count of 2: the first two requests start traces, then none.
        answer = grpc.update_trace_settings(
            settings={"trace_level": ["TIMESTAMPS"], "trace_count": "2"}, as_json=True
        )
        assert answer["settings"]["trace_count"]["value"] == ["2"]
        for _ in range(4):
            _rest(server.base_url, "counted", None)
        assert http.get_trace_settings()["trace_count"] == "0"
        # No limit again, and one model switched off on its own.
        http.update_trace_settings(settings={"trace_count": "-1"})
        grpc.update_trace_settings(model_name="model_off", settings={"trace_level": ["OFF"]})
        _rest(server.base_url, "model_off", None)
        _grpc(server.grpc_url, "model_off", None)
        _rest(server.base_url, "model_on", None)
        _grpc(server.grpc_url, "model_on", None)
    finally:
        http.close()
        grpc.close()
        assert server.stop() == 0, "\n".join(server.output)
    with grpc_receiver.lock:
        spans = grpc_receiver.spans[start:]
    requests = [s for s in spans if s.name in (REST_SPAN, GRPC_SPAN)]

    def traced(model: str) -> list[tuple[str, str]]:
        return [(s.name, s.trace_id) for s in requests if s.attributes.get(MODEL) == model]

    assert traced("off") == [(REST_SPAN, caller_trace)]
    assert [name for name, _ in traced("counted")] == [REST_SPAN, REST_SPAN]
    assert traced("model_off") == []
    assert sorted(name for name, _ in traced("model_on")) == sorted([REST_SPAN, GRPC_SPAN])
