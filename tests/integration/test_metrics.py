"""GET /metrics on real servers (the Go gateway and the Python front ends), read exactly
with prometheus_client's parser and through a real Prometheus server."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

from tests.integration.observed import (
    FAIL_VALUE,
    PYTHON_FRONTENDS,
    Samples,
    infer_body,
    scrape,
    small_repository,
    start,
    value,
)
from tests.serverproc import ServerProcess

_INFER_ROUTE = "/v2/models/{model}/infer"
_GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
_ECHO = {"model": "echo", "version": "1"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_repository(tmp_path_factory.mktemp("metrics-repo"))


@pytest.fixture(scope="module")
def servers(repository: Path) -> Iterator[dict[str, ServerProcess]]:
    """Both front ends, each with a separate metrics port too."""
    started = {
        "gateway": start(repository, "--metrics-port", "0"),
        "python": start(repository, "--metrics-port", "0", *PYTHON_FRONTENDS),
    }
    yield started
    for proc in started.values():
        proc.stop()


@pytest.fixture(scope="module", params=["gateway", "python"])
def frontend(request: pytest.FixtureRequest, servers: dict[str, ServerProcess]) -> str:
    return str(request.param)


def _metrics_port(proc: ServerProcess) -> int:
    for line in proc.output:
        if "metrics listening on http://" in line:
            return int(line.rsplit(":", 1)[1])
    raise AssertionError("no metrics port line:\n" + "\n".join(proc.output))


def _grpc_infers(proc: ServerProcess, count: int) -> None:
    client = grpcclient.InferenceServerClient(proc.grpc_url)
    data = np.ones((1, 2), np.float32)
    tensor = grpcclient.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(data)
    for _ in range(count):
        client.infer("echo", [tensor])
    client.close()


def test_exact_counts_after_known_traffic(servers: dict[str, ServerProcess], frontend: str) -> None:
    proc = servers[frontend]
    url = f"{proc.base_url}/metrics"
    _, before = scrape(url)
    with httpx.Client(base_url=proc.base_url, timeout=10) as client:
        for _ in range(5):
            assert client.post("/v2/models/echo/infer", json=infer_body()).status_code == 200
        assert client.post("/v2/models/echo/infer", json=infer_body(rows=3)).status_code == 200
        failed = client.post("/v2/models/echo/infer", json=infer_body(FAIL_VALUE))
        assert failed.status_code == 500
        bad = client.post("/v2/models/echo/infer", json={"inputs": [{"name": "nope"}]})
        assert bad.status_code == 400
    _grpc_infers(proc, 3)
    text, after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("inferbridge_request_success_total", **_ECHO) == 9
    assert delta("inferbridge_request_failure_total", **_ECHO, reason="backend") == 1
    assert delta("inferbridge_inference_count_total", **_ECHO) == 11  # rows: 5 + 3 + 3
    assert delta("inferbridge_execution_count_total", **_ECHO) == 10  # the failed batch too
    # Histograms: every request observed once, +Inf bucket equal to the count.
    requests = delta("inferbridge_request_duration_seconds_count", **_ECHO)
    assert requests == delta("inferbridge_request_duration_seconds_bucket", **_ECHO, le="+Inf")
    assert requests >= 10
    assert delta("inferbridge_batch_size_count", **_ECHO) == 9  # successful batches
    assert delta("inferbridge_batch_size_bucket", **_ECHO, le="2.0") == 8
    assert delta("inferbridge_batch_size_bucket", **_ECHO, le="4.0") == 9
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert delta(f"inferbridge_{stage}_duration_seconds_count", **_ECHO) >= 9, stage
    for state in ("loading", "ready", "unavailable", "draining"):
        expected = 1.0 if state == "ready" else 0.0
        assert value(after, "inferbridge_model_state", **_ECHO, state=state) == expected
    assert value(after, "inferbridge_pending_requests", **_ECHO) == 0
    # The front end, whichever serves: same names and labels.
    http = {"protocol": "http", "route": _INFER_ROUTE}
    assert delta("inferbridge_frontend_requests_total", **http, code="200") == 6
    assert delta("inferbridge_frontend_requests_total", **http, code="500") == 1
    assert delta("inferbridge_frontend_requests_total", **http, code="400") == 1
    grpc_ok = {"protocol": "grpc", "route": _GRPC_INFER, "code": "OK"}
    assert delta("inferbridge_frontend_requests_total", **grpc_ok) == 3
    assert delta("inferbridge_frontend_request_bytes_total", protocol="http") > 0
    assert delta("inferbridge_frontend_response_bytes_total", protocol="grpc") > 0
    assert delta("inferbridge_frontend_request_duration_seconds_count", protocol="grpc") == 3
    # Process metrics of Python; of Go too when the gateway serves.
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_open_fds") > 0
    assert ("python_gc_collections_total", frozenset({("generation", "0")})) in after
    if frontend == "gateway":
        assert value(after, "go_goroutines") > 0
    _assert_no_family_twice(text)


def _assert_no_family_twice(text: str) -> None:
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)


def test_the_metrics_port_serves_the_same_metrics(
    servers: dict[str, ServerProcess], frontend: str
) -> None:
    proc = servers[frontend]
    port = _metrics_port(proc)
    text, samples = scrape(f"http://127.0.0.1:{port}/metrics")
    _assert_no_family_twice(text)
    assert ("inferbridge_model_state", frozenset({**_ECHO, "state": "ready"}.items())) in samples
    assert any(name.startswith("inferbridge_frontend_requests") for name, _ in samples)
    assert httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=10).status_code == 404


def test_the_gateways_refusals_are_in_the_same_scrape(servers: dict[str, ServerProcess]) -> None:
    """A burst beyond `slow`'s bound (queue 2 + 1 instance): the gateway answers five 429s
    itself, which Python never sees; /metrics counts them anyway."""
    proc = servers["gateway"]
    _, before = scrape(f"{proc.base_url}/metrics")

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=30) as client:
            responses = await asyncio.gather(
                *(client.post("/v2/models/slow/infer", json=infer_body()) for _ in range(8))
            )
        return [r.status_code for r in responses]

    codes = asyncio.run(burst())
    assert sorted(codes) == [200] * 3 + [429] * 5
    _, after = scrape(f"{proc.base_url}/metrics")
    refused = {"protocol": "http", "model": "slow", "reason": "queue_full"}
    name = "inferbridge_frontend_rejected_total"
    assert value(after, name, **refused) - value(before, name, **refused) == 5
    route = {"protocol": "http", "route": _INFER_ROUTE, "code": "429"}
    name = "inferbridge_frontend_requests_total"
    assert value(after, name, **route) - value(before, name, **route) == 5
    # They never reached the model: its own counters saw only the three served.
    slow = {"model": "slow", "version": "1"}
    name = "inferbridge_request_success_total"
    assert value(after, name, **slow) - value(before, name, **slow) == 3


def test_grpc_refusals_by_the_python_front_end_are_counted(
    servers: dict[str, ServerProcess],
) -> None:
    proc = servers["python"]
    _, before = scrape(f"{proc.base_url}/metrics")
    request = service_pb2.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())

    async def burst() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(proc.grpc_url) as channel:
            call = channel.unary_unary(
                _GRPC_INFER, request_serializer=service_pb2.ModelInferRequest.SerializeToString
            )

            async def one() -> grpc.StatusCode:
                try:
                    await call(request, timeout=30)
                except grpc.aio.AioRpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

            return list(await asyncio.gather(*(one() for _ in range(8))))

    codes = asyncio.run(burst())
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert refused + codes.count(grpc.StatusCode.OK) == 8 and refused > 0, codes
    _, after = scrape(f"{proc.base_url}/metrics")
    labels = {"protocol": "grpc", "model": "slow", "reason": "queue_full"}
    name = "inferbridge_frontend_rejected_total"
    assert value(after, name, **labels) - value(before, name, **labels) == refused
    labels = {"model": "slow", "version": "1", "reason": "rejected"}
    name = "inferbridge_request_failure_total"
    assert value(after, name, **labels) - value(before, name, **labels) == refused


# -- a real Prometheus ---------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def prometheus(
    servers: dict[str, ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Prometheus scraping the gateway server's REST port and the Python server's metrics
    port every second; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (apt-get install -y prometheus)")
    work = tmp_path_factory.mktemp("prometheus")
    port = _free_port()
    gateway = servers["gateway"].http_port
    python = _metrics_port(servers["python"])
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: gateway\n    static_configs: [{{targets: ['127.0.0.1:{gateway}']}}]\n"
        f"  - job_name: python\n    static_configs: [{{targets: ['127.0.0.1:{python}']}}]\n"
    )
    with (work / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(30)


Result = list[dict[str, Any]]


def _query_until(
    base: str, query: str, done: Callable[[Result], bool], timeout: float = 60
) -> Result:
    """Poll Prometheus' query API until `done(result)` holds (it scrapes every second)."""
    deadline = time.monotonic() + timeout
    result: Result = []
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5)
        except httpx.TransportError:
            answer = None
        if answer is not None and answer.status_code == 200:
            result = answer.json()["data"]["result"]
            if done(result):
                return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never had {query!r} as expected; last result: {result}")


def _by_job(result: Result) -> dict[str, float]:
    return {r["metric"]["job"]: float(r["value"][1]) for r in result}


def test_a_real_prometheus_scrapes_both_front_ends(
    servers: dict[str, ServerProcess], prometheus: str
) -> None:
    totals: dict[str, Samples] = {}
    for name, proc in servers.items():
        with httpx.Client(base_url=proc.base_url, timeout=10) as client:
            for _ in range(4):
                assert client.post("/v2/models/echo/infer", json=infer_body()).status_code == 200
        totals[name] = scrape(f"{proc.base_url}/metrics")[1]
    jobs = {"gateway": "gateway", "python": "python"}

    def caught_up(name: str, **labels: str) -> Callable[[Result], bool]:
        def check(result: Result) -> bool:
            seen = _by_job(result)
            return all(
                seen.get(job, -1) >= value(totals[server], name, **labels)
                for server, job in jobs.items()
            )

        return check

    success = 'inferbridge_request_success_total{model="echo",version="1"}'
    result = _query_until(
        prometheus, success, caught_up("inferbridge_request_success_total", **_ECHO)
    )
    assert set(_by_job(result)) == {"gateway", "python"}
    assert min(_by_job(result).values()) >= 4
    bucket = 'inferbridge_request_duration_seconds_bucket{model="echo",version="1",le="+Inf"}'
    _query_until(
        prometheus,
        bucket,
        caught_up("inferbridge_request_duration_seconds_bucket", **_ECHO, le="+Inf"),
    )
    frontend = (
        'inferbridge_frontend_requests_total{protocol="http",'
        'route="/v2/models/{model}/infer",code="200"}'
    )
    labels = {"protocol": "http", "route": _INFER_ROUTE, "code": "200"}
    _query_until(prometheus, frontend, caught_up("inferbridge_frontend_requests_total", **labels))
    # A rate over the histogram works too: Prometheus sees real buckets.
    quantile = (
        "histogram_quantile(0.5, sum by (le, job) "
        '(inferbridge_request_duration_seconds_bucket{model="echo"}))'
    )
    result = _query_until(prometheus, quantile, lambda r: len(r) == 2)
    assert all(float(r["value"][1]) > 0 for r in result)


def test_gateway_grpc_with_uvicorn_rest_counts_each_protocol_once(repository: Path) -> None:
    """The gateway serves gRPC and counts it; uvicorn serves REST and Python counts it: one
    family each in the scrape, HTTP samples from Python, gRPC ones from Go."""
    proc = start(repository, "--rest-frontend", "uvicorn")
    try:
        assert any("gRPC served by the Go gateway" in line for line in proc.output)
        with httpx.Client(base_url=proc.base_url, timeout=10) as client:
            for _ in range(2):
                assert client.post("/v2/models/echo/infer", json=infer_body()).status_code == 200
        _grpc_infers(proc, 3)
        text, samples = scrape(f"{proc.base_url}/metrics")
    finally:
        proc.stop()
    _assert_no_family_twice(text)
    http = {"protocol": "http", "route": _INFER_ROUTE, "code": "200"}
    assert value(samples, "inferbridge_frontend_requests_total", **http) == 2
    grpc_ok = {"protocol": "grpc", "route": _GRPC_INFER, "code": "OK"}
    assert value(samples, "inferbridge_frontend_requests_total", **grpc_ok) == 3
    count = "inferbridge_frontend_request_duration_seconds_count"
    assert value(samples, count, protocol="grpc") == 3
    assert value(samples, count, protocol="http") >= 2  # the scrape itself may be counted
    assert value(samples, "inferbridge_frontend_connections_total", protocol="http") >= 1
    assert value(samples, "go_goroutines") > 0
