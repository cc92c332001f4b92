"""The pool gateway under faults, with real servers and the fault proxy
(benchmarks/faults): failover on SIGKILL, breakers opening and recovering, retries
bounded by budget and deadline, deadlines and cancellation reaching the upstream,
admission."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from tests.gateway.conftest import upstream
from tests.gateway.procs import (
    echo_repository,
    gateway_config,
    infer_body,
    start_faults,
    start_gateway,
    wait_for,
)
from tests.serverproc import ServerProcess, start_server

pytestmark = pytest.mark.slow

# Only passive signals: active checks through the fault proxy would fail with it.
NO_ACTIVE_CHECKS = "health: {interval: 1h}\n"


def _infer(base: str, model: str = "echo", **body: object) -> httpx.Response:
    return httpx.post(f"{base}/v2/models/{model}/infer", json=infer_body(**body), timeout=60)  # type: ignore[arg-type]


def test_failover_when_an_upstream_is_killed(server_b: ServerProcess, tmp_path: Path) -> None:
    victim = start_server(echo_repository(tmp_path / "repo", {"echo": ""}))
    gw = start_gateway(
        gateway_config(
            [upstream("victim", victim), upstream("b", server_b)],
            "health: {interval: 1h}\nbalancer: round-robin\n",
        ),
        tmp_path,
    )
    try:
        for i in range(4):
            assert _infer(gw.base, value=i).status_code == 200
        victim.stop(signal.SIGKILL)
        # No active check has noticed: every request that picks the dead upstream fails
        # to connect and is retried on b, over gRPC and REST.
        client = triton_grpc.InferenceServerClient(gw.grpc)
        for i in range(10):
            x = triton_grpc.InferInput("x", [1, 2], "FP32")
            x.set_data_from_numpy(np.full((1, 2), float(i), dtype=np.float32))
            assert client.infer("echo", [x]).as_numpy("y")[0, 0] == i
        statuses = [_infer(gw.base, value=i).status_code for i in range(20)]
        assert statuses == [200] * 20
        assert gw.metric("inferbridge_gateway_retries_total", reason="connect-failure") > 0
        # Passive ejection takes it out of rotation (5 consecutive failures by default).
        assert wait_for(
            lambda: _infer(gw.base).status_code == 200 and gw.upstreams()["victim"]["ejected"],
            what="the killed upstream ejected",
        )
    finally:
        gw.stop()
        victim.stop(signal.SIGKILL)


def test_no_failures_when_an_upstream_is_killed_under_concurrent_load(
    server_a: ServerProcess, server_b: ServerProcess, tmp_path: Path
) -> None:
    # The victim's model sleeps, and round-robin keeps sending to it, so that when it is
    # killed many requests are on it at once: more resets in one burst than the retry
    # budget's floor of 3 concurrent retries. Those retries wait for a slot instead of
    # failing.
    victim = start_server(
        echo_repository(tmp_path / "repo", {"echo": "parameters: {sleep_s: 0.05}\n"})
    )
    gw = start_gateway(
        gateway_config(
            [upstream("victim", victim), upstream("a", server_a), upstream("b", server_b)],
            "health: {interval: 1h}\nbalancer: round-robin\n",
        ),
        tmp_path,
    )
    statuses: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=gw.base, timeout=60) as http:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = http.post("/v2/models/echo/infer", json=infer_body(value=n * 1000 + i))
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(statuses) >= 200, what="200 answers before the kill")
        victim.stop(signal.SIGKILL)
        before = len(statuses)
        wait_for(lambda: len(statuses) >= before + 400, what="400 answers after the kill")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        try:
            assert errors == []
            assert set(statuses) == {200}
            assert gw.metric("inferbridge_gateway_retries_total") > 0
            # Most of the 16 clients sit on the slow victim, so the burst outgrew the
            # budget and retries waited for a slot (13 of 16 in a run here).
            assert gw.metric("inferbridge_gateway_retry_budget_waits_total") > 0
        finally:
            gw.stop()
            victim.stop(signal.SIGKILL)


def test_breaker_opens_and_recovers_half_open(server_a: ServerProcess, tmp_path: Path) -> None:
    proxy = start_faults(server_a.http_url)
    gw = start_gateway(
        gateway_config(
            [{"name": "flaky", "rest": proxy.url}],
            NO_ACTIVE_CHECKS
            + "breaker: {consecutive_failures: 3, open_for: 1s}\n"
            + "outlier: {consecutive_failures: 0}\nretries: {attempts: 1}\n",
        ),
        tmp_path,
    )
    try:
        assert _infer(gw.base).status_code == 200
        proxy.set(error_rate=1.0)
        assert [_infer(gw.base).status_code for _ in range(3)] == [503] * 3
        assert gw.upstreams()["flaky"]["breaker"] == "open"
        reached = len(proxy.requests())
        # Open: refused at the gateway, at once, without reaching the upstream.
        r = _infer(gw.base)
        assert r.status_code == 503 and "no upstream" in r.json()["error"]
        assert r.headers["retry-after"]
        assert len(proxy.requests()) == reached
        proxy.set(error_rate=0.0)
        # After open_for one probe goes through; it succeeds and closes the breaker.
        wait_for(lambda: _infer(gw.base).status_code == 200, what="a half-open probe")
        assert gw.upstreams()["flaky"]["breaker"] == "closed"
        assert gw.metric("inferbridge_gateway_upstream_breaker_state", upstream="flaky") == 0
    finally:
        gw.stop()
        proxy.stop()


def test_retries_go_elsewhere_within_the_budget(
    server_a: ServerProcess, server_b: ServerProcess, tmp_path: Path
) -> None:
    proxy = start_faults(server_a.http_url)
    ups = [{"name": "bad", "rest": proxy.url}, upstream("good", server_b)]
    common = NO_ACTIVE_CHECKS + "balancer: round-robin\noutlier: {consecutive_failures: 0}\n"
    common += "breaker: {consecutive_failures: 0, failure_rate: 0}\n"
    gw = start_gateway(gateway_config(ups, common), tmp_path)
    proxy.set(error_rate=1.0)  # after the first discovery, which went through
    try:
        assert [_infer(gw.base, value=i).status_code for i in range(10)] == [200] * 10
        assert gw.metric("inferbridge_gateway_retries_total", reason="503") >= 4
        assert gw.upstreams()["bad"]["models"]  # what it served before is kept
    finally:
        gw.stop()
    # A spent budget: no retries at all, so the requests that pick `bad` fail.
    (tmp_path / "nobudget").mkdir()
    proxy.set(error_rate=0.0)
    gw = start_gateway(
        gateway_config(
            ups, common + "retries: {budget_percent: 0, min_retries: 0, budget_wait: 100ms}\n"
        ),
        tmp_path / "nobudget",
    )
    proxy.set(error_rate=1.0)
    try:
        statuses = [_infer(gw.base, value=i).status_code for i in range(10)]
        assert statuses.count(503) >= 4 and statuses.count(200) >= 4
        assert gw.metric("inferbridge_gateway_retries_total") == 0
        assert gw.metric("inferbridge_gateway_retries_refused_total", why="budget") >= 4
    finally:
        gw.stop()
        proxy.stop()


def test_retries_stop_at_the_deadline(server_a: ServerProcess, tmp_path: Path) -> None:
    slow = [start_faults(server_a.http_url) for _ in range(3)]
    ups = [{"name": f"slow{i}", "rest": p.url} for i, p in enumerate(slow)]
    extra = NO_ACTIVE_CHECKS + "outlier: {consecutive_failures: 0}\n"
    extra += "retries: {attempts: 3, backoff_base: 1ms, backoff_max: 2ms}\n"
    gw = start_gateway(gateway_config(ups, extra), tmp_path)
    for p in slow:
        p.set(delay_s=0.4, error_rate=1.0)
    try:
        r = _infer(gw.base, timeout_us=600_000)
        # Each attempt takes 400 ms: the second starts, the deadline ends it, no third.
        assert r.status_code in (503, 504), r.text
        attempts = [e for p in slow for e in p.requests()]
        assert 1 <= len(attempts) <= 2
        # The time left is passed on: never more than the client's 600 ms.
        assert all(0 < e["timeout"] <= 600_000 for e in attempts)
    finally:
        gw.stop()
        for p in slow:
            p.stop()


def test_deadline_and_trace_reach_the_upstream(server_a: ServerProcess, tmp_path: Path) -> None:
    proxy = start_faults(server_a.http_url)
    gw = start_gateway(
        gateway_config(
            [{"name": "p", "rest": proxy.url}], NO_ACTIVE_CHECKS + "timeouts: {default: 7s}\n"
        ),
        tmp_path,
    )
    try:
        trace = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
        r = httpx.post(
            f"{gw.base}/v2/models/echo/infer",
            json=infer_body(timeout_us=5_000_000),
            headers={"traceparent": trace},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert _infer(gw.base).status_code == 200  # no timeout: the default's
        first, second = proxy.requests()[-2:]
        assert 0 < first["timeout"] <= 5_000_000
        assert first["traceparent"] == trace
        assert 5_000_000 < second["timeout"] <= 7_000_000
    finally:
        gw.stop()
        proxy.stop()


def test_client_cancellation_reaches_the_upstream(server_a: ServerProcess, tmp_path: Path) -> None:
    proxy = start_faults(server_a.http_url)
    gw = start_gateway(
        gateway_config([{"name": "p", "rest": proxy.url}], NO_ACTIVE_CHECKS), tmp_path
    )
    proxy.set(delay_s=30.0)
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{gw.base}/v2/models/echo/infer", json=infer_body(), timeout=0.5)
        # The client gave up: the gateway closes its upstream request long before 30 s.
        wait_for(
            lambda: any(e.get("client_closed") and "/infer" in e["path"] for e in proxy.log()),
            timeout=20,
            what="the upstream seeing the cancellation",
        )
    finally:
        gw.stop()
        proxy.stop()


def test_admission_refuses_before_forwarding(server_a: ServerProcess, tmp_path: Path) -> None:
    proxy = start_faults(server_a.http_url)
    gw = start_gateway(
        gateway_config(
            [{"name": "p", "rest": proxy.url}],
            NO_ACTIVE_CHECKS + "admission: {models: {echo: 1}}\n",
        ),
        tmp_path,
    )
    proxy.set(delay_s=2.0)
    try:
        holder = threading.Thread(
            target=lambda: httpx.post(
                f"{gw.base}/v2/models/echo/infer", json=infer_body(), timeout=3
            ),
            daemon=True,
        )
        holder.start()
        wait_for(lambda: len(proxy.requests()) == 1, what="the first request in flight")
        r = _infer(gw.base)
        assert r.status_code == 429 and r.headers["retry-after"]
        assert len(proxy.requests()) == 1
        # Another model is not limited.
        assert _infer(gw.base, "only_a").status_code != 429
        holder.join(30)
    finally:
        gw.stop()
        proxy.stop()


def test_no_upstream_left_is_503_at_once(tmp_path: Path) -> None:
    lone = start_server(echo_repository(tmp_path / "repo", {"lone": ""}))
    gw = start_gateway(gateway_config([upstream("lone", lone)]), tmp_path)
    try:
        assert _infer(gw.base, "lone").status_code == 200
        lone.stop(signal.SIGKILL)
        wait_for(lambda: not gw.upstreams()["lone"]["healthy"], what="the health check noticing")
        r = _infer(gw.base, "lone")
        assert r.status_code == 503  # served before, known: unavailable, not unknown
        assert httpx.get(f"{gw.base}/v2/health/ready", timeout=30).status_code == 503
    finally:
        gw.stop()


def test_grpc_through_the_tcp_fault_proxy(server_a: ServerProcess, tmp_path: Path) -> None:
    """The proxy's tcp mode relays gRPC (HTTP/2) untouched."""
    proxy = start_faults(server_a.grpc_url, "--mode", "tcp", "--delay", "10ms")
    gw = start_gateway(gateway_config([{"name": "g", "grpc": proxy.address}]), tmp_path)
    try:
        assert gw.upstreams()["g"]["models"]  # discovered through the proxy
        client = triton_grpc.InferenceServerClient(gw.grpc)
        x = triton_grpc.InferInput("x", [1, 2], "FP32")
        x.set_data_from_numpy(np.full((1, 2), 4.0, dtype=np.float32))
        assert client.infer("echo", [x]).as_numpy("y")[0, 0] == 4.0
    finally:
        gw.stop()
        proxy.stop()
