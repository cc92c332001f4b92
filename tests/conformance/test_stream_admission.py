"""Admission of the requests inside a ModelStreamInfer stream, on both front ends: a model
whose queue is full refuses a stream's request with `error_message` (the stream goes on),
as it refuses a unary call, and a unary call finds the queue that a stream's requests
fill. The Go gateway's LIMITS table counts unary calls only; the stream's requests are
admitted by the Python process, before their tensors are decoded."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.serverproc import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 6


@pytest.fixture(scope="module", params=["gateway", "python"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("stream-admission")
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "config.yaml").write_text(
        "runtime: tests.support.runtimes:SleepEcho\nmax_batch_size: 1\n"
        "dynamic_batching: {max_queue_size: 1}\nparameters: {sleep_s: 3.0}\n"
    )
    (root / "llm" / "1").mkdir(parents=True)
    (root / "llm" / "config.yaml").write_text(
        "runtime: tests.support.runtimes:MockLLM\nmax_batch_size: 1\n"
        "dynamic_batching: {max_queue_size: 1}\nparameters: {repetition: 2, delay_s: 1.5}\n"
    )
    frontends = () if request.param == "gateway" else ("--grpc-frontend", "grpcio")
    proc = start_server(root, *frontends, env={"PYTHONPATH": str(ROOT)})
    yield proc
    proc.stop()


def _x(value: float) -> list[Any]:
    tensor = grpcclient.InferInput("x", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.float32))
    return [tensor]


def test_a_full_queue_refuses_stream_requests_and_unary_calls(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for i in range(REQUESTS):
            client.async_stream_infer("slow", _x(float(i)), request_id=f"r{i}")
        answered, refused = [], []
        first_refusal = True
        while len(answered) + len(refused) < REQUESTS:
            result, error = results.get(timeout=60)
            if error is None:
                answered.append(result.get_response().id)
                continue
            refused.append(str(error))
            if first_refusal:
                # The queue is full now (one running, one queued): a unary call is refused too.
                first_refusal = False
                with pytest.raises(InferenceServerException) as info:
                    client.infer("slow", _x(-1.0))
                assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
                assert "max_queue_size 1" in info.value.message()
    finally:
        client.stop_stream()
        client.close()
    # At most one running and one queued at once; the rest refused, each with its id.
    assert 1 <= len(answered) <= REQUESTS - 1 and refused, (answered, refused)
    assert all("[request id: r" in text and "max_queue_size 1" in text for text in refused)


def _prompt(text: str) -> list[Any]:
    prompt = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    stream = grpcclient.InferInput("STREAM", [1, 1], "BOOL")
    stream.set_data_from_numpy(np.array([[True]]))
    return [prompt, stream]


def test_a_bounded_decoupled_model_refuses_requests_past_its_bound(server: ServerProcess) -> None:
    # A decoupled request runs at once on a worker thread (it has no queue): a model with
    # max_queue_size 1 and one instance takes two at once, as a batching model would hold
    # one running and one queued.
    client = grpcclient.InferenceServerClient(server.grpc_url)
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for i in range(REQUESTS):
            client.async_stream_infer("llm", _prompt(f"p{i}"), request_id=f"d{i}")
        answered: set[str] = set()
        refused: list[str] = []
        # An admitted request answers twice, a refused one once (its error).
        while len(refused) + len(answered) < REQUESTS:
            result, error = results.get(timeout=60)
            if error is not None:
                refused.append(str(error))
            else:
                answered.add(result.get_response().id)
    finally:
        client.stop_stream()
        client.close()
    assert 1 <= len(answered) <= 2 and len(refused) == REQUESTS - len(answered), (
        answered,
        refused,
    )
    assert all("[request id: d" in text and "max_queue_size 1" in text for text in refused)
