"""--log-format json and --access-log on real servers: one JSON access line per request on
every front end, with the W3C trace id; start-up events logged with their reason."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from tests.integration.observed import PYTHON_FRONTENDS, infer_body, small_repository, start
from tests.serverproc import ServerProcess

_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
_INFER = "/inference.GRPCInferenceService/ModelInfer"
Line = dict[str, Any]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    repository = small_repository(tmp_path_factory.mktemp("logs-repo"))
    flags = ("--log-format", "json", "--access-log")
    started = {
        "gateway": start(repository, *flags),
        "python": start(repository, *flags, "--no-metrics", *PYTHON_FRONTENDS),
    }
    yield started
    for proc in started.values():
        proc.stop()


@pytest.fixture(scope="module", params=["gateway", "python"])
def proc(request: pytest.FixtureRequest, servers: dict[str, ServerProcess]) -> ServerProcess:
    return servers[request.param]


def _json_lines(proc: ServerProcess) -> list[Line]:
    lines = []
    for text in list(proc.output):
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


def _wait_for(proc: ServerProcess, match: Callable[[Line], bool], timeout: float = 20) -> Line:
    """The first JSON log line that matches (the server writes it as it answers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = next((line for line in _json_lines(proc) if match(line)), None)
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError("no such log line in:\n" + "\n".join(proc.output[-30:]))


def _traceparent(span: str) -> str:
    return f"00-{_TRACE}-{span}-01"


def test_every_line_is_json_with_the_common_fields(proc: ServerProcess) -> None:
    lines = _json_lines(proc)
    assert lines
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= set(line), line
        assert line["timestamp"].endswith("+00:00")  # ISO-8601, UTC
    loaded = _wait_for(
        proc,
        lambda line: line["logger"] == "inferbridge.models.manager" and "echo" in line["message"],
    )
    assert "start-up" in loaded["message"]  # the reason


def test_rest_requests_get_one_access_line(proc: ServerProcess) -> None:
    body = json.dumps(infer_body(3.0)).encode()
    span = "00f067aa0ba902b7"
    response = httpx.post(
        f"{proc.base_url}/v2/models/echo/infer",
        content=body,
        headers={"traceparent": _traceparent(span), "content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200
    line = _wait_for(
        proc,
        lambda line: (
            line["logger"] == "inferbridge.access"
            and line.get("protocol") == "http"
            and line.get("trace_id") == _TRACE
            and line.get("route") == "/v2/models/echo/infer"
        ),
    )
    assert line["method"] == "POST"
    assert line["model"] == "echo"
    assert line["version"] == "1"  # the default version that answered, though not named
    assert line["status"] == "200"
    assert line["request_bytes"] == len(body)
    assert line["response_bytes"] == len(response.content)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["level"] == "INFO"


def test_grpc_calls_get_one_access_line(proc: ServerProcess) -> None:
    request = service_pb2.ModelInferRequest(model_name="echo", model_version="1")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())
    payload = request.SerializeToString()
    with grpc.insecure_channel(proc.grpc_url) as channel:
        call = channel.unary_unary(_INFER)
        call(payload, timeout=10, metadata=(("traceparent", _traceparent("00f067aa0ba902b8")),))
        with pytest.raises(grpc.RpcError):
            call(b"\xff\xff", timeout=10)  # not a ModelInferRequest
    line = _wait_for(
        proc,
        lambda line: (
            line["logger"] == "inferbridge.access"
            and line.get("protocol") == "grpc"
            and line.get("trace_id") == _TRACE
        ),
    )
    assert line["method"] == _INFER
    assert (line["model"], line["version"], line["status"]) == ("echo", "1", "OK")
    assert line["request_bytes"] == len(payload)
    assert line["response_bytes"] > 0
    if not any("served by the Go gateway" in text for text in proc.output):
        return  # grpc.aio refuses an undecodable message before any handler runs
    _wait_for(
        proc,
        lambda line: (
            line["logger"] == "inferbridge.access"
            and line.get("protocol") == "grpc"
            and line.get("status") == "INVALID_ARGUMENT"
        ),
    )


def test_without_metrics_the_endpoint_says_so(servers: dict[str, ServerProcess]) -> None:
    response = httpx.get(f"{servers['python'].base_url}/metrics", timeout=10)
    assert response.status_code == 404
    assert "--no-metrics" in response.json()["error"]
