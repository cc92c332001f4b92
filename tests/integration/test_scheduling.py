"""Scheduling through a real server: batches form under concurrent load, 429 backpressure,
deadlines (REST `timeout`, gRPC deadlines), disconnect/cancel removes queued work, warm-up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.serverproc import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = "tests.support.runtimes:SleepEcho"


def _model(root: Path, name: str, config: str) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.yaml").write_text(f"runtime: {RUNTIME}\n{config}")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def sched_server(tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("sched")
    _model(
        root,
        "batched",
        "max_batch_size: 16\ndynamic_batching: {max_queue_delay_ms: 100}\n"
        "parameters: {sleep_s: 0.05}\n",
    )
    _model(
        root,
        "bounded",
        "max_batch_size: 1\ndynamic_batching: {max_queue_size: 1}\nparameters: {sleep_s: 0.6}\n",
    )
    _model(root, "slow", f"parameters: {{sleep_s: 0.8, log_file: {logs / 'slow.log'}}}\n")
    _model(
        root,
        "defaulted",
        "max_batch_size: 4\ndynamic_batching: {default_timeout_ms: 100}\n"
        "parameters: {sleep_s: 1.0}\n",
    )
    _model(
        root,
        "warm",
        "max_batch_size: 8\nwarmup: true\n"
        "dynamic_batching: {preferred_batch_sizes: [2, 4]}\n"
        f"parameters: {{log_file: {logs / 'warm.log'}}}\n",
    )
    _model(
        root,
        "failing",
        "max_batch_size: 8\ndynamic_batching: {max_queue_delay_ms: 100}\n"
        "parameters: {fail_on: 13}\n",
    )
    server = start_server(root, env={"PYTHONPATH": str(ROOT)})
    yield server
    server.stop()


def _body(value: float, **parameters: object) -> dict[str, object]:
    body: dict[str, object] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [value, value]}]
    }
    if parameters:
        body["parameters"] = parameters
    return body


async def _concurrently(base_url: str, model: str, values: list[float]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return list(
            await asyncio.gather(
                *(client.post(f"/v2/models/{model}/infer", json=_body(v)) for v in values)
            )
        )


def _log_values(path: Path, event: str = "start") -> list[float]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [float(v) for row in rows if row[0] == event for v in row[1:]]


def test_batches_form_under_concurrent_load(sched_server: ServerProcess) -> None:
    values = [float(i) for i in range(16)]
    responses = asyncio.run(_concurrently(sched_server.base_url, "batched", values))
    batch_sizes = []
    for value, response in zip(values, responses, strict=True):
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        assert outputs["y"] == [value, value]  # each caller gets its own rows back
        batch_sizes.append(outputs["y_batch"][0])
    assert max(batch_sizes) > 1


def test_a_failure_reaches_every_caller_of_its_batch(sched_server: ServerProcess) -> None:
    responses = asyncio.run(
        _concurrently(sched_server.base_url, "failing", [11.0, 12.0, 13.0, 14.0])
    )
    failed = [r for r in responses if r.status_code == 500]
    assert failed and all("input contains 13" in r.json()["error"] for r in failed)
    # whoever shared 13's batch failed with it; anyone else succeeded
    assert {r.status_code for r in responses} <= {200, 500}


def test_a_full_queue_answers_429_and_resource_exhausted(sched_server: ServerProcess) -> None:
    responses = asyncio.run(_concurrently(sched_server.base_url, "bounded", [1.0, 2.0, 3.0, 4.0]))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(429) >= 1 and codes.count(200) >= 2
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert "queue is full" in refused.json()["error"]

    async def grpc_burst() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(sched_server.grpc_url) as channel:
            stub = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                response_deserializer=service_pb2.ModelInferResponse.FromString,
            )

            async def one(value: float) -> grpc.StatusCode:
                request = service_pb2.ModelInferRequest(model_name="bounded")
                request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
                request.raw_input_contents.append(np.full((1, 2), value, np.float32).tobytes())
                try:
                    await stub(request)
                except grpc.aio.AioRpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

            return list(await asyncio.gather(*(one(float(v)) for v in range(4))))

    codes_grpc = asyncio.run(grpc_burst())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes_grpc
    assert grpc.StatusCode.OK in codes_grpc


def test_rest_timeout_parameter_answers_504_at_once(
    sched_server: ServerProcess, logs: Path
) -> None:
    response = httpx.post(
        f"{sched_server.base_url}/v2/models/slow/infer",
        json=_body(1.0, timeout=100_000),
        timeout=30,
    )
    assert response.status_code == 504
    assert "deadline exceeded" in response.json()["error"]
    # answered while the model was still running it, not when the execution ended
    assert 1.0 in _log_values(logs / "slow.log", "start")
    assert 1.0 not in _log_values(logs / "slow.log", "end")


def test_default_timeout_from_config(sched_server: ServerProcess) -> None:
    response = httpx.post(
        f"{sched_server.base_url}/v2/models/defaulted/infer", json=_body(1.0), timeout=30
    )
    assert response.status_code == 504


def test_grpc_deadline(sched_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(sched_server.grpc_url)
    try:
        tensor = grpcclient.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 2), np.float32))
        with pytest.raises(InferenceServerException) as info:
            client.infer("slow", [tensor], client_timeout=0.1)
        # At the deadline grpc-go's server resets the stream (RST_STREAM CANCEL, code 8): a
        # client whose own timer has not fired yet reports CANCELLED for the same deadline.
        text = str(info.value)
        assert "Deadline" in text or "DEADLINE" in text or "RST_STREAM with error code 8" in text
    finally:
        client.close()


def test_queued_work_never_runs_after_its_deadline_disconnect_or_cancel(
    sched_server: ServerProcess, logs: Path
) -> None:
    log = logs / "slow.log"
    holder = threading.Thread(
        target=lambda: httpx.post(
            f"{sched_server.base_url}/v2/models/slow/infer", json=_body(100.0), timeout=30
        )
    )
    holder.start()
    time.sleep(0.2)  # the holder is executing; everything below queues behind it
    expired = httpx.post(
        f"{sched_server.base_url}/v2/models/slow/infer",
        json=_body(201.0, timeout=50_000),
        timeout=30,
    )
    assert expired.status_code == 504
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and disconnects
        httpx.post(f"{sched_server.base_url}/v2/models/slow/infer", json=_body(202.0), timeout=0.2)
    with grpc.insecure_channel(sched_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="slow")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        request.raw_input_contents.append(np.full((1, 2), 203.0, np.float32).tobytes())
        call = stub.ModelInfer.future(request)
        time.sleep(0.1)
        call.cancel()
    holder.join()
    # something after them still runs, and proves the queue has drained past them
    after = httpx.post(
        f"{sched_server.base_url}/v2/models/slow/infer", json=_body(300.0), timeout=30
    )
    assert after.status_code == 200
    ran = _log_values(log)
    assert 100.0 in ran and 300.0 in ran
    assert not {201.0, 202.0, 203.0} & set(ran)


def test_warm_up_runs_preferred_batch_sizes_before_ready(
    sched_server: ServerProcess, logs: Path
) -> None:
    lines = (logs / "warm.log").read_text().splitlines()
    assert [len(line.split()) - 1 for line in lines[:4:2]] == [2, 4]
    response = httpx.post(
        f"{sched_server.base_url}/v2/models/warm/infer", json=_body(5.0), timeout=30
    )
    assert response.status_code == 200


def test_priority_parameter_is_validated(sched_server: ServerProcess) -> None:
    response = httpx.post(
        f"{sched_server.base_url}/v2/models/batched/infer",
        json=_body(1.0, priority="high"),
        timeout=30,
    )
    assert response.status_code == 400
    assert "priority" in response.json()["error"]
