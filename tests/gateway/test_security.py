"""The pool gateway's security (docs/security.md, docs/gateway.md "Security"): its
listeners speak TLS (mutual TLS, in request and require modes), an `auth:` keys file
decides every request (401, 403, 429) before any upstream sees it (the upstream's own
statistics tell), and the upstreams are reached over mutual TLS with the pool's key."""

from __future__ import annotations

import hashlib
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from tests.gateway.pki import CA, Pair, TLSRelay, client_context
from tests.gateway.procs import Gateway, echo_repository, infer_body, start_gateway, wait_for
from tests.serverproc import ServerProcess, start_server

pytestmark = pytest.mark.slow

KEYS = {"sk-pay": "payments", "sk-ops": "ops", "sk-all": "all", "sk-meter": "metered"}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Setup:
    ca: CA
    batch: Pair  # a client certificate whose CN is the keys file's subject batch.internal
    stranger: Pair  # a client certificate of the CA that no keys-file entry names
    server: ServerProcess  # the real upstream, plaintext (checked directly for statistics)
    rest_relay: TLSRelay  # mutual TLS in front of its REST port
    grpc_relay: TLSRelay  # ... and of its gRPC port
    gateway: Gateway
    directory: Path

    @property
    def base(self) -> str:
        return f"https://{self.gateway.http}"

    def client(self, pair: Pair | None = None) -> httpx.Client:
        return httpx.Client(verify=client_context(self.ca, pair), timeout=30)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("security")
    ca = CA(directory)
    listener = ca.issue("gateway.listener", server=True)
    upstream_server = ca.issue("upstream.server", server=True)
    gateway_client = ca.issue("gateway", server=False)
    batch = ca.issue("batch.internal", server=False)
    stranger = ca.issue("stranger", server=False)
    (directory / "keys.yaml").write_text(
        "keys:\n"
        f"  - {{name: payments, sha256: {_digest('sk-pay')}, scopes: ['infer:fraud-*', read]}}\n"
        f"  - {{name: ops, sha256: {_digest('sk-ops')}, scopes: [read]}}\n"
        f"  - {{name: all, sha256: {_digest('sk-all')}, scopes: [admin]}}\n"
        f"  - {{name: metered, sha256: {_digest('sk-meter')}, scopes: ['infer:*'],"
        " rate: {per_second: 0.001, burst: 1}}\n"
        "  - {name: batch, subject: batch.internal, scopes: ['infer:*', read]}\n"
    )
    (directory / "upstream.key").write_text("sk-upstream\n")
    repo = echo_repository(
        tmp_path_factory.mktemp("repo"), {"echo": "", "fraud-check": "", "limited": ""}
    )
    server = start_server(repo)
    rest_relay = TLSRelay.start(server.http_url, ca, upstream_server)
    grpc_relay = TLSRelay.start(server.grpc_url, ca, upstream_server)
    config = f"""
listen:
  http: 127.0.0.1:0
  grpc: 127.0.0.1:0
  tls: {{cert: {listener.cert}, key: {listener.key}, client_ca: {ca.cert}, client_auth: request}}
auth:
  keys: {directory / "keys.yaml"}
  rate_limits: [{{model: limited, per_second: 0.001, burst: 2}}]
upstreams:
  - name: a
    rest: https://{rest_relay.address}
    grpc: {grpc_relay.address}
    tls:
      ca: {ca.cert}
      cert: {gateway_client.cert}
      key: {gateway_client.key}
      server_name: upstream.test
    api_key_file: upstream.key
discovery: {{interval: 200ms}}
# Lenient checks: a loaded machine slows the relay's handshakes, which must not eject it.
health: {{interval: 500ms, timeout: 10s, unhealthy_after: 5, healthy_after: 1}}
"""
    gateway = start_gateway(config, directory)
    s = Setup(ca, batch, stranger, server, rest_relay, grpc_relay, gateway, directory)
    try:
        with s.client(batch) as c:  # discovery over the relays has found the models
            _wait_routable(c, s.base)
        yield s
    finally:
        gateway.stop()
        rest_relay.stop()
        grpc_relay.stop()
        server.stop()


def _wait_routable(client: httpx.Client, base: str) -> None:
    wait_for(
        lambda: client.get(f"{base}/v2/health/ready").status_code == 200,
        what="the gateway to reach its upstream over TLS",
    )


def _count(server: ServerProcess, model: str) -> int:
    """Requests the upstream itself has seen for model (its statistics, read directly)."""
    r = httpx.get(f"{server.base_url}/v2/models/{model}/stats", timeout=30)
    r.raise_for_status()
    stats: dict[str, Any] = r.json()["model_stats"][0]["inference_stats"]
    return sum(int(stats.get(k, {}).get("count", 0) or 0) for k in ("success", "fail"))


def _infer(client: httpx.Client, base: str, model: str, **headers: str) -> httpx.Response:
    return client.post(f"{base}/v2/models/{model}/infer", json=infer_body(), headers=headers)


def test_refused_rest_requests_never_reach_the_upstream(setup: Setup) -> None:
    before = _count(setup.server, "echo")
    with setup.client() as c:
        r = _infer(c, setup.base, "echo")
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == 'Bearer realm="inferbridge"'
        assert "authentication required" in r.json()["error"]

        r = _infer(c, setup.base, "echo", **{"x-api-key": "sk-wrong"})
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="inferbridge", error="invalid_token"'
        assert "sk-wrong" not in r.text

        r = _infer(c, setup.base, "echo", **{"x-api-key": "sk-pay"})
        assert r.status_code == 403
        assert r.json() == {
            "error": "principal 'payments' may not infer on model 'echo' "
            "(its scopes: infer:fraud-*, read)"
        }
        # A read-only key may not change the repository.
        r = c.post(
            f"{setup.base}/v2/repository/models/echo/unload", headers={"x-api-key": "sk-ops"}
        )
        assert r.status_code == 403 and "admin" in r.json()["error"]
    assert _count(setup.server, "echo") == before

    fraud_before = _count(setup.server, "fraud-check")
    with setup.client() as c:
        r = _infer(c, setup.base, "fraud-check", authorization="Bearer sk-pay")
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [1.0, 1.0]
    assert _count(setup.server, "fraud-check") == fraud_before + 1


def test_health_is_open_and_the_gateway_s_own_endpoints_need_read(setup: Setup) -> None:
    with setup.client() as c:
        assert c.get(f"{setup.base}/v2/health/live").status_code == 200
        assert c.get(f"{setup.base}/v1/gateway/upstreams").status_code == 401
        assert c.get(f"{setup.base}/metrics").status_code == 401
        r = c.get(f"{setup.base}/v1/gateway/upstreams", headers={"x-api-key": "sk-ops"})
        assert r.status_code == 200 and r.json()["upstreams"][0]["routable"]
        metrics = c.get(f"{setup.base}/metrics", headers={"x-api-key": "sk-ops"}).text
    refused = [
        line
        for line in metrics.splitlines()
        if line.startswith("inferbridge_gateway_rejected_total")
        and 'reason="unauthenticated"' in line
    ]
    assert refused, "refusals are counted in inferbridge_gateway_rejected_total"


def test_a_client_certificate_is_a_principal(setup: Setup) -> None:
    before = _count(setup.server, "echo")
    with setup.client(setup.batch) as c:
        r = _infer(c, setup.base, "echo")
        assert r.status_code == 200, r.text
    with setup.client(setup.stranger) as c:
        r = _infer(c, setup.base, "echo")
        assert r.status_code == 401
        assert "'stranger' is not a principal" in r.json()["error"]
        # Another credential beside the certificate decides.
        assert _infer(c, setup.base, "echo", **{"x-api-key": "sk-all"}).status_code == 200
    assert _count(setup.server, "echo") == before + 2


def test_rate_limits_answer_429_with_retry_after(setup: Setup) -> None:
    before = _count(setup.server, "limited")
    with setup.client() as c:
        for _ in range(2):
            assert _infer(c, setup.base, "limited", **{"x-api-key": "sk-all"}).status_code == 200
        r = _infer(c, setup.base, "limited", **{"x-api-key": "sk-all"})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert "model 'limited' is over its rate limit" in r.json()["error"]

        assert _infer(c, setup.base, "echo", **{"x-api-key": "sk-meter"}).status_code == 200
        r = _infer(c, setup.base, "echo", **{"x-api-key": "sk-meter"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "principal 'metered' is over its rate limit" in r.json()["error"]
    assert _count(setup.server, "limited") == before + 2


def _grpc_client(setup: Setup, pair: Pair | None) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(
        setup.gateway.grpc,
        ssl=True,
        root_certificates=str(setup.ca.cert),
        private_key=str(pair.key) if pair else None,
        certificate_chain=str(pair.cert) if pair else None,
    )


def _grpc_infer(
    client: triton_grpc.InferenceServerClient, model: str, headers: dict[str, str] | None = None
) -> Any:
    tensor = triton_grpc.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 2), np.float32))
    return client.infer(model, [tensor], headers=headers)


def test_grpc_over_tls_is_refused_the_same_way(setup: Setup) -> None:
    before = _count(setup.server, "echo")
    anonymous = _grpc_client(setup, None)
    try:
        assert anonymous.is_server_live()  # health is open
        with pytest.raises(InferenceServerException) as info:
            _grpc_infer(anonymous, "echo")
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as info:
            _grpc_infer(anonymous, "echo", {"x-api-key": "sk-pay"})
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
        assert "principal 'payments' may not infer on model 'echo'" in info.value.message()
    finally:
        anonymous.close()
    assert _count(setup.server, "echo") == before

    batch = _grpc_client(setup, setup.batch)
    try:
        result = _grpc_infer(batch, "echo")
        assert result.as_numpy("y").tolist() == [[1.0, 1.0]]
    finally:
        batch.close()
    assert _count(setup.server, "echo") == before + 1


def test_upstreams_are_reached_over_mutual_tls_with_the_pool_s_key(setup: Setup) -> None:
    with setup.client() as c:
        assert _infer(c, setup.base, "fraud-check", **{"x-api-key": "sk-pay"}).status_code == 200
    rest_peers, rest_refused, rest_bytes = setup.rest_relay.snapshot()
    grpc_peers, _, _ = setup.grpc_relay.snapshot()
    # Every connection that got through presented the gateway's certificate (a handshake
    # cut short by a loaded machine's timeouts counts as refused, so that is not asserted).
    assert rest_peers and set(rest_peers) == {"gateway"}, (rest_peers, rest_refused)
    assert grpc_peers and set(grpc_peers) == {"gateway"}, grpc_peers  # discovery, health
    # api_key_file: the upstream gets the pool's key, never the client's.
    assert b"X-Api-Key: sk-upstream\r\n" in rest_bytes
    assert b"sk-pay" not in rest_bytes and b"sk-all" not in rest_bytes


def test_the_listener_refuses_plaintext_and_unknown_cas(setup: Setup) -> None:
    # Go's TLS server answers a plaintext request 400 without serving it.
    r = httpx.get(f"http://{setup.gateway.http}/v2/health/live", timeout=10)
    assert r.status_code == 400 and "HTTPS server" in r.text
    other = CA(setup.directory, "another CA")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{setup.base}/v2/health/live", verify=client_context(other), timeout=10)


def _served_name(setup: Setup, address: str) -> str:
    """The common name of the certificate a new TLS connection to address is served."""
    host, _, port = address.rpartition(":")
    context = client_context(setup.ca, setup.stranger)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        cert = tls.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for attribute in rdn:
            if attribute[0] == "commonName":
                return str(attribute[1])
    return ""


def test_require_mode_and_a_rotated_certificate(setup: Setup, tmp_path: Path) -> None:
    listener = setup.ca.issue("gateway.require", server=True)
    config = f"""
listen:
  http: 127.0.0.1:0
  grpc: 127.0.0.1:0
  tls: {{cert: {listener.cert}, key: {listener.key}, client_ca: {setup.ca.cert}}}
upstreams: [{{name: a, rest: '{setup.server.base_url}'}}]
"""
    gateway = start_gateway(config, tmp_path)
    try:
        base = f"https://{gateway.http}"
        with setup.client() as c, pytest.raises(httpx.HTTPError):
            c.get(f"{base}/v2/health/live")
        with setup.client(setup.stranger) as c:
            assert c.get(f"{base}/v2/health/live").status_code == 200

        # The pair is re-read when it changes: a new connection gets the new certificate.
        assert _served_name(setup, gateway.http) == "gateway.require"
        rotated = setup.ca.issue("gateway.rotated", server=True)
        listener.key.write_bytes(rotated.key.read_bytes())
        listener.cert.write_bytes(rotated.cert.read_bytes())
        wait_for(
            lambda: _served_name(setup, gateway.http) == "gateway.rotated",
            30,
            "the listener to serve the rotated certificate",
        )
        with setup.client(setup.stranger) as c:
            assert c.get(f"{base}/v2/health/live").status_code == 200
    finally:
        gateway.stop()
    # Loopback only: no warning about authentication being off; the reload is logged.
    assert not any("warning:" in line for line in gateway.lines), gateway.lines
    assert any("TLS: reloaded certificate" in line for line in gateway.lines), gateway.lines


@dataclass
class SecureServer:
    """A real `inferbridge serve` with TLS (mutual) and an API keys file."""

    process: subprocess.Popen[str]
    rest: str
    grpc: str
    lines: list[str]
    reader: threading.Thread | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.reader is not None:
            self.reader.join(10)


def _start_secure_server(repository: Path, *args: str) -> SecureServer:
    command = [sys.executable, "-m", "inferbridge", "serve", str(repository)]
    process = subprocess.Popen(
        [*command, "--http-port", "0", "--grpc-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = SecureServer(process, "", "", [])

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.lines.append(line.rstrip("\n"))
        process.stdout.close()

    server.reader = threading.Thread(target=pump, daemon=True)
    server.reader.start()

    def serving() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {server.lines}")
        for line in server.lines:
            if m := re.search(r"REST listening on https://(\S+)", line):
                server.rest = m.group(1)
            if m := re.search(r"gRPC listening on (\S+)", line):
                server.grpc = m.group(1)
        return any("inferbridge: serving" in line for line in server.lines)

    try:
        wait_for(serving, 240, "the TLS server to serve")  # the first start builds the Go gateway
    except AssertionError:
        server.stop()
        raise
    return server


def test_an_authenticating_tls_upstream_gets_the_pool_s_certificate_and_key(
    setup: Setup, tmp_path: Path
) -> None:
    ca = setup.ca
    upstream_pair = ca.issue("secure.upstream", server=True)
    gateway_client = ca.issue("gateway.client", server=False)
    (tmp_path / "keys.yaml").write_text(
        "keys:\n"
        f"  - {{name: pool, sha256: {_digest('sk-pool')}, scopes: [read, 'infer:*']}}\n"
        f"  - {{name: reader, sha256: {_digest('sk-reader')}, scopes: [read]}}\n"
    )
    (tmp_path / "pool.key").write_text("sk-pool\n")
    (tmp_path / "repo").mkdir()
    repo = echo_repository(tmp_path / "repo", {"echo": ""})
    server = _start_secure_server(
        repo,
        *("--tls-cert", str(upstream_pair.cert), "--tls-key", str(upstream_pair.key)),
        *("--tls-client-ca", str(ca.cert), "--auth-keys", str(tmp_path / "keys.yaml")),
    )
    direct = httpx.Client(verify=client_context(ca, gateway_client), timeout=30)
    try:
        stats = f"https://{server.rest}/v2/models/echo/stats"
        assert direct.get(stats).status_code == 401  # the upstream checks credentials itself

        def served() -> int:
            r = direct.get(stats, headers={"x-api-key": "sk-reader"})
            r.raise_for_status()
            s: dict[str, Any] = r.json()["model_stats"][0]["inference_stats"]
            return int(s.get("success", {}).get("count", 0) or 0)

        config = f"""
listen: {{http: 127.0.0.1:0, grpc: 127.0.0.1:0}}
upstreams:
  - name: secure
    rest: https://{server.rest}
    grpc: {server.grpc}
    tls: {{ca: {ca.cert}, cert: {gateway_client.cert}, key: {gateway_client.key}}}
    api_key_file: pool.key
discovery: {{interval: 200ms}}
"""
        gateway = start_gateway(config, tmp_path)
        try:
            wait_for(
                lambda: httpx.get(f"{gateway.base}/v2/health/ready", timeout=10).status_code == 200,
                what="discovery over TLS with the pool's key",
            )
            before = served()
            r = httpx.post(f"{gateway.base}/v2/models/echo/infer", json=infer_body(), timeout=30)
            assert r.status_code == 200, r.text
            client = triton_grpc.InferenceServerClient(gateway.grpc)
            try:
                assert _grpc_infer(client, "echo").as_numpy("y").tolist() == [[1.0, 1.0]]
            finally:
                client.close()
            assert served() == before + 2
        finally:
            gateway.stop()
    finally:
        direct.close()
        server.stop()
