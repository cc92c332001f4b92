"""The pool gateway routes by model across real servers, answers what no upstream serves
itself, and is transparent to tritonclient over REST and gRPC."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.gateway.conftest import upstream
from tests.gateway.procs import Gateway, gateway_config, infer_body, start_gateway
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(
    server_a: ServerProcess, server_b: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = start_gateway(
        gateway_config([upstream("a", server_a), upstream("b", server_b)]),
        tmp_path_factory.mktemp("gw"),
    )
    yield gw
    gw.stop()


def test_a_model_goes_only_to_the_upstreams_serving_it(gateway: Gateway) -> None:
    before = gateway.metric("inferbridge_gateway_upstream_requests_total", upstream="b")
    for i in range(6):
        r = httpx.post(f"{gateway.base}/v2/models/only_a/infer", json=infer_body(i), timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [i, i]
    assert gateway.metric("inferbridge_gateway_upstream_requests_total", upstream="b") == before
    for i in range(20):
        r = httpx.post(f"{gateway.base}/v2/models/echo/infer", json=infer_body(i), timeout=30)
        assert r.status_code == 200, r.text
    # Both serve echo: with p2c both get some of 20 requests.
    assert gateway.metric("inferbridge_gateway_upstream_requests_total", upstream="b") > before


def test_unknown_model_is_404_and_not_found(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.base}/v2/models/nope/infer", json=infer_body(), timeout=30)
    assert r.status_code == 404
    assert "nope" in r.json()["error"]
    r = httpx.get(f"{gateway.base}/v2/models/echo/versions/7", timeout=30)
    assert r.status_code == 404
    with grpc.insecure_channel(gateway.grpc) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as raised:
            call(b"\x0a\x04nope", timeout=30)  # ModelMetadataRequest{name: "nope"}
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_index_and_health_are_the_gateways_view(gateway: Gateway) -> None:
    index = httpx.post(f"{gateway.base}/v2/repository/index", timeout=30).json()
    names = {entry["name"] for entry in index}
    assert {"echo", "only_a", "slow"} <= names
    assert all(entry["state"] == "READY" for entry in index)
    assert httpx.get(f"{gateway.base}/v2/health/ready", timeout=30).status_code == 200
    assert httpx.get(f"{gateway.base}/v2/health/live", timeout=30).status_code == 200
    metadata = httpx.get(f"{gateway.base}/v2/models/only_a", timeout=30).json()
    assert metadata["name"] == "only_a"


def test_the_admin_endpoint_lists_upstreams(gateway: Gateway) -> None:
    ups = gateway.upstreams()
    assert set(ups) == {"a", "b"}
    assert set(ups["a"]["models"]) == {"echo", "only_a"}
    assert ups["a"]["models"]["echo"] == ["1"]
    for u in ups.values():
        assert u["healthy"] and u["routable"] and u["breaker"] == "closed"
        assert "ewma_latency_ms" in u and "outstanding" in u


def test_metrics_name_upstreams(gateway: Gateway) -> None:
    httpx.post(f"{gateway.base}/v2/models/echo/infer", json=infer_body(), timeout=30)
    text = httpx.get(f"{gateway.base}/metrics", timeout=30).text
    for family in (
        "inferbridge_gateway_upstream_requests_total",
        "inferbridge_gateway_upstream_request_duration_seconds_bucket",
        "inferbridge_gateway_upstream_breaker_state",
        "inferbridge_gateway_upstream_healthy",
        "inferbridge_gateway_upstream_inflight_requests",
        "inferbridge_gateway_requests_total",
    ):
        assert family in text, family


def test_tritonclient_http_unchanged(gateway: Gateway) -> None:
    client = triton_http.InferenceServerClient(gateway.http)
    assert client.is_server_ready()
    assert client.is_model_ready("echo")
    for binary in (True, False):
        x = triton_http.InferInput("x", [2, 3], "FP32")
        data = np.arange(6, dtype=np.float32).reshape(2, 3)
        x.set_data_from_numpy(data, binary_data=binary)
        out = triton_http.InferRequestedOutput("y", binary_data=binary)
        result = client.infer("echo", [x], outputs=[out])
        np.testing.assert_array_equal(result.as_numpy("y"), data)
    with pytest.raises(InferenceServerException):
        client.infer("nope", [x])
    assert client.get_model_metadata("only_a")["name"] == "only_a"


def test_tritonclient_grpc_unchanged(gateway: Gateway) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("only_a")
    assert not client.is_model_ready("nope")
    x = triton_grpc.InferInput("x", [2, 3], "FP32")
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    x.set_data_from_numpy(data)
    result = client.infer(
        "only_a", [x], headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    )
    np.testing.assert_array_equal(result.as_numpy("y"), data)
    assert client.get_model_metadata("echo").name == "echo"
    index = client.get_model_repository_index()
    assert {m.name for m in index.models} >= {"echo", "only_a"}
    with pytest.raises(InferenceServerException) as raised:
        client.infer("nope", [x])
    assert "NOT_FOUND" in str(raised.value.status())


def test_grpc_deadline_is_answered_in_time(gateway: Gateway) -> None:
    """The client's deadline is the upstream call's: a slow model answers DEADLINE_EXCEEDED
    at the deadline rather than after its 3 s."""
    client = triton_grpc.InferenceServerClient(gateway.grpc)
    x = triton_grpc.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    with pytest.raises(InferenceServerException) as raised:
        client.infer("slow", [x], client_timeout=0.5)
    assert "DEADLINE_EXCEEDED" in str(raised.value.status())


def test_a_versioned_request_routes_by_version(gateway: Gateway) -> None:
    r = httpx.post(
        f"{gateway.base}/v2/models/only_a/versions/1/infer", json=infer_body(3), timeout=30
    )
    assert r.status_code == 200, r.text


def test_model_stream_infer_is_relayed(gateway: Gateway) -> None:
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    client = triton_grpc.InferenceServerClient(gateway.grpc)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    for i in range(5):
        x = triton_grpc.InferInput("x", [1, 2], "FP32")
        x.set_data_from_numpy(np.full((1, 2), float(i), dtype=np.float32))
        client.async_stream_infer("only_a", [x], request_id=f"r{i}")
    client.stop_stream()  # half-closes, then waits for every answer
    seen = {}
    while not results.empty():
        result, error = results.get()
        assert error is None, error
        seen[result.get_response().id] = result.as_numpy("y")[0, 0]  # type: ignore[attr-defined]
    assert seen == {f"r{i}": float(i) for i in range(5)}


@pytest.fixture(scope="module")
def grpc_only_gateway(
    server_a: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = start_gateway(
        gateway_config([{"name": "g", "grpc": server_a.grpc_url}]),
        tmp_path_factory.mktemp("gw-grpc-only"),
    )
    yield gw
    gw.stop()


def test_rest_is_translated_for_a_grpc_only_upstream(grpc_only_gateway: Gateway) -> None:
    gw = grpc_only_gateway
    assert gw.upstreams()["g"]["models"]  # discovered over gRPC RepositoryIndex
    body = infer_body(2.5, timeout_us=5_000_000)
    body["id"] = "req-1"
    r = httpx.post(f"{gw.base}/v2/models/only_a/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model_name"] == "only_a" and answer["id"] == "req-1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["y"]["data"] == [2.5, 2.5] and outputs["y"]["shape"] == [1, 2]
    assert outputs["y_batch"]["datatype"] == "INT64"
    client = triton_http.InferenceServerClient(gw.http)
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    for binary in (True, False):
        x = triton_http.InferInput("x", [2, 3], "FP32")
        x.set_data_from_numpy(data, binary_data=binary)
        out = triton_http.InferRequestedOutput("y", binary_data=binary)
        np.testing.assert_array_equal(client.infer("echo", [x], outputs=[out]).as_numpy("y"), data)
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": ["no"]}]}
    r = httpx.post(f"{gw.base}/v2/models/echo/infer", json=bad, timeout=30)
    assert r.status_code == 400 and "FP32" in r.json()["error"]
