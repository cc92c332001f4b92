"""Authentication, scopes and rate limits end to end (docs/security.md): one table of
requests, each sent over REST and over gRPC, against real servers on both front ends (the
Go front-end process, and uvicorn + grpc.aio), with the answer each must get. Then what a
table row cannot show: a keys-file reload, the buckets, and the access log.

Each server gets its own keys file, JWT secret and JWKS, written here."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.service_pb2 as triton_pb
import tritonclient.grpc.service_pb2_grpc as triton_grpc

from tests.security.test_auth_units import (
    SECRET,
    Signers,
    hs512_token,
    key_entry,
    keys_yaml,
    none_token,
    write_atomically,
)
from tests.serverproc import ServerProcess, start_server

# One key per principal of the table; the keys are the credentials, never logged.
KEYS = {
    "payments": "k-payments-5f1c2a9e",
    "iris-user": "k-iris-user-77b0d4",
    "reader": "k-reader-0c3e8f",
    "admin": "k-admin-a4d29b",
    "old": "k-old-e1f7c3",
    "slow-http": "k-slow-http-91ab",
    "slow-grpc": "k-slow-grpc-2cd8",
    "later": "k-later-6e0f5d",
}
AUDIENCE, ISSUER = "inferbridge", "https://issuer.test"
IRIS_INPUT = [5.1, 3.5, 1.4, 0.2]
SIGNERS = Signers.make()


def _entries(*, with_later: bool = False) -> list[dict[str, Any]]:
    entries = [
        key_entry("payments", KEYS["payments"], ["infer:fraud-*", "read"]),
        key_entry("iris-user", KEYS["iris-user"], ["infer:iri?"]),
        key_entry("reader", KEYS["reader"], ["read"]),
        key_entry("admin", KEYS["admin"], ["admin"]),
        key_entry("old", KEYS["old"], ["read"], expires="2020-01-01T00:00:00Z"),
        key_entry("slow-http", KEYS["slow-http"], ["infer"], rate={"per_second": 0.1, "burst": 2}),
        key_entry("slow-grpc", KEYS["slow-grpc"], ["infer"], rate={"per_second": 0.1, "burst": 2}),
    ]
    if with_later:
        entries.append(key_entry("later", KEYS["later"], ["read"]))
    return entries


@dataclass
class Secured:
    """A server with authentication on, and the files it reads."""

    server: ServerProcess
    keys_file: Path
    frontend: str


def _repository(root: Path, examples_dir: Path) -> Path:
    """A few copies of the small ONNX iris model, under the names the scopes talk about."""
    import shutil

    repository = root / "models"
    for name in ("iris", "fraud-v1", "metered-http", "metered-grpc"):
        shutil.copytree(examples_dir / "iris_onnx", repository / name)
    return repository


def _frontend_args(frontend: str) -> list[str]:
    if frontend == "gateway":
        return ["--grpc-frontend", "gateway", "--rest-frontend", "gateway"]
    return ["--grpc-frontend", "grpcio", "--rest-frontend", "uvicorn"]


FRONTENDS = ["gateway", "python"]


def _start(root: Path, examples_dir: Path, frontend: str, *extra: str) -> Secured:
    root.mkdir(parents=True, exist_ok=True)
    keys = root / "keys.yaml"
    keys.write_text(keys_yaml(_entries()))
    secret = root / "jwt.secret"
    secret.write_bytes(SECRET + b"\n")
    jwks = root / "jwks.json"
    jwks.write_text(SIGNERS.jwks())
    server = start_server(
        _repository(root, examples_dir),
        *_frontend_args(frontend),
        "--default-model",
        "iris",
        "--auth-keys",
        str(keys),
        "--auth-jwt-hs256-secret-file",
        str(secret),
        "--auth-jwt-jwks",
        str(jwks),
        "--auth-jwt-audience",
        AUDIENCE,
        "--auth-jwt-issuer",
        ISSUER,
        "--rate-limit",
        "metered-*=0.1:2",
        "--access-log",
        "--log-format",
        "json",
        *extra,
        # start_server's readiness probe sends no credential: closed health refuses it.
        wait_ready="--no-auth-open-health" not in extra,
    )
    if "--no-auth-open-health" in extra:
        _until(lambda: any("inferbridge: serving" in line for line in server.output), 120)
    return Secured(server, keys, frontend)


@pytest.fixture(scope="module", params=FRONTENDS)
def secured(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    examples_dir: Path,
) -> Iterator[Secured]:
    frontend: str = request.param
    started = _start(tmp_path_factory.mktemp(f"auth-{frontend}"), examples_dir, frontend)
    yield started
    started.server.stop()


@pytest.fixture(scope="module", params=FRONTENDS)
def closed_health(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    examples_dir: Path,
) -> Iterator[Secured]:
    """The same server with --no-auth-open-health."""
    frontend: str = request.param
    root = tmp_path_factory.mktemp(f"auth-closed-{frontend}")
    started = _start(root, examples_dir, frontend, "--no-auth-open-health")
    yield started
    started.server.stop()


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What came back, in REST's terms or gRPC's."""

    status: int | grpc.StatusCode
    message: str
    headers: dict[str, str] = field(default_factory=dict)  # REST headers, gRPC trailers


def _auth_headers(credential: Credential) -> dict[str, str]:
    if credential is None:
        return {}
    kind, value = credential
    if kind == "key":
        return {"x-api-key": value}
    return {"authorization": f"Bearer {value}"}


def _rest(server: ServerProcess, method: str, path: str, credential: Credential) -> Answer:
    body: Any = None
    if path.endswith("/infer"):
        body = {
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS_INPUT}]
        }
    elif path == "/predict":
        body = {"values": IRIS_INPUT}
    elif method == "POST":
        body = {}
    response = httpx.request(
        method, server.base_url + path, json=body, headers=_auth_headers(credential), timeout=30
    )
    try:
        message = str(response.json().get("error", ""))
    except (ValueError, AttributeError):
        message = ""
    return Answer(response.status_code, message, dict(response.headers))


def _infer_request(model: str) -> triton_pb.ModelInferRequest:
    request = triton_pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input", "FP32"
    tensor.shape.extend([1, 4])
    request.raw_input_contents.append(np.array([IRIS_INPUT], np.float32).tobytes())
    return request


def _predict_bytes(values: list[float]) -> bytes:
    """ai.PredictRequest{values} by hand (tests do not import inferbridge's stubs)."""
    packed = struct.pack(f"<{len(values)}f", *values)
    return b"\x0a" + bytes([len(packed)]) + packed


def _grpc(server: ServerProcess, call: str, model: str, credential: Credential) -> Answer:
    metadata = tuple(_auth_headers(credential).items())
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = triton_grpc.GRPCInferenceServiceStub(channel)
        try:
            if call == "ModelInfer":
                stub.ModelInfer(_infer_request(model), metadata=metadata, timeout=30)
            elif call == "ModelStreamInfer":
                responses = stub.ModelStreamInfer(
                    iter([_infer_request(model)]), metadata=metadata, timeout=30
                )
                for response in responses:
                    assert not response.error_message, response.error_message
            elif call == "Predict":
                predict = channel.unary_unary(
                    "/ai.AIService/Predict",
                    request_serializer=lambda b: b,
                    response_deserializer=lambda b: b,
                )
                predict(_predict_bytes(IRIS_INPUT), metadata=metadata, timeout=30)
            elif call == "ModelMetadata":
                stub.ModelMetadata(triton_pb.ModelMetadataRequest(name=model), metadata=metadata)
            elif call == "ServerReady":
                stub.ServerReady(triton_pb.ServerReadyRequest(), metadata=metadata, timeout=30)
            elif call == "RepositoryIndex":
                stub.RepositoryIndex(triton_pb.RepositoryIndexRequest(), metadata=metadata)
            elif call == "RepositoryModelUnload":
                request = triton_pb.RepositoryModelUnloadRequest(model_name=model)
                stub.RepositoryModelUnload(request, metadata=metadata, timeout=30)
            elif call == "LogSettings":
                stub.LogSettings(triton_pb.LogSettingsRequest(), metadata=metadata, timeout=30)
            else:
                raise AssertionError(call)
        except grpc.RpcError as error:
            trailers = {k: v for k, v in (error.trailing_metadata() or ())}  # type: ignore[attr-defined]
            return Answer(error.code(), error.details() or "", trailers)  # type: ignore[attr-defined]
    return Answer(grpc.StatusCode.OK, "")


Credential = tuple[str, str] | None


def key(name: str) -> Credential:
    return ("key", KEYS[name])


def bearer_key(name: str) -> Credential:
    return ("bearer", KEYS[name])


def token(make: Callable[[], str]) -> Callable[[], Credential]:
    return lambda: ("bearer", make())


def jwt_of(alg: str, **claims: Any) -> Callable[[], Credential]:
    base: dict[str, Any] = {"aud": AUDIENCE, "iss": ISSUER, "scope": "infer:iris read"}
    return token(lambda: SIGNERS.token(alg, **{**base, **claims}))


# --- the table --------------------------------------------------------------------------------

OK, UNAUTH, DENIED = (
    grpc.StatusCode.OK,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)
SCOPE_MESSAGE = (
    "principal 'payments' may not infer on model 'iris' (its scopes: infer:fraud-*, read)"
)


@dataclass(frozen=True)
class Case:
    """One request, over REST (`rest`: method and path) and over gRPC (`grpc`: the call and
    its model), with the credential it carries and the answer it must get."""

    id: str
    credential: Credential | Callable[[], Credential]
    status: int
    message: str = ""
    rest: tuple[str, str] | None = None
    grpc: tuple[str, str] | None = None

    @property
    def code(self) -> grpc.StatusCode:
        return {200: OK, 401: UNAUTH, 403: DENIED}[self.status]


INFER_IRIS = {"rest": ("POST", "/v2/models/iris/infer"), "grpc": ("ModelInfer", "iris")}
PLAIN = 'Bearer realm="inferbridge"'
INVALID = 'Bearer realm="inferbridge", error="invalid_token"'

CASES = [
    Case("no-credential", None, 401, "authentication required", **INFER_IRIS),
    Case(
        "unknown-key",
        ("key", "k-nobody-3f9a"),
        401,
        "the API key is not valid",
        **INFER_IRIS,
    ),
    Case(
        "unknown-bearer-key",
        ("bearer", "k-nobody-3f9a"),
        401,
        "the API key is not valid",
        **INFER_IRIS,
    ),
    Case(
        "expired-key",
        key("old"),
        401,
        "API key 'old' expired at 2020-01-01T00:00:00Z",
        **INFER_IRIS,
    ),
    Case("good-key", key("iris-user"), 200, **INFER_IRIS),
    Case("good-key-as-bearer", bearer_key("iris-user"), 200, **INFER_IRIS),
    Case("scope-missing", key("payments"), 403, SCOPE_MESSAGE, **INFER_IRIS),
    Case(
        "infer-glob",
        key("payments"),
        200,
        rest=("POST", "/v2/models/fraud-v1/infer"),
        grpc=("ModelInfer", "fraud-v1"),
    ),
    Case(
        "stream-glob-refused",
        key("payments"),
        403,
        SCOPE_MESSAGE,
        grpc=("ModelStreamInfer", "iris"),
    ),
    Case("stream-glob", key("payments"), 200, grpc=("ModelStreamInfer", "fraud-v1")),
    Case(
        "stream-no-credential",
        None,
        401,
        "authentication required",
        grpc=("ModelStreamInfer", "iris"),
    ),
    Case(
        "default-model",
        key("payments"),
        403,
        SCOPE_MESSAGE,
        rest=("POST", "/predict"),
        grpc=("Predict", ""),
    ),
    Case(
        "default-model-allowed",
        key("iris-user"),
        200,
        rest=("POST", "/predict"),
        grpc=("Predict", ""),
    ),
    Case(
        "service-default-model",
        key("payments"),
        403,
        "principal 'payments' may not infer on model 'digits_classifier'",
        rest=("POST", "/v1/vision/classify"),
    ),
    Case(
        "service-model-query",
        key("payments"),
        403,
        SCOPE_MESSAGE,
        rest=("POST", "/v1/vision/classify?model=iris"),
    ),
    Case(
        "read",
        key("reader"),
        200,
        rest=("GET", "/v2/models/iris"),
        grpc=("ModelMetadata", "iris"),
    ),
    Case(
        "read-index",
        key("reader"),
        200,
        rest=("POST", "/v2/repository/index"),
        grpc=("RepositoryIndex", ""),
    ),
    Case(
        "read-is-not-infer",
        key("reader"),
        403,
        "principal 'reader' may not infer on model 'iris' (its scopes: read)",
        **INFER_IRIS,
    ),
    Case(
        "read-is-not-admin",
        key("reader"),
        403,
        "principal 'reader' may not change the server (it needs the admin scope) "
        "(its scopes: read)",
        rest=("POST", "/v2/repository/models/iris/unload"),
        grpc=("RepositoryModelUnload", "iris"),
    ),
    Case(
        "admin-changes", key("admin"), 200, rest=("POST", "/v2/logging"), grpc=("LogSettings", "")
    ),
    Case(
        "admin-reads",
        key("admin"),
        200,
        rest=("GET", "/v2/models/iris"),
        grpc=("ModelMetadata", "iris"),
    ),
    Case("admin-infers", key("admin"), 200, **INFER_IRIS),
    Case(
        "infer-is-not-read",
        key("iris-user"),
        403,
        "principal 'iris-user' may not read server or model information",
        rest=("GET", "/metrics"),
        grpc=("ModelMetadata", "iris"),
    ),
    Case("health-open", None, 200, rest=("GET", "/v2/health/ready"), grpc=("ServerReady", "")),
    Case(
        "unknown-route-needs-a-credential",
        None,
        401,
        "authentication required",
        rest=("GET", "/nothing"),
    ),
    Case("jwt-hs256", jwt_of("HS256"), 200, **INFER_IRIS),
    Case("jwt-rs256", jwt_of("RS256"), 200, **INFER_IRIS),
    Case("jwt-es256", jwt_of("ES256"), 200, **INFER_IRIS),
    Case("jwt-scp-list", jwt_of("ES256", scope=None, scp=["infer:iris"]), 200, **INFER_IRIS),
    Case(
        "jwt-scope-missing",
        jwt_of("RS256", scope="read"),
        403,
        "principal 'alice' may not infer on model 'iris' (its scopes: read)",
        **INFER_IRIS,
    ),
    Case(
        "jwt-expired",
        jwt_of("HS256", exp_in=-120),
        401,
        "expired (exp)",
        **INFER_IRIS,
    ),
    Case(
        "jwt-wrong-audience",
        jwt_of("HS256", aud="someone-else"),
        401,
        "audience (aud)",
        **INFER_IRIS,
    ),
    Case(
        "jwt-wrong-issuer",
        jwt_of("RS256", iss="https://evil.test"),
        401,
        "issuer (iss)",
        **INFER_IRIS,
    ),
    Case("jwt-wrong-alg", token(hs512_token), 401, "signing algorithm (alg)", **INFER_IRIS),
    Case("jwt-alg-none", token(none_token), 401, "signing algorithm (alg)", **INFER_IRIS),
    Case(
        "jwt-unknown-signer",
        token(lambda: Signers.make().token("RS256", aud=AUDIENCE, iss=ISSUER)),
        401,
        "signature does not verify",
        **INFER_IRIS,
    ),
]


def _protocol_cases() -> list[Any]:
    params = []
    for case in CASES:
        for protocol in ("rest", "grpc"):
            if getattr(case, protocol) is not None:
                params.append(pytest.param(case, protocol, id=f"{protocol}-{case.id}"))
    return params


def _send(server: ServerProcess, case: Case, protocol: str) -> Answer:
    credential = case.credential() if callable(case.credential) else case.credential
    if protocol == "rest":
        assert case.rest is not None
        return _rest(server, *case.rest, credential)
    assert case.grpc is not None
    call, model = case.grpc
    return _grpc(server, call, model, credential)


@pytest.mark.parametrize(("case", "protocol"), _protocol_cases())
def test_auth_table(secured: Secured, case: Case, protocol: str) -> None:
    answer = _send(secured.server, case, protocol)
    expected: int | grpc.StatusCode = case.status if protocol == "rest" else case.code
    assert answer.status == expected, answer
    assert case.message in answer.message
    if protocol == "rest" and case.status >= 400:
        assert answer.headers.get("content-type") == "application/json"
    if protocol == "rest" and case.status == 401:
        # error="invalid_token" exactly when a credential was sent
        challenge = PLAIN if case.credential is None else INVALID
        assert answer.headers.get("www-authenticate") == challenge
    for secret in KEYS.values():
        assert secret not in answer.message


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_closed_health_needs_read(closed_health: Secured, protocol: str) -> None:
    server = closed_health.server
    if protocol == "rest":
        assert _rest(server, "GET", "/v2/health/live", None).status == 401
        assert _rest(server, "GET", "/v2/health/ready", key("reader")).status == 200
        refused = _rest(server, "GET", "/v2/health/ready", key("iris-user"))
        assert refused.status == 403 and "may not read" in refused.message
    else:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(server.grpc_url) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.RpcError) as refused_check:
                health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert refused_check.value.code() == UNAUTH  # type: ignore[attr-defined]
            answer = health.Check(
                health_pb2.HealthCheckRequest(),
                metadata=(("x-api-key", KEYS["reader"]),),
                timeout=10,
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert _grpc(server, "ServerReady", "", None).status == UNAUTH
        assert _grpc(server, "ServerReady", "", key("reader")).status == OK
        assert _grpc(server, "ServerReady", "", key("iris-user")).status == DENIED


# --- what a row cannot show ---------------------------------------------------------------------


def test_every_stream_message_is_checked(secured: Secured) -> None:
    """A stream whose second message names a model outside the principal's scopes ends
    with PERMISSION_DENIED once the first has been answered."""

    def requests() -> Iterator[triton_pb.ModelInferRequest]:
        yield _infer_request("fraud-v1")
        time.sleep(0.5)  # the first is answered before the second arrives
        yield _infer_request("iris")

    answered = []
    with grpc.insecure_channel(secured.server.grpc_url) as channel:
        stub = triton_grpc.GRPCInferenceServiceStub(channel)
        responses = stub.ModelStreamInfer(
            requests(), metadata=(("x-api-key", KEYS["payments"]),), timeout=30
        )
        with pytest.raises(grpc.RpcError) as refused:
            for response in responses:
                answered.append(response.infer_response.model_name)
    assert refused.value.code() == DENIED  # type: ignore[attr-defined]
    assert SCOPE_MESSAGE in refused.value.details()  # type: ignore[attr-defined]
    assert answered == ["fraud-v1"]


def test_a_credential_sent_twice_is_refused(secured: Secured) -> None:
    """Two Authorization or x-api-key values (even two good ones) are 401 on both front
    ends: neither picks one of them."""
    server, key = secured.server, KEYS["payments"]
    url = server.base_url + "/v2/models/fraud-v1/ready"
    for name in ("authorization", "x-api-key"):
        value = f"Bearer {key}" if name == "authorization" else key
        answer = httpx.get(url, headers=[(name, value), (name, value)])
        assert answer.status_code == 401, answer.text
        assert "more than one" in answer.json()["error"]
        assert key not in answer.text
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = triton_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(_infer_request("fraud-v1"), metadata=((name, value), (name, value)))
        assert refused.value.code() == UNAUTH  # type: ignore[attr-defined]
        assert "more than one" in refused.value.details()  # type: ignore[attr-defined]
    single = httpx.get(url, headers={"x-api-key": key})
    assert single.status_code == 200, single.text


def test_keys_file_reload(secured: Secured) -> None:
    """A key added to the file works within a couple of seconds; a broken file leaves the
    last good one in force (and is logged); removing a key refuses it."""
    server = secured.server
    assert _rest(server, "GET", "/v2/models/iris", key("later")).status == 401
    write_atomically(secured.keys_file, keys_yaml(_entries(with_later=True)))
    _until(lambda: _rest(server, "GET", "/v2/models/iris", key("later")).status == 200)
    assert _grpc(server, "ModelMetadata", "iris", key("later")).status == OK

    write_atomically(secured.keys_file, "keys: [{name: broken}]\n")
    time.sleep(2.2)  # looked at again, refused
    assert _rest(server, "GET", "/v2/models/iris", key("later")).status == 200
    assert any("is not valid" in line and "keys" in line for line in server.output), server.output[
        -5:
    ]

    write_atomically(secured.keys_file, keys_yaml(_entries()))
    _until(lambda: _rest(server, "GET", "/v2/models/iris", key("later")).status == 401)


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time a reload takes"
        time.sleep(0.2)


def test_principal_rate_limit(secured: Secured) -> None:
    """slow-* keys: 0.1 requests/s, burst 2: the third request in a row is refused (a
    token comes back only after 10 s)."""
    server = secured.server
    for _ in range(2):
        assert _rest(server, "POST", "/v2/models/iris/infer", key("slow-http")).status == 200
    refused = _rest(server, "POST", "/v2/models/iris/infer", key("slow-http"))
    assert refused.status == 429
    assert refused.message.startswith("principal 'slow-http' is over its rate limit of 0.1")
    assert 1 <= int(refused.headers["retry-after"]) <= 10

    for _ in range(2):
        assert _grpc(server, "ModelInfer", "iris", key("slow-grpc")).status == OK
    refused = _grpc(server, "ModelInfer", "iris", key("slow-grpc"))
    assert refused.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.message.startswith("principal 'slow-grpc' is over its rate limit")
    assert 1 <= int(refused.headers["retry-after"]) <= 10


def test_model_rate_limit(secured: Secured) -> None:
    """--rate-limit metered-*=0.1:2: one bucket per model, whoever calls."""
    server = secured.server
    assert _rest(server, "POST", "/v2/models/metered-http/infer", key("admin")).status == 200
    assert _rest(server, "POST", "/v2/models/metered-http/infer", key("iris-user")).status == 403
    assert _rest(server, "POST", "/v2/models/metered-http/infer", key("payments")).status == 403
    assert (
        _rest(
            server, "POST", "/v2/models/metered-http/infer", jwt_of("HS256", scope="infer")()
        ).status
        == 200
    )
    refused = _rest(server, "POST", "/v2/models/metered-http/infer", key("admin"))
    assert refused.status == 429, refused
    assert refused.message.startswith("model 'metered-http' is over its rate limit of 0.1")
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    metrics = httpx.get(server.base_url + "/metrics", headers={"x-api-key": KEYS["reader"]})
    assert re.search(
        r'inferbridge_frontend_rejected_total\{[^}]*reason="rate_limit"\} [1-9]',
        metrics.text,
    ), "the refusal is counted as a rate limit, not a full queue"
    # Another model's bucket is its own.
    assert _grpc(server, "ModelInfer", "metered-grpc", key("admin")).status == OK
    assert _grpc(server, "ModelInfer", "metered-grpc", key("admin")).status == OK
    refused = _grpc(server, "ModelInfer", "metered-grpc", key("admin"))
    assert refused.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.message.startswith("model 'metered-grpc' is over its rate limit")
    assert 1 <= int(refused.headers["retry-after"]) <= 10


def test_principal_in_the_access_log_never_the_key(secured: Secured) -> None:
    """Each access-log line names the principal (a client cannot claim one with
    x-inferbridge-principal); no line anywhere holds a key or a token."""
    server = secured.server
    spoof = {"x-inferbridge-principal": "admin"}
    response = httpx.get(
        server.base_url + "/v2/models/iris", headers={"x-api-key": KEYS["reader"], **spoof}
    )
    assert response.status_code == 200
    refused = httpx.get(server.base_url + "/v2/models/fraud-v1/ready", headers=spoof)
    assert refused.status_code == 401
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = triton_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(
            _infer_request("fraud-v1"),
            metadata=(("x-api-key", KEYS["payments"]), ("x-inferbridge-principal", "admin")),
        )
    bearer = SIGNERS.token("ES256", aud=AUDIENCE, iss=ISSUER, scope="read", sub="carol")
    assert (
        httpx.get(
            server.base_url + "/v2", headers={"authorization": f"Bearer {bearer}"}
        ).status_code
        == 200
    )

    def line_of(route: str, status: str, model: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for line in list(server.output):
                if line.startswith("{") and '"inferbridge.access"' in line:
                    record = json.loads(line)
                    if (record["route"], record["status"]) == (route, status) and (
                        model is None or record["model"] == model
                    ):
                        return record
            time.sleep(0.1)
        raise AssertionError(f"no access-log line for {route} {status}")

    assert line_of("/v2/models/iris", "200")["principal"] == "reader"
    # A refusal is logged too, with no principal (the Go front end answers it itself and
    # sends the line to this process's access log in an ACCESS frame).
    assert line_of("/v2/models/fraud-v1/ready", "401")["principal"] == ""
    infer = "/inference.GRPCInferenceService/ModelInfer"
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = triton_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused_call:
            stub.ModelInfer(_infer_request("fraud-v1"), metadata=spoof.items())
        assert refused_call.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Other tests of the module leave refusals of their own in the log: find this one's.
    assert line_of(infer, "UNAUTHENTICATED", model="fraud-v1")["principal"] == ""
    assert any(
        json.loads(line).get("principal") == "payments"
        for line in server.output
        if line.startswith("{") and infer in line and '"OK"' in line
    )
    assert line_of("/v2", "200")["principal"] == "carol"
    everything = "\n".join(server.output)
    for secret in (*KEYS.values(), bearer, *bearer.split(".")):
        assert secret not in everything


def test_the_rollout_cli_sends_inferbridge_api_key(secured: Secured) -> None:
    def status(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "inferbridge", "rollout", "--url"]
        command += [secured.server.base_url, "--json", "status"]
        environment = {k: v for k, v in os.environ.items() if k != "INFERBRIDGE_API_KEY"}
        return subprocess.run(
            command, env={**environment, **env}, capture_output=True, text=True, timeout=60
        )

    refused = status({})
    assert refused.returncode != 0
    assert "authentication required" in refused.stdout + refused.stderr
    answered = status({"INFERBRIDGE_API_KEY": KEYS["reader"]})
    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert KEYS["reader"] not in answered.stdout + answered.stderr


@pytest.mark.parametrize(
    ("flag", "content", "message"),
    [
        ("--auth-keys", "keys: [{name: a, sha256: nothex, scopes: []}]", "auth_keys (--auth-keys)"),
        ("--auth-jwt-hs256-secret-file", "too short\n", "has 9 bytes; at least 32"),
        ("--auth-jwt-jwks", '{"keys": [{"kty": "RSA"}]}', "auth_jwt_jwks (--auth-jwt-jwks)"),
        ("--tls-cert", "not a certificate", "tls_cert / tls_key (--tls-cert, --tls-key)"),
    ],
)
def test_a_bad_security_file_stops_the_server_before_it_serves(
    tmp_path: Path, examples_dir: Path, flag: str, content: str, message: str
) -> None:
    bad = tmp_path / "bad"
    bad.write_text(content)
    args = [flag, str(bad)]
    if flag == "--tls-cert":
        args += ["--tls-key", str(bad)]
    command = [
        sys.executable,
        "-m",
        "inferbridge",
        "serve",
        str(_repository(tmp_path, examples_dir)),
    ]
    command += ["--http-port", "0", "--grpc-port", "0", *_frontend_args("python"), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "inferbridge: invalid settings: " in done.stderr
    assert message in done.stderr
    assert "listening" not in done.stdout
