"""Logging and trace settings through tritonclient over HTTP and gRPC, on both front ends:
GET/POST round trips, the effect on the server's log, and invalid keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.serverproc import ServerProcess, start_server

DEFAULTS = {
    "log_file": "",
    "log_info": True,
    "log_warning": True,
    "log_error": True,
    "log_verbose_level": 0,
    "log_format": "default",
}


def _log_settings(c: Any) -> dict[str, Any]:
    if isinstance(c, httpclient.InferenceServerClient):
        answer: dict[str, Any] = c.get_log_settings()
        return answer
    response = c.get_log_settings()
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.settings.items()}


def _update_log(c: Any, settings: dict[str, Any]) -> dict[str, Any]:
    if isinstance(c, httpclient.InferenceServerClient):
        answer: dict[str, Any] = c.update_log_settings(settings)
        return answer
    response = c.update_log_settings(settings)
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.settings.items()}


def _trace(c: Any, model: str | None = None) -> dict[str, Any]:
    if isinstance(c, httpclient.InferenceServerClient):
        answer: dict[str, Any] = c.get_trace_settings(model_name=model)
        return answer
    response = c.get_trace_settings(model_name=model)
    return _trace_dict(response)


def _update_trace(c: Any, settings: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    if isinstance(c, httpclient.InferenceServerClient):
        answer: dict[str, Any] = c.update_trace_settings(model_name=model, settings=settings)
        return answer
    return _trace_dict(c.update_trace_settings(model_name=model, settings=settings))


def _trace_dict(response: Any) -> dict[str, Any]:
    values = {k: list(v.value) for k, v in response.settings.items()}
    return {k: v if k == "trace_level" else v[0] for k, v in values.items()}


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, rest_server: ServerProcess) -> Iterator[Any]:
    if request.param == "http":
        c: Any = httpclient.InferenceServerClient(rest_server.http_url)
    else:
        c = grpcclient.InferenceServerClient(rest_server.grpc_url)
    yield c
    _update_log(c, {k: v for k, v in DEFAULTS.items() if k != "log_file"})
    c.close()


def _error(call: Any) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    return f"{info.value.status()} {info.value.message()}"


def test_log_settings_round_trip(client: Any) -> None:
    assert _log_settings(client) == DEFAULTS
    answer = _update_log(client, {"log_verbose_level": 2, "log_info": False})
    assert answer == {**DEFAULTS, "log_verbose_level": 2, "log_info": False}
    assert _log_settings(client) == answer
    answer = _update_log(client, {"log_format": "ISO8601"})
    assert answer["log_format"] == "ISO8601" and answer["log_verbose_level"] == 2


def test_log_settings_refusals(client: Any) -> None:
    message = _error(lambda: _update_log(client, {"log_verbose_level": 1, "log_shouting": True}))
    assert "unknown log setting 'log_shouting'" in message
    assert _log_settings(client)["log_verbose_level"] == 0  # nothing applied
    message = _error(lambda: _update_log(client, {"log_file": "/tmp/inferbridge.log"}))
    assert "'log_file' cannot be changed at run time" in message
    message = _error(lambda: _update_log(client, {"log_format": "xml"}))
    assert "'log_format' must be one of default, ISO8601, json" in message


def _unregister_line(server: ServerProcess, name: str) -> list[str]:
    """Unregistering a region that is not there logs nothing; the info line of an
    unregister needs a region: register one over a file of /dev/shm and drop it."""
    key = f"ib_log_{name}"
    path = Path("/dev/shm") / key
    path.write_bytes(bytes(64))
    try:
        before = len(server.output)
        base = server.base_url
        httpx.post(
            f"{base}/v2/systemsharedmemory/region/{name}/register",
            json={"key": f"/{key}", "offset": 0, "byte_size": 64},
            timeout=10,
        ).raise_for_status()
        httpx.post(f"{base}/v2/systemsharedmemory/region/{name}/unregister", timeout=10)
        time.sleep(0.5)  # the server's output is read by a thread
        return [line for line in server.output[before:] if f"region '{name}'" in line]
    finally:
        path.unlink()


def test_log_settings_change_what_the_server_writes(rest_server: ServerProcess) -> None:
    """Info off: the shared memory info lines are not written; on again, in JSON, they are."""
    http = httpclient.InferenceServerClient(rest_server.http_url)
    try:
        assert len(_unregister_line(rest_server, "shown_text")) == 2
        http.update_log_settings({"log_info": False})
        assert _unregister_line(rest_server, "hidden") == []
        http.update_log_settings({"log_info": True, "log_format": "json"})
        lines = _unregister_line(rest_server, "shown_json")
        assert len(lines) == 2 and all(line.startswith("{") for line in lines)
        assert '"event":"shm_unregister"' in lines[1]
    finally:
        http.update_log_settings(
            {"log_info": True, "log_verbose_level": 0, "log_format": "default"}
        )
        http.close()


def test_trace_settings_when_tracing_is_off(client: Any) -> None:
    answer = _trace(client)
    assert answer == {
        "trace_level": ["OFF"],
        "trace_rate": "1",
        "trace_count": "-1",
        "log_frequency": "0",
        "trace_file": "",
        "trace_mode": "opentelemetry",
    }
    assert _update_trace(client, {"trace_level": ["OFF"]}) == answer
    message = _error(lambda: _update_trace(client, {"trace_level": ["TIMESTAMPS"]}))
    assert "400" in message or "INVALID_ARGUMENT" in message
    assert "tracing is off on this server: start it with --trace-mode opentelemetry" in message
    message = _error(lambda: _update_trace(client, {"trace_colour": "red"}))
    assert "unknown trace setting 'trace_colour'" in message


@pytest.fixture(scope="module", params=["gateway", "python"])
def traced_server(request: pytest.FixtureRequest, examples_dir: Path) -> Iterator[ServerProcess]:
    """Tracing on, towards a collector nobody listens on (exports fail quietly)."""
    frontends = [] if request.param == "gateway" else ["--grpc-frontend", "grpcio"]
    proc = start_server(
        examples_dir,
        "--trace-mode",
        "opentelemetry",
        "--trace-endpoint",
        "127.0.0.1:9",
        "--trace-rate",
        "0.5",
        *frontends,
    )
    yield proc
    proc.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_trace_settings_at_run_time(traced_server: ServerProcess, protocol: str) -> None:
    c: Any = (
        httpclient.InferenceServerClient(traced_server.http_url)
        if protocol == "http"
        else grpcclient.InferenceServerClient(traced_server.grpc_url)
    )
    try:
        assert _trace(c) == {
            "trace_level": ["TIMESTAMPS"],
            "trace_rate": "2",
            "trace_count": "-1",
            "log_frequency": "0",
            "trace_file": "",
            "trace_mode": "opentelemetry",
        }
        answer = _update_trace(c, {"trace_rate": "1000", "trace_count": "5"})
        assert answer["trace_rate"] == "1000" and answer["trace_count"] == "5"
        answer = _update_trace(c, {"trace_level": ["OFF"]}, model="iris")
        assert answer["trace_level"] == ["OFF"] and answer["trace_rate"] == "1000"
        assert _trace(c)["trace_level"] == ["TIMESTAMPS"]  # the global level is unchanged
        assert _trace(c, "iris")["trace_level"] == ["OFF"]
        answer = _update_trace(c, {"trace_level": None}, model="iris")
        assert answer["trace_level"] == ["TIMESTAMPS"]
        message = _error(lambda: _update_trace(c, {"trace_level": ["TENSORS"]}))
        assert "TENSORS is not supported" in message
        message = _error(lambda: _update_trace(c, {"trace_file": "/tmp/t.json"}))
        assert "only '' is accepted" in message
        # Requests still answer with tracing turned off at run time.
        _update_trace(c, {"trace_level": ["OFF"], "trace_rate": "2", "trace_count": "-1"})
        assert c.is_server_ready()
    finally:
        _update_trace(c, {"trace_level": ["TIMESTAMPS"], "trace_rate": "2", "trace_count": "-1"})
        c.close()
