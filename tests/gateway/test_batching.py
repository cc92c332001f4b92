"""Batch aggregation at the gateway: concurrent requests for a batched model reach a
non-batching upstream model as one request (its y_batch output reports the rows it
saw), and each client gets its own rows back, over REST and gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from tests.gateway.conftest import upstream
from tests.gateway.procs import Gateway, gateway_config, infer_body, start_gateway
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.slow

# Flushed when 4 rows are queued: the size, not the (long) delay, makes each batch (idle
# dispatch off, so that the first request waits for the others too).
BATCHING = (
    "batching: {models: {echo: {max_batch_size: 4, max_queue_delay: 30s, idle_dispatch: false}}}\n"
)
# Idle dispatch (the default): a lone request leaves at once, not after its 30 s delay.
IDLE = "batching: {models: {echo: {max_batch_size: 4, max_queue_delay: 30s}}}\n"


@pytest.fixture(scope="module")
def gateway(server_a: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(
        gateway_config([upstream("a", server_a)]) + BATCHING, tmp_path_factory.mktemp("gw")
    )
    yield gw
    gw.stop()


def test_rest_requests_are_merged_and_split(gateway: Gateway) -> None:
    def call(i: int) -> dict[str, object]:
        r = httpx.post(f"{gateway.base}/v2/models/echo/infer", json=infer_body(i), timeout=60)
        assert r.status_code == 200, r.text
        answer: dict[str, object] = r.json()
        return answer

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(call, range(4)))
    for i, answer in enumerate(answers):
        outputs = {o["name"]: o for o in answer["outputs"]}  # type: ignore[attr-defined]
        assert outputs["y"]["data"] == [i, i] and outputs["y"]["shape"] == [1, 2]
        assert outputs["y_batch"]["data"] == [4]  # the upstream saw one batch of 4
    assert gateway.metric("inferbridge_gateway_batch_size_sum", model="echo") >= 4


def test_grpc_requests_are_merged_and_split(gateway: Gateway) -> None:
    def call(i: int) -> np.ndarray:  # type: ignore[type-arg]
        client = triton_grpc.InferenceServerClient(gateway.grpc)
        x = triton_grpc.InferInput("x", [2, 3], "FP32")
        x.set_data_from_numpy(np.full((2, 3), float(i), dtype=np.float32))
        result = client.infer("echo", [x], request_id=f"g{i}")
        assert result.get_response().id == f"g{i}"
        assert list(result.as_numpy("y_batch")) == [4, 4]
        y: np.ndarray = result.as_numpy("y")  # type: ignore[type-arg]
        return y

    with ThreadPoolExecutor(2) as pool:
        for i, y in enumerate(pool.map(call, range(2))):
            np.testing.assert_array_equal(y, np.full((2, 3), float(i), dtype=np.float32))


def test_an_unbatched_model_passes_through(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.base}/v2/models/only_a/infer", json=infer_body(7), timeout=60)
    assert r.status_code == 200
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["y_batch"]["data"] == [1]


def test_idle_dispatch_sends_a_lone_request_at_once(
    server_b: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gw = start_gateway(
        gateway_config([upstream("b", server_b)]) + IDLE, tmp_path_factory.mktemp("gw-idle")
    )
    try:
        # The queue delay is 30 s: an answer within the 10 s timeout left without waiting.
        for i in range(3):
            r = httpx.post(f"{gw.base}/v2/models/echo/infer", json=infer_body(i), timeout=10)
            assert r.status_code == 200, r.text
            outputs = {o["name"]: o for o in r.json()["outputs"]}
            assert outputs["y_batch"]["data"] == [1] and outputs["y"]["data"] == [i, i]
        assert gw.metric("inferbridge_gateway_batch_size_count", model="echo") == 3
    finally:
        gw.stop()
