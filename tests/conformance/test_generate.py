"""Triton's generate extension (`/generate`, `/generate_stream` with Server-Sent Events) on
a real server, both front ends, with a decoupled text model shaped as Triton's QA
`mock_llm` and ordinary identity models; the cases follow Triton's
qa/L0_http/generate_endpoint_test.py where our models can express them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serverproc import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
SSE = "text/event-stream; charset=utf-8"
TEXT = "hello world"


def _mock_llm(parameters: str) -> str:
    runtime = "runtime: tests.support.runtimes:MockLLM\nmax_batch_size: 0\n"
    return f"{runtime}parameters: {{{parameters}}}\n"


@pytest.fixture(scope="module", params=["gateway", "python"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("generate")
    work = tmp_path_factory.mktemp("generate-work")
    identity = "runtime: tests.support.runtimes:Identity\nmax_batch_size: 8\n"
    models = {
        "mock_llm": _mock_llm("repetition: 3"),
        "mock_llm_fail": _mock_llm("repetition: 1, fail_last: true"),
        "mock_llm_fail_first": _mock_llm("repetition: 0, fail_last: true"),
        "mock_llm_zero": _mock_llm("repetition: 0"),
        "mock_llm_gate": _mock_llm(f"repetition: 3, gate_file: '{work / 'gate'}'"),
        "mock_llm_held": _mock_llm(
            f"repetition: 10000, delay_s: 0.02, log_file: '{work / 'held.log'}'"
        ),
        "text_identity": identity
        + "inputs:\n  - {name: INPUT0, datatype: BYTES, shape: [-1, -1]}\n"
        + "outputs:\n  - {name: OUTPUT0, datatype: BYTES, shape: [-1, -1]}\n",
        "int_identity": identity
        + "inputs:\n  - {name: INPUT0, datatype: INT32, shape: [-1, 2]}\n"
        + "  - {name: INPUT1, datatype: FP32, shape: [-1, -1]}\n"
        + "outputs:\n  - {name: OUTPUT0, datatype: INT32, shape: [-1, 2]}\n"
        + "  - {name: OUTPUT1, datatype: FP32, shape: [-1, -1]}\n",
    }
    for name, config in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.yaml").write_text(config)
    frontends = () if request.param == "gateway" else ("--rest-frontend", "uvicorn",
                                                         "--grpc-frontend", "grpcio")  # fmt: skip
    proc = start_server(root, *frontends, env={"PYTHONPATH": str(ROOT)})
    proc.work = work  # type: ignore[attr-defined]
    proc.frontend = request.param  # type: ignore[attr-defined]
    yield proc
    proc.stop()


def _post(server: ServerProcess, model: str, route: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    url = f"{server.base_url}/v2/models/{model}/{route}"
    return httpx.post(url, content=content, timeout=60)


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    """The SSE body's events, checking that each is one `data:` line and a blank line."""
    assert response.headers["content-type"] == SSE
    chunks = response.text.split("\n\n")
    assert chunks[-1] == "", response.text
    events = []
    for chunk in chunks[:-1]:
        assert chunk.startswith("data: ") and "\n" not in chunk, chunk
        events.append(json.loads(chunk.removeprefix("data: ")))
    return events


def test_generate_answers_one_json_object(server: ServerProcess) -> None:
    response = _post(server, "mock_llm", "generate", {"PROMPT": TEXT, "STREAM": False})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"model_name": "mock_llm", "model_version": "1", "TEXT": TEXT}


def test_generate_echoes_a_request_id_unless_empty(server: ServerProcess) -> None:
    body = {"PROMPT": TEXT, "STREAM": False, "id": "42"}
    assert _post(server, "mock_llm", "generate", body).json()["id"] == "42"
    body["id"] = ""
    assert "id" not in _post(server, "mock_llm", "generate", body).json()
    del body["id"]
    assert "id" not in _post(server, "mock_llm", "generate", body).json()


def test_generate_on_an_ordinary_model(server: ServerProcess) -> None:
    body = {"INPUT0": [[1, 2]], "INPUT1": [0.5, 1.5, 2.5], "id": "7", "temperature": 0}
    response = _post(server, "int_identity", "generate", body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": "7",
        "model_name": "int_identity",
        "model_version": "1",
        "OUTPUT0": [1, 2],
        "OUTPUT1": [0.5, 1.5, 2.5],
    }
    response = _post(server, "text_identity", "generate_stream", {"INPUT0": "one"})
    assert response.status_code == 200, response.text
    assert [e["OUTPUT0"] for e in _events(response)] == ["one"]


def test_generate_stream_sends_each_response_as_an_event(server: ServerProcess) -> None:
    response = _post(server, "mock_llm", "generate_stream", {"PROMPT": [TEXT], "STREAM": True})
    assert response.status_code == 200, response.text
    events = _events(response)
    assert [e["TEXT"] for e in events] == [TEXT] * 3
    assert all(e["model_name"] == "mock_llm" and e["model_version"] == "1" for e in events)


def test_generate_wants_exactly_one_response(server: ServerProcess) -> None:
    # Triton's test_one_response, test_zero_response and test_many_response.
    response = _post(server, "mock_llm_fail_first", "generate", {"PROMPT": TEXT, "STREAM": False})
    assert response.status_code == 200 and response.json()["TEXT"] == TEXT
    response = _post(server, "mock_llm_fail_first", "generate", {"PROMPT": TEXT, "STREAM": True})
    assert response.status_code == 500 and "An Error Occurred" in response.json()["error"]
    for model in ("mock_llm", "mock_llm_zero"):
        response = _post(server, model, "generate", {"PROMPT": TEXT, "STREAM": True})
        assert response.status_code == 400, response.text
        assert "generate expects model to produce exactly 1 response" in response.json()["error"]
    response = _post(server, "mock_llm_zero", "generate_stream", {"PROMPT": TEXT, "STREAM": True})
    assert response.status_code == 200 and _events(response) == []


def test_an_error_while_streaming_is_an_event(server: ServerProcess) -> None:
    # Triton's test_generate_stream_response_error: the first event sets the status.
    body = {"PROMPT": [TEXT], "STREAM": True}
    response = _post(server, "mock_llm_fail", "generate_stream", body)
    assert response.status_code == 200
    events = _events(response)
    assert events[0]["TEXT"] == TEXT and "An Error Occurred" in events[1]["error"]
    assert len(events) == 2
    response = _post(server, "mock_llm_fail_first", "generate_stream", body)
    assert response.status_code == 500
    [event] = _events(response)
    assert "An Error Occurred" in event["error"]


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
@pytest.mark.parametrize(
    ("body", "status", "phrase"),
    [
        ({}, 400, "expected 2 inputs but got 0 inputs"),
        ({"abc": 123}, 400, "expected 2 inputs but got 0 inputs"),
        ({"PROMPT": "hello"}, 400, "expected 2 inputs but got 1 inputs"),
        ({"STREAM": False, "other": "param"}, 400, "expected 2 inputs but got 1 inputs"),
        ({"PROMPT": 123, "STREAM": False}, 400, "attempt to access JSON non-string as string"),
        ({"PROMPT": "x", "STREAM": "false"}, 400, "attempt to access JSON non-boolean as boolean"),
        ({"PROMPT": True, "STREAM": 123}, 400, "non-string as string"),
        ({"STREAM": 123, "PROMPT": True}, 400, "non-boolean as boolean"),
        ({"PROMPT": {"USER": "x"}, "STREAM": True}, 400, "non-string as string"),
        ({"PROMPT": "x", "STREAM": True, "PARAMS": {"P": 0}}, 400,
         "parameter 'PARAMS' has invalid type."),
        ({"PROMPT": "x", "STREAM": True, "parameters": 1}, 400,
         "Expected JSON object for keyword: 'parameters'"),
        ({"PROMPT": "x", "STREAM": True, "parameters": {"P": [1]}}, 400,
         "Converting keyword: 'parameters': parameter 'P' has invalid type."),
        ({"PROMPT": ["a", "b"], "STREAM": True}, 400, "do not fit its shape"),
        ('{"PROMPT": "hello", "STREAM": false, "PROMPT": "duplicate"}', 400,
         "input 'PROMPT' already exists in request"),
        ('{"PROMPT": "hello", "STREAM": false, "STREAM": true, "PROMPT": "x"}', 400,
         "input 'STREAM' already exists in request"),
        ("[1, 2]", 400, "must be a JSON object"),
        ("{", 400, "malformed JSON"),
        ('{"PROMPT": ' + "[" * 200 + '"x"' + "]" * 200 + ', "STREAM": true}', 400,
         "nesting depth exceeds maximum allowed limit"),
        ('{"PROMPT": ' + "[" * 5000 + "]" * 5000 + "}", 400, "malformed JSON"),
    ],
)  # fmt: skip
def test_bad_requests_are_json_errors(
    server: ServerProcess, route: str, body: Any, status: int, phrase: str
) -> None:
    response = _post(server, "mock_llm", route, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert phrase in response.json()["error"]


def test_unknown_model_and_wrong_method(server: ServerProcess) -> None:
    response = _post(server, "nope", "generate", {"PROMPT": "x"})
    assert response.status_code == 404
    assert "Request for unknown model" in response.json()["error"]
    response = httpx.get(f"{server.base_url}/v2/models/mock_llm/generate")
    assert response.status_code == 405
    url = f"{server.base_url}/v2/models/mock_llm/versions/1/generate"
    response = httpx.post(url, content=json.dumps({"PROMPT": "v", "STREAM": False}))
    assert response.status_code == 200 and response.json()["TEXT"] == "v"


def test_many_requests_at_once(server: ServerProcess) -> None:
    # Triton's test_race_condition, smaller: every answer whole and its own.
    failures: list[str] = []

    def one(i: int) -> None:
        route = "generate_stream" if i % 2 else "generate"
        body = {"PROMPT": f"p{i}", "STREAM": bool(i % 2), "param": "x"}
        response = _post(server, "mock_llm", route, body)
        texts = [e["TEXT"] for e in _events(response)] if i % 2 else [response.json()["TEXT"]]
        if texts != [f"p{i}"] * (3 if i % 2 else 1):
            failures.append(f"{i}: {texts}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures


def test_events_leave_as_they_are_made(server: ServerProcess) -> None:
    # The model makes its second response only once the gate file exists, which this test
    # creates only after it has read the first event.
    gate = server.work / "gate"  # type: ignore[attr-defined]
    url = f"{server.base_url}/v2/models/mock_llm_gate/generate_stream"
    body = json.dumps({"PROMPT": [TEXT], "STREAM": True})
    with httpx.stream("POST", url, content=body, timeout=120) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        assert json.loads(first.removeprefix("data: "))["TEXT"] == TEXT
        gate.touch()
        rest = [json.loads(line.removeprefix("data: "))["TEXT"] for line in lines if line]
    assert rest == [TEXT, TEXT]


def test_a_client_that_leaves_closes_the_models_iterator(server: ServerProcess) -> None:
    log = server.work / "held.log"  # type: ignore[attr-defined]
    log.unlink(missing_ok=True)
    url = f"{server.base_url}/v2/models/mock_llm_held/generate_stream"
    body = json.dumps({"PROMPT": [TEXT], "STREAM": True})
    with httpx.stream("POST", url, content=body, timeout=120) as response:
        assert next(line for line in response.iter_lines() if line).startswith("data: ")
    for _ in range(6000):  # up to a minute
        if log.exists() and "closed" in log.read_text():
            break
        threading.Event().wait(0.01)
    assert log.exists() and "closed" in log.read_text()
    assert httpx.get(f"{server.base_url}/v2/health/live").status_code == 200
