"""gRPC ModelStreamInfer with tritonclient's streaming APIs, unchanged, on both gRPC front
ends: an ordinary model (many requests in flight, ids echoed, a bad request answered in
error_message while the stream goes on) and a decoupled one (Triton's "repeat": several
responses per request, the final-response flag), cancellation, and the aio client."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.serverproc import ServerProcess, start_server

_ROOT = Path(__file__).resolve().parents[2]
_STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
Result = tuple[Any, InferenceServerException | None]


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("streaming-log") / "repeat.log"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, log_file: Path) -> Path:
    root = tmp_path_factory.mktemp("streaming-repo")
    for name, config in {
        "echo": "runtime: tests.support.runtimes:SleepEcho\nmax_batch_size: 8\n"
        "dynamic_batching: {max_queue_delay_ms: 1}\n"
        "parameters: {sleep_s: 0.01}\n",
        "wide": "runtime: tests.support.runtimes:SleepEcho\nmax_batch_size: 64\n"
        "dynamic_batching: {}\nparameters: {sleep_s: 0.2}\n",
        "repeat": "runtime: tests.support.runtimes:Repeat\nmax_batch_size: 0\n"
        f"parameters: {{log_file: '{log_file}'}}\n",
    }.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.yaml").write_text(config)
    return root


@pytest.fixture(scope="module", params=["gateway", "grpcio"])
def stream_server(request: pytest.FixtureRequest, repository: Path) -> Iterator[ServerProcess]:
    args = () if request.param == "gateway" else ("--grpc-frontend", "grpcio")
    proc = start_server(repository, *args, env={"PYTHONPATH": str(_ROOT)})
    yield proc
    proc.stop()


@pytest.fixture
def client(stream_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(stream_server.grpc_url)
    yield c
    c.close()


def _echo_inputs(value: float, module: Any = grpcclient) -> list[Any]:
    x = module.InferInput("x", [1, 2], "FP32")
    x.set_data_from_numpy(np.array([[value, value + 0.5]], dtype=np.float32))
    return [x]


def _closed(log_file: Path) -> int:
    """How many repeat iterators were closed before their end (the runtime logs each)."""
    return log_file.read_text().count("closed") if log_file.exists() else 0


def _repeat_inputs(
    values: list[int], delay_ms: int, wait_ms: int = 0, module: Any = grpcclient
) -> list[Any]:
    tensors = []
    for name, datatype, data in (
        ("IN", "INT32", np.array(values, dtype=np.int32)),
        ("DELAY", "UINT32", np.full(len(values), delay_ms, dtype=np.uint32)),
        ("WAIT", "UINT32", np.array([wait_ms], dtype=np.uint32)),
    ):
        tensor = module.InferInput(name, list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        tensors.append(tensor)
    return tensors


def _collect(results: queue.Queue[Result], count: int, timeout: float = 30) -> list[Result]:
    deadline = time.monotonic() + timeout
    got = []
    while len(got) < count:
        got.append(results.get(timeout=max(0.01, deadline - time.monotonic())))
    return got


def _start(client: grpcclient.InferenceServerClient) -> queue.Queue[Result]:
    results: queue.Queue[Result] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    return results


def _final(result: Any) -> bool | None:
    parameters = result.get_response().parameters
    return (
        parameters["triton_final_response"].bool_param
        if "triton_final_response" in parameters
        else None
    )


def test_many_requests_on_one_stream_are_answered_with_their_ids(
    client: grpcclient.InferenceServerClient,
) -> None:
    results = _start(client)
    for i in range(40):
        client.async_stream_infer("echo", _echo_inputs(float(i)), request_id=f"r{i}")
    client.stop_stream()  # half-closes, then waits for every answer
    got = _collect(results, 40, timeout=5)
    assert results.empty()
    by_id = {}
    for result, error in got:
        assert error is None, error
        by_id[result.get_response().id] = result
    assert set(by_id) == {f"r{i}" for i in range(40)}
    for i in range(40):
        y = by_id[f"r{i}"].as_numpy("y")
        np.testing.assert_array_equal(y, np.array([[i, i + 0.5]], dtype=np.float32))
        assert _final(by_id[f"r{i}"]) is None  # no flag asked for, none sent


def test_one_stream_has_at_most_32_requests_in_flight(
    client: grpcclient.InferenceServerClient,
) -> None:
    """ "wide" runs batches of up to 64 requests, 200 ms each: while one runs, the requests
    in flight queue and form the next, so the batches it reports (y_batch) show how many of
    the stream's 100 requests were in flight at once."""
    results = _start(client)
    for i in range(100):
        client.async_stream_infer("wide", _echo_inputs(float(i)), request_id=f"w{i}")
    client.stop_stream()
    got = _collect(results, 100, timeout=10)
    assert all(error is None for _, error in got), got
    batches = [int(result.as_numpy("y_batch")[0]) for result, _ in got]
    assert 24 <= max(batches) <= 32, sorted(set(batches))


def test_a_bad_request_is_answered_in_error_message_and_the_stream_goes_on(
    client: grpcclient.InferenceServerClient,
) -> None:
    results = _start(client)
    client.async_stream_infer("echo", _echo_inputs(1.0), request_id="before")
    bad = grpcclient.InferInput("nope", [1, 2], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 2), dtype=np.float32))
    client.async_stream_infer("echo", [bad], request_id="bad")
    client.async_stream_infer("no_such_model", _echo_inputs(1.0), request_id="lost")
    client.async_stream_infer("echo", _echo_inputs(2.0), request_id="after")
    got = _collect(results, 4)
    client.stop_stream()
    answered = sorted(r.get_response().id for r, e in got if e is None)
    errors = sorted(str(e) for _, e in got if e is not None)
    assert answered == ["after", "before"]
    assert len(errors) == 2
    assert errors[0].startswith("[request id: bad]") and "nope" in errors[0], errors
    assert errors[1].startswith("[request id: lost]") and "no_such_model" in errors[1], errors


def test_a_decoupled_model_streams_each_response_then_the_empty_final_one(
    client: grpcclient.InferenceServerClient,
) -> None:
    results = _start(client)
    client.async_stream_infer(
        "repeat",
        _repeat_inputs([4, 2, 0, 1], 20),
        request_id="rep",
        enable_empty_final_response=True,
    )
    got = _collect(results, 5)
    client.stop_stream()
    assert all(e is None for _, e in got), got
    responses = [r for r, _ in got]
    assert [r.get_response().id for r in responses] == ["rep"] * 5
    assert [int(r.as_numpy("OUT")[0]) for r in responses[:4]] == [4, 2, 0, 1]
    assert [int(r.as_numpy("IDX")[0]) for r in responses[:4]] == [0, 1, 2, 3]
    assert [_final(r) for r in responses] == [False, False, False, False, True]
    last = responses[4].get_response()
    assert list(last.outputs) == [] and last.model_name == "repeat" and last.model_version == "1"


def test_a_decoupled_model_without_the_flag_sends_only_its_responses(
    client: grpcclient.InferenceServerClient,
) -> None:
    results = _start(client)
    client.async_stream_infer("repeat", _repeat_inputs([7, 8, 9], 0), request_id="a")
    client.async_stream_infer("repeat", _repeat_inputs([1], 0), request_id="b")
    client.stop_stream()
    got = _collect(results, 4, timeout=1)
    assert results.empty()
    values = sorted((r.get_response().id, int(r.as_numpy("OUT")[0])) for r, _ in got)
    assert values == [("a", 7), ("a", 8), ("a", 9), ("b", 1)]
    assert all(_final(r) is None for r, _ in got)


def test_an_ordinary_model_with_the_flag_marks_its_one_response_final(
    client: grpcclient.InferenceServerClient,
) -> None:
    results = _start(client)
    client.async_stream_infer(
        "echo", _echo_inputs(3.0), request_id="one", enable_empty_final_response=True
    )
    client.stop_stream()
    ((result, error),) = _collect(results, 1, timeout=1)
    assert error is None and _final(result) is True
    assert results.empty()


def test_a_decoupled_model_refuses_unary_infer(
    client: grpcclient.InferenceServerClient, stream_server: ServerProcess
) -> None:
    with pytest.raises(InferenceServerException, match="decoupled transaction policy"):
        client.infer("repeat", _repeat_inputs([1], 0))
    body = {
        "inputs": [
            {"name": "IN", "datatype": "INT32", "shape": [1], "data": [1]},
            {"name": "DELAY", "datatype": "UINT32", "shape": [1], "data": [0]},
            {"name": "WAIT", "datatype": "UINT32", "shape": [1], "data": [0]},
        ]
    }
    response = httpx.post(f"{stream_server.base_url}/v2/models/repeat/infer", json=body, timeout=10)
    assert response.status_code == 400
    assert "decoupled transaction policy" in response.json()["error"]


def test_the_aio_client_streams(stream_server: ServerProcess) -> None:
    """The aio client cannot ask for the final flag (it sends no triton_ parameter); its
    iterator ends when the server ends the stream, after the last answer."""

    async def run() -> list[Result]:
        async with aioclient.InferenceServerClient(stream_server.grpc_url) as aio:

            async def requests() -> AsyncIterator[dict[str, Any]]:
                for i in range(5):
                    yield {
                        "model_name": "repeat",
                        "inputs": _repeat_inputs([i, i + 10], 5, module=aioclient),
                        "request_id": f"aio{i}",
                    }
                yield {"model_name": "echo", "inputs": _echo_inputs(1.0, aioclient)}

            return [item async for item in aio.stream_infer(requests())]

    got = asyncio.run(run())
    assert all(e is None for _, e in got), got
    repeats = sorted(
        (r.get_response().id, int(r.as_numpy("IDX")[0]), int(r.as_numpy("OUT")[0]))
        for r, _ in got
        if r.get_response().model_name == "repeat"
    )
    assert repeats == sorted((f"aio{i}", k, i + 10 * k) for i in range(5) for k in range(2))
    assert [r.get_response().model_name for r, _ in got].count("echo") == 1


def _stream_cancellations(server: ServerProcess) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if (
            line.startswith("inferbridge_frontend_requests_total{")
            and f'route="{_STREAM}"' in line
            and 'code="CANCELLED"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_cancels_mid_stream_stops_the_work(
    client: grpcclient.InferenceServerClient, stream_server: ServerProcess, log_file: Path
) -> None:
    before = _closed(log_file)
    cancelled = _stream_cancellations(stream_server)
    results = _start(client)
    client.async_stream_infer("repeat", _repeat_inputs(list(range(100)), 100), request_id="long")
    result, error = results.get(timeout=10)
    assert error is None and int(result.as_numpy("IDX")[0]) == 0
    client.stop_stream(cancel_requests=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        closed = log_file.read_text().count("closed") if log_file.exists() else 0
        if closed > before and _stream_cancellations(stream_server) > cancelled:
            break
        time.sleep(0.05)
    assert log_file.read_text().count("closed") == before + 1  # the runtime was stopped
    assert _stream_cancellations(stream_server) == cancelled + 1  # one stream, cancelled
    # and the server still serves streams
    results = _start(client)
    client.async_stream_infer("echo", _echo_inputs(5.0), request_id="later")
    client.stop_stream()
    ((result, error),) = _collect(results, 1)
    assert error is None and result.get_response().id == "later"


def test_a_stream_deadline_ends_the_stream_and_its_work(
    stream_server: ServerProcess, log_file: Path
) -> None:
    before = _closed(log_file)
    client = grpcclient.InferenceServerClient(stream_server.grpc_url)
    results: queue.Queue[Result] = queue.Queue()
    client.start_stream(
        callback=lambda result, error: results.put((result, error)), stream_timeout=1.0
    )
    try:
        client.async_stream_infer("repeat", _repeat_inputs(list(range(100)), 100))
        deadline = time.monotonic() + 10
        error = None
        while error is None and time.monotonic() < deadline:
            _, error = results.get(timeout=10)
        # At the deadline grpc-go's server resets the stream (RST_STREAM CANCEL); a client
        # whose own timer has not fired yet reports that as CANCELLED, not DEADLINE_EXCEEDED.
        assert error is not None, "the stream outlived its deadline"
        assert str(error.status()) in ("StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")
    finally:
        client.stop_stream()
        client.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _closed(log_file) == before:
        time.sleep(0.05)
    assert _closed(log_file) == before + 1
