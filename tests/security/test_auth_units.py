"""The security library in process: scopes and their globs, what each request needs,
the keys file (strict, reloaded, the last good one kept), JWTs (HS256, RS256 and ES256
by JWKS), token buckets on a stepped clock, and Authority.check's answers. The top of the
file is test material that tests/security/test_auth.py uses too."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from inferbridge.security import (
    Action,
    AuthConfig,
    AuthConfigError,
    Authority,
    Credentials,
    Denial,
    KeysFileError,
    Kind,
    Principal,
    ScopeError,
    ScopeSet,
    classify_grpc,
    classify_http,
    glob_match,
    hash_key,
    parse_keys,
    parse_model_rate,
    parse_rate,
)
from inferbridge.security.keys import hash_key as _hash
from inferbridge.security.ratelimit import Rate, RateError, TokenBucket

# --- test material ------------------------------------------------------------------------

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one rename, as an operator's tooling should."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def keys_yaml(entries: list[dict[str, Any]]) -> str:
    """A keys file of `entries` (JSON is YAML)."""
    return json.dumps({"keys": entries}, indent=2)


def key_entry(name: str, key: str, scopes: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "sha256": _hash(key), "scopes": scopes, **extra}


@dataclass
class Signers:
    """An RSA and a P-256 key, their JWKS document, and the HS256 secret's tokens."""

    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls) -> Signers:
        return cls(rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1()))

    def jwks(self, *, rsa_kid: str = "rsa-1", ec_kid: str = "ec-1") -> str:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        return json.dumps(
            {
                "keys": [
                    {**rsa_jwk, "kid": rsa_kid, "use": "sig", "alg": "RS256"},
                    {**ec_jwk, "kid": ec_kid, "use": "sig"},
                ]
            }
        )

    def token(
        self,
        alg: str = "HS256",
        *,
        sub: str | None = "alice",
        scope: str | None = "read",
        exp_in: float | None = 300,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"iat": now, **claims}
        if sub is not None:
            payload["sub"] = sub
        if scope is not None:
            payload["scope"] = scope
        if exp_in is not None:
            payload["exp"] = now + int(exp_in)
        headers: dict[str, Any] = {}
        key: Any
        if alg == "HS256":
            key = SECRET
        elif alg == "RS256":
            key, headers["kid"] = self.rsa, kid or "rsa-1"
        elif alg == "ES256":
            key, headers["kid"] = self.ec, kid or "ec-1"
        else:
            raise ValueError(alg)
        return jwt.encode(payload, key, algorithm=alg, headers=headers)


def none_token(sub: str = "alice", scope: str = "admin") -> str:
    """An unsigned token (`alg: none`), as an attacker would send it."""
    return jwt.encode(
        {"sub": sub, "scope": scope, "exp": int(time.time()) + 300}, None, algorithm="none"
    )


def hs512_token() -> str:
    """Signed with the right secret but an algorithm that is not pinned."""
    claims = {"sub": "alice", "scope": "admin", "exp": int(time.time()) + 300}
    return jwt.encode(claims, SECRET * 2, algorithm="HS512")


class SteppedClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float) -> None:
        self.now += seconds


# --- scopes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*", "", True),
        ("*", "iris", True),
        ("fraud-*", "fraud-v2", True),
        ("fraud-*", "fraud-", True),
        ("fraud-*", "xfraud-v2", False),
        ("ir?s", "iris", True),
        ("ir?s", "irs", False),
        ("*-v?", "fraud-v2", True),
        ("a*b*c", "abbbc", True),
        ("a*b*c", "abcb", False),
        ("[ab]", "a", False),  # brackets are literal
        ("[ab]", "[ab]", True),
        ("a\\*", "a\\x", True),  # no escapes: `\` is literal, `*` still a wildcard
        ("a/*", "a/b/c", True),  # `/` is not special
        ("iris", "iris", True),
        ("iris", "iris2", False),
    ],
)
def test_glob_match(pattern: str, name: str, matches: bool) -> None:
    assert glob_match(pattern, name) is matches


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("reed", "scope 'reed' is not one of infer, infer:<glob>, read, admin, agent"),
        ("infer:", "needs a model glob"),
        ("infer:a b", "no spaces"),
        (3, "must be a string"),
    ],
)
def test_bad_scopes_are_named(scope: object, message: str) -> None:
    with pytest.raises(ScopeError, match=message):
        ScopeSet([scope])  # type: ignore[list-item]


def test_scope_grants() -> None:
    reader = ScopeSet(["read"])
    fraud = ScopeSet(["infer:fraud-*"])
    assert reader.grants(Action(Kind.READ)) and reader.grants(Action(Kind.HEALTH))
    assert not reader.grants(Action(Kind.INFER, "iris"))
    assert not reader.grants(Action(Kind.ADMIN))
    assert fraud.grants(Action(Kind.INFER, "fraud-v1"))
    assert not fraud.grants(Action(Kind.INFER, "iris"))
    assert fraud.grants(Action(Kind.SHARED_MEMORY)) and not reader.grants(
        Action(Kind.SHARED_MEMORY)
    )
    assert not fraud.grants(Action(Kind.READ))
    assert ScopeSet(["infer"]).grants(Action(Kind.INFER, "anything"))
    admin = ScopeSet(["admin"])
    assert all(admin.grants(Action(kind, "m")) for kind in Kind)
    assert ScopeSet([]).grants(Action(Kind.ANY)) and not ScopeSet([]).grants(Action(Kind.HEALTH))
    assert ScopeSet(["agent"]).grants(Action(Kind.AGENT)) and not reader.grants(Action(Kind.AGENT))


# --- classification -------------------------------------------------------------------------

INF, R, A, H, S, ANY = Kind.INFER, Kind.READ, Kind.ADMIN, Kind.HEALTH, Kind.SHARED_MEMORY, Kind.ANY


@pytest.mark.parametrize(
    ("method", "path", "query", "kind", "model"),
    [
        ("GET", "/v2/health/live", "", H, ""),
        ("GET", "/v2/health/ready", "", H, ""),
        ("POST", "/v2/models/iris/infer", "", INF, "iris"),
        ("POST", "/v2/models/iris/versions/2/infer", "", INF, "iris"),
        ("POST", "/v2/models/iris/infer/", "", INF, "iris"),
        ("POST", "/v2/models/llm/generate", "", INF, "llm"),
        ("POST", "/v2/models/llm/generate_stream", "", INF, "llm"),
        ("POST", "/v1/models/iris:predict", "", INF, "iris"),
        ("POST", "/predict", "", INF, "default-m"),
        ("POST", "/v1/vision/faces", "", INF, "face_detection"),
        ("POST", "/v1/vision/classify", "", INF, "digits_classifier"),
        ("POST", "/v1/vision/detect", "", INF, "detection"),
        ("POST", "/v1/text/embed", "", INF, "text_embedding"),
        ("POST", "/v1/vision/faces", "model=mine", INF, "mine"),
        # The service reads the last ?model=, so the check must too.
        ("POST", "/v1/text/embed", "model=a&model=b", INF, "b"),
        ("POST", "/v1/text/embed", "model=", INF, "text_embedding"),
        ("POST", "/v1/vision/nothing", "", ANY, ""),
        ("POST", "/v2/systemsharedmemory/region/r/register", "", S, ""),
        ("GET", "/v2/systemsharedmemory/status", "", S, ""),
        ("POST", "/v2/cudasharedmemory/region/r/unregister", "", S, ""),
        ("GET", "/v2", "", R, ""),
        ("GET", "/v2/models/iris", "", R, ""),
        ("GET", "/v2/models/iris/versions/1", "", R, ""),
        ("GET", "/v2/models/iris/ready", "", R, ""),
        ("GET", "/v2/models/iris/config", "", R, ""),
        ("GET", "/v2/models/iris/stats", "", R, ""),
        ("GET", "/v2/models/stats", "", R, ""),
        ("POST", "/v2/repository/index", "", R, ""),
        ("GET", "/metrics", "", R, ""),
        ("GET", "/v1/rollouts", "", R, ""),
        ("GET", "/v1/rollouts/iris", "", R, ""),
        ("GET", "/v1/rollout-audit", "", R, ""),
        ("GET", "/v2/logging", "", R, ""),
        ("GET", "/v2/trace/setting", "", R, ""),
        ("GET", "/v2/models/iris/trace/setting", "", R, ""),
        ("POST", "/v2/repository/models/iris/load", "", A, ""),
        ("POST", "/v2/repository/models/iris/unload", "", A, ""),
        ("POST", "/v1/rollouts", "", A, ""),
        ("DELETE", "/v1/rollouts/iris", "", A, ""),
        ("POST", "/v2/logging", "", A, ""),
        ("POST", "/v2/trace/setting", "", A, ""),
        ("POST", "/v2/models/iris/trace/setting", "", A, ""),
        ("GET", "/nothing/here", "", ANY, ""),
        ("GET", "/openapi.json", "", ANY, ""),
        ("GET", "/v2/repository/else", "", ANY, ""),
    ],
)
def test_classify_http(method: str, path: str, query: str, kind: Kind, model: str) -> None:
    assert classify_http(method, path, query.encode(), "default-m") == Action(kind, model)


@pytest.mark.parametrize(
    ("method", "kind", "model"),
    [
        ("/inference.GRPCInferenceService/ServerLive", H, ""),
        ("/inference.GRPCInferenceService/ServerReady", H, ""),
        ("/grpc.health.v1.Health/Check", H, ""),
        ("/grpc.health.v1.Health/Watch", H, ""),
        ("/inference.GRPCInferenceService/ModelInfer", INF, "m"),
        ("/inference.GRPCInferenceService/ModelStreamInfer", INF, "m"),
        ("/ai.AIService/Predict", INF, "default-m"),
        ("/inference.GRPCInferenceService/SystemSharedMemoryRegister", S, ""),
        ("/inference.GRPCInferenceService/CudaSharedMemoryStatus", S, ""),
        ("/inference.GRPCInferenceService/ServerMetadata", R, ""),
        ("/inference.GRPCInferenceService/ModelMetadata", R, ""),
        ("/inference.GRPCInferenceService/ModelReady", R, ""),
        ("/inference.GRPCInferenceService/ModelConfig", R, ""),
        ("/inference.GRPCInferenceService/ModelStatistics", R, ""),
        ("/inference.GRPCInferenceService/RepositoryIndex", R, ""),
        ("/inference.GRPCInferenceService/RepositoryModelLoad", A, ""),
        ("/inference.GRPCInferenceService/RepositoryModelUnload", A, ""),
        ("/inference.GRPCInferenceService/LogSettings", A, ""),
        ("/inference.GRPCInferenceService/TraceSetting", A, ""),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", ANY, ""),
        ("/inference.GRPCInferenceService/Nothing", ANY, ""),
    ],
)
def test_classify_grpc(method: str, kind: Kind, model: str) -> None:
    assert classify_grpc(method, "m", "default-m") == Action(kind, model)


def test_service_default_models_are_the_services() -> None:
    from inferbridge.frontends.rest.services import DEFAULT_MODELS
    from inferbridge.security.classify import SERVICE_DEFAULT_MODELS

    assert SERVICE_DEFAULT_MODELS == DEFAULT_MODELS


# --- the keys file ----------------------------------------------------------------------------

GOOD = """
keys:
  - name: payments
    sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
    scopes: ["infer:fraud-*", read]
    expires: 2027-06-30T00:00:00Z
    rate: {per_second: 100, burst: 200}
  - name: batch
    subject: batch.internal
    scopes: ["infer:*"]
"""


def test_the_documented_keys_file_parses() -> None:
    keys = parse_keys(GOOD)
    payments = keys.by_digest[hash_key("password")]
    assert payments.name == "payments"
    assert payments.scopes.written == ("infer:fraud-*", "read")
    assert payments.expires == dt.datetime(2027, 6, 30, tzinfo=dt.UTC)
    assert payments.rate == Rate(100, 200)
    assert keys.by_subject["batch.internal"].name == "batch"
    assert keys.by_subject["batch.internal"].rate is None


DIGEST = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a mapping with one field, 'keys'"),
        ("keys: {}", "'keys' must be a list"),
        ("keys: []\nextra: 1", "expected a mapping with one field"),
        ("keys: [1]", r"keys\[0\]: an entry must be a mapping"),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: [], colour: red}}]",
            r"keys\[0\]: unknown field\(s\) colour",
        ),
        (f"keys: [{{sha256: {DIGEST}, scopes: []}}]", r"keys\[0\]\.name: missing"),
        (
            f"keys: [{{name: 'a b', sha256: {DIGEST}, scopes: []}}]",
            r"keys\[0\]\.name: 'a b' is not",
        ),
        ("keys: [{name: a, scopes: []}]", r"keys\[0\] \('a'\): needs exactly one of sha256"),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, subject: s, scopes: []}}]",
            "needs exactly one of sha256",
        ),
        ("keys: [{name: a, sha256: ABC, scopes: []}]", r"\.sha256: expected 64 lower-case hex"),
        (f"keys: [{{name: a, sha256: {DIGEST.upper()}, scopes: []}}]", "lower-case hex"),
        (f"keys: [{{name: a, sha256: {DIGEST}}}]", r"\.scopes: missing"),
        (f"keys: [{{name: a, sha256: {DIGEST}, scopes: read}}]", r"\.scopes: expected a list"),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: [write]}}]",
            r"\.scopes\[0\]: scope 'write'",
        ),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: [], expires: 2027-06-30}}]",
            r"\.expires: .* with a time",
        ),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: [], expires: soon}}]",
            r"\.expires: 'soon' is not an RFC 3339",
        ),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: [], expires: '2027-06-30T00:00:00'}}]",
            "has no time zone",
        ),
        (f"keys: [{{name: a, sha256: {DIGEST}, scopes: [], rate: 5}}]", r"\.rate: expected"),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: [], rate: {{per_second: 0}}}}]",
            r"\.rate: per_second must be",
        ),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: [], rate: {{per_second: 5, burst: 0}}}}]",
            "burst must be",
        ),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: [], rate: {{per_second: 5, b: 1}}}}]",
            r"\.rate: unknown field",
        ),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: [], rate: {{per_second: yes}}}}]",
            r"per_second: expected a number",
        ),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: []}}, "
            "{name: a, subject: s, scopes: []}]",
            r"keys\[1\]\.name: 'a' is already the name of keys\[0\]",
        ),
        (
            f"keys: [{{name: a, sha256: {DIGEST}, scopes: []}}, "
            f"{{name: b, sha256: {DIGEST}, scopes: []}}]",
            r"keys\[1\] \('b'\)\.sha256: the same digest as entry 'a'",
        ),
        (
            "keys: [{name: a, subject: s, scopes: []}, {name: b, subject: s, scopes: []}]",
            r"\.subject: 's' is already the subject of entry 'a'",
        ),
        (
            f"keys:\n  - name: a\n    name: b\n    sha256: {DIGEST}\n    scopes: []",
            "line 3: field 'name' appears twice",
        ),
        ("keys: [", "not valid YAML"),
    ],
)
def test_bad_keys_files_are_refused_naming_entry_and_field(text: str, message: str) -> None:
    with pytest.raises(KeysFileError, match=message):
        parse_keys(text)


def test_keys_file_reloads_at_most_once_a_second_and_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(keys_yaml([key_entry("old", "k-old", ["read"])]))
    clock = SteppedClock()
    authority = Authority(AuthConfig(keys_file=path), clock=clock)
    read = Action(Kind.READ)
    assert _name(authority.check(Credentials(api_key="k-old"), read)) == "old"

    write_atomically(path, keys_yaml([key_entry("new", "k-new", ["read"])]))
    clock.step(0.5)  # not looked at yet: at most once a second
    assert _name(authority.check(Credentials(api_key="k-old"), read)) == "old"
    clock.step(0.6)
    assert _status(authority.check(Credentials(api_key="k-old"), read)) == 401
    assert _name(authority.check(Credentials(api_key="k-new"), read)) == "new"

    write_atomically(path, "keys: [{name: broken}]")
    clock.step(1.1)
    assert _name(authority.check(Credentials(api_key="k-new"), read)) == "new"
    assert "is not valid" in caplog.text and "the last good one stays in force" in caplog.text

    path.unlink()
    clock.step(1.1)
    assert _name(authority.check(Credentials(api_key="k-new"), read)) == "new"
    assert "cannot be read" in caplog.text


# --- rates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100:200", Rate(100, 200)),
        ("5", Rate(5, 5)),
        ("2.5", Rate(2.5, 3)),
        (" 1 : 1 ", Rate(1, 1)),
    ],
)
def test_parse_rate(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "0", "x", "1:0", "1:2.5", "-1", "1:2:3"])
def test_bad_rates_say_what_is_expected(text: str) -> None:
    with pytest.raises(RateError, match=r"RPS\[:BURST\]|must be"):
        parse_rate(text)


def test_parse_model_rate() -> None:
    rule = parse_model_rate("fraud-*=100:200")
    assert (rule.glob, rule.rate) == ("fraud-*", Rate(100, 200))
    with pytest.raises(RateError, match=r"GLOB=RPS\[:BURST\]"):
        parse_model_rate("100:200")


def test_token_bucket_refills_at_its_rate() -> None:
    clock = SteppedClock()
    bucket = TokenBucket(Rate(2, 3), clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.step(0.25)
    assert bucket.take() == pytest.approx(0.25)
    clock.step(0.25)
    assert bucket.take() == 0.0
    clock.step(100)
    assert [bucket.take() for _ in range(4)][-1] > 0  # never more than the burst


# --- Authority ---------------------------------------------------------------------------------


def _name(answer: Principal | Denial) -> str:
    assert isinstance(answer, Principal), answer
    return answer.name


def _status(answer: Principal | Denial) -> int:
    assert isinstance(answer, Denial), answer
    return answer.status


@pytest.fixture
def signers() -> Signers:
    return Signers.make()


@pytest.fixture
def files(tmp_path: Path, signers: Signers) -> dict[str, Path]:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        keys_yaml(
            [
                key_entry("payments", "k-pay", ["infer:fraud-*", "read"]),
                key_entry("admin", "k-admin", ["admin"]),
                key_entry("old", "k-old", ["read"], expires="2020-01-01T00:00:00Z"),
                key_entry("slow", "k-slow", ["infer"], rate={"per_second": 1, "burst": 2}),
                {"name": "batch", "subject": "batch.internal", "scopes": ["infer:*"]},
            ]
        )
    )
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(signers.jwks())
    return {"keys": keys, "secret": secret, "jwks": jwks}


@pytest.fixture
def authority(files: dict[str, Path]) -> Authority:
    return Authority(
        AuthConfig(
            keys_file=files["keys"],
            jwt_hs256_secret_file=files["secret"],
            jwt_jwks=files["jwks"],
            jwt_audience="inferbridge",
            jwt_issuer="https://issuer.test",
            jwt_leeway_s=5,
        )
    )


INFER_IRIS = Action(Kind.INFER, "iris")
INFER_FRAUD = Action(Kind.INFER, "fraud-v2")
READ = Action(Kind.READ)
JWT_CLAIMS = {"aud": "inferbridge", "iss": "https://issuer.test"}


def bearer(credential: str) -> Credentials:
    return Credentials(authorization=f"Bearer {credential}")


def test_no_credential_is_401_without_invalid_token(authority: Authority) -> None:
    denial = authority.check(Credentials(), READ)
    assert isinstance(denial, Denial)
    assert (denial.status, denial.token_sent) == (401, False)
    assert denial.www_authenticate == 'Bearer realm="inferbridge"'
    assert "authentication required" in denial.message


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        (Credentials(api_key="nope-secret-value"), "the API key is not valid"),
        (bearer("nope-secret-value"), "the API key is not valid"),
        (Credentials(api_key="k-old"), "API key 'old' expired at 2020-01-01T00:00:00Z"),
        (Credentials(authorization="Basic czpw"), "must be 'Bearer <credential>'"),
        (Credentials(authorization="Bearer "), "must be 'Bearer <credential>'"),
        # authorization decides, even when x-api-key is good
        (
            Credentials(authorization="Bearer nope-secret-value", api_key="k-admin"),
            "the API key is not valid",
        ),
    ],
)
def test_bad_credentials_are_401_invalid_token(
    authority: Authority, credentials: Credentials, message: str
) -> None:
    denial = authority.check(credentials, READ)
    assert isinstance(denial, Denial)
    assert (denial.status, denial.token_sent) == (401, True)
    assert message in denial.message
    assert denial.www_authenticate == 'Bearer realm="inferbridge", error="invalid_token"'
    for secret in (
        credentials.authorization.removeprefix("Bearer ").removeprefix("Basic "),
        credentials.api_key,
    ):
        if secret.strip():
            assert secret not in denial.message


def test_an_unknown_certificate_subject_is_401_without_invalid_token(
    authority: Authority,
) -> None:
    denial = authority.check(Credentials(cert_subject="stranger.internal"), READ)
    assert isinstance(denial, Denial) and (denial.status, denial.token_sent) == (401, False)
    assert denial.message == (
        "the client certificate's subject 'stranger.internal' is not a principal of the keys file"
    )


def test_scopes_decide_what_a_key_may_do(authority: Authority) -> None:
    pay = Credentials(api_key="k-pay")
    assert _name(authority.check(pay, INFER_FRAUD)) == "payments"
    assert _name(authority.check(pay, READ)) == "payments"
    denial = authority.check(pay, INFER_IRIS)
    assert isinstance(denial, Denial) and denial.status == 403
    assert denial.message == (
        "principal 'payments' may not infer on model 'iris' (its scopes: infer:fraud-*, read)"
    )
    assert _status(authority.check(pay, Action(Kind.ADMIN))) == 403
    assert _name(authority.check(Credentials(api_key="k-admin"), Action(Kind.ADMIN))) == "admin"
    assert _name(authority.check(bearer("k-pay"), Action(Kind.ANY))) == "payments"
    assert _name(authority.check(Credentials(cert_subject="batch.internal"), INFER_IRIS)) == "batch"


def test_health_is_open_unless_closed(files: dict[str, Path]) -> None:
    health = Action(Kind.HEALTH)
    open_ = Authority(AuthConfig(keys_file=files["keys"]))
    assert _name(open_.check(Credentials(), health)) == ""
    closed = Authority(AuthConfig(keys_file=files["keys"], open_health=False))
    assert _status(closed.check(Credentials(), health)) == 401
    assert _name(closed.check(Credentials(api_key="k-pay"), health)) == "payments"
    assert _status(closed.check(Credentials(api_key="k-slow"), health)) == 403


def test_jwts(authority: Authority, signers: Signers) -> None:
    for alg in ("HS256", "RS256", "ES256"):
        token = signers.token(alg, scope="infer:iris read", **JWT_CLAIMS)
        assert _name(authority.check(bearer(token), INFER_IRIS)) == "alice", alg
    listed = signers.token("ES256", scope=None, scp=["infer:iris"], **JWT_CLAIMS)
    assert _name(authority.check(bearer(listed), INFER_IRIS)) == "alice"
    listed = signers.token("RS256", scope=None, scopes=["read"], **JWT_CLAIMS)
    denial = authority.check(bearer(listed), INFER_IRIS)
    assert isinstance(denial, Denial) and denial.message == (
        "principal 'alice' may not infer on model 'iris' (its scopes: read)"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda s: s.token(exp_in=-60, **JWT_CLAIMS), "it has expired (exp)"),
        (lambda s: s.token(exp_in=None, **JWT_CLAIMS), "it has no exp claim"),
        (lambda s: s.token(sub=None, **JWT_CLAIMS), "it has no sub claim (the principal)"),
        (lambda s: s.token(sub="a\nb", **JWT_CLAIMS), "its sub claim has control characters"),
        (lambda s: s.token(sub="a" * 257, **JWT_CLAIMS), "or is over 256 bytes"),
        (lambda s: s.token(nbf=int(time.time()) + 600, **JWT_CLAIMS), "not valid yet"),
        (
            lambda s: s.token(aud="other", iss="https://issuer.test"),
            "its audience (aud) does not include 'inferbridge'",
        ),
        (
            lambda s: s.token(aud="inferbridge", iss="https://evil.test"),
            "its issuer (iss) is not the one this server accepts",
        ),
        (
            lambda s: s.token(iss="https://issuer.test"),
            "its audience (aud) does not include 'inferbridge'",
        ),
        (
            lambda s: none_token(),
            "(alg) 'none' is not accepted here (accepted: HS256, RS256, ES256)",
        ),
        (lambda s: hs512_token(), "(alg) 'HS512' is not accepted"),
        (
            lambda s: s.token("RS256", kid="unknown", **JWT_CLAIMS),
            "no key of the JWKS file has its kid and algorithm",
        ),
        (
            lambda s: s.token("ES256", kid="rsa-1", **JWT_CLAIMS),
            "no key of the JWKS file has its kid and algorithm",
        ),
        (lambda s: Signers.make().token("RS256", **JWT_CLAIMS), "its signature does not verify"),
        (lambda s: s.token(**JWT_CLAIMS)[:-4] + "AAAA", "its signature does not verify"),
        (lambda s: "a.b.c", "it is malformed"),
    ],
)
def test_bad_jwts_are_401(
    authority: Authority, signers: Signers, make: Callable[[Signers], str], message: str
) -> None:
    token = make(signers)
    denial = authority.check(bearer(token), READ)
    assert isinstance(denial, Denial), denial
    assert (denial.status, denial.token_sent) == (401, True)
    assert message in denial.message
    for part in token.split("."):
        if len(part) >= 4:
            assert part not in denial.message


def test_leeway_accepts_a_token_just_expired(files: dict[str, Path], signers: Signers) -> None:
    generous = Authority(AuthConfig(jwt_hs256_secret_file=files["secret"], jwt_leeway_s=120))
    assert _name(generous.check(bearer(signers.token(exp_in=-60)), READ)) == "alice"
    strict = Authority(AuthConfig(jwt_hs256_secret_file=files["secret"], jwt_leeway_s=0))
    assert _status(strict.check(bearer(signers.token(exp_in=-60)), READ)) == 401


def test_only_the_configured_algorithms_are_accepted(
    files: dict[str, Path], signers: Signers
) -> None:
    hs_only = Authority(AuthConfig(jwt_hs256_secret_file=files["secret"]))
    denial = hs_only.check(bearer(signers.token("RS256")), READ)
    assert isinstance(denial, Denial)
    assert "(alg) 'RS256' is not accepted here (accepted: HS256)" in denial.message
    jwks_only = Authority(AuthConfig(jwt_jwks=files["jwks"]))
    denial = jwks_only.check(bearer(signers.token("HS256")), READ)
    assert isinstance(denial, Denial)
    assert "'HS256' is not accepted here (accepted: RS256, ES256)" in denial.message
    # Without a JWT verifier a JWT-shaped bearer is an API key like any other.
    keys_only = Authority(AuthConfig(keys_file=files["keys"]))
    assert _status(keys_only.check(bearer(signers.token()), READ)) == 401


def test_jwks_reload_takes_a_rotated_key(files: dict[str, Path], signers: Signers) -> None:
    clock = SteppedClock()
    authority = Authority(AuthConfig(jwt_jwks=files["jwks"]), clock=clock)
    rotated = Signers.make()
    write_atomically(files["jwks"], rotated.jwks(rsa_kid="rsa-2"))
    assert _status(authority.check(bearer(rotated.token("RS256", kid="rsa-2")), READ)) == 401
    clock.step(1.5)
    assert _name(authority.check(bearer(rotated.token("RS256", kid="rsa-2")), READ)) == "alice"
    assert _status(authority.check(bearer(signers.token("RS256")), READ)) == 401


def test_a_short_rsa_key_in_the_jwks_is_refused() -> None:
    from inferbridge.security.tokens import JWKSError, parse_jwks

    small = rsa.generate_private_key(65537, 1024).public_key()
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(small)), "kid": "small"}
    with pytest.raises(JWKSError, match="the RSA modulus has 1024 bits; at least 2048"):
        parse_jwks(json.dumps({"keys": [jwk]}).encode())


def test_a_verified_token_is_remembered_until_it_expires(
    files: dict[str, Path], signers: Signers
) -> None:
    authority = Authority(AuthConfig(jwt_hs256_secret_file=files["secret"], jwt_leeway_s=0))
    token = signers.token(exp_in=2)
    for _ in range(3):  # verified once, then remembered
        assert _name(authority.check(bearer(token), READ)) == "alice"
    time.sleep(2.1)
    denial = authority.check(bearer(token), READ)
    assert isinstance(denial, Denial) and "it has expired (exp)" in denial.message


def test_a_key_taken_out_of_the_jwks_stops_its_remembered_tokens(
    files: dict[str, Path], signers: Signers
) -> None:
    clock = SteppedClock()
    authority = Authority(AuthConfig(jwt_jwks=files["jwks"]), clock=clock)
    token = signers.token("ES256")
    assert _name(authority.check(bearer(token), READ)) == "alice"
    write_atomically(files["jwks"], Signers.make().jwks())  # new keys, the same kids
    clock.step(1.5)
    assert _status(authority.check(bearer(token), READ)) == 401


def test_principal_and_model_buckets(files: dict[str, Path]) -> None:
    clock = SteppedClock()
    authority = Authority(
        AuthConfig(
            keys_file=files["keys"],
            default_rate=Rate(1, 1),
            model_rates=(parse_model_rate("fraud-*=1:3"), parse_model_rate("*=100")),
        ),
        clock=clock,
    )
    slow = Credentials(api_key="k-slow")
    assert [_name(authority.check(slow, INFER_IRIS)) for _ in range(2)] == ["slow", "slow"]
    denial = authority.check(slow, INFER_IRIS)
    assert isinstance(denial, Denial) and denial.status == 429 and denial.retry_after == 1
    assert denial.message == (
        "principal 'slow' is over its rate limit of 1 requests/s (burst 2); retry in 1 s"
    )
    clock.step(1.0)
    assert _name(authority.check(slow, INFER_IRIS)) == "slow"


def test_the_model_bucket_is_shared_and_refunds_the_principal(files: dict[str, Path]) -> None:
    clock = SteppedClock()
    authority = Authority(
        AuthConfig(
            keys_file=files["keys"],
            default_rate=Rate(1, 1),
            model_rates=(parse_model_rate("fraud-*=1:3"), parse_model_rate("*=100")),
        ),
        clock=clock,
    )
    admin, pay, slow = (Credentials(api_key=k) for k in ("k-admin", "k-pay", "k-slow"))
    # A key without a rate of its own has the default one.
    assert _name(authority.check(admin, INFER_IRIS)) == "admin"
    denial = authority.check(admin, INFER_IRIS)
    assert isinstance(denial, Denial) and denial.message.startswith("principal 'admin' is over")
    clock.step(1.0)
    # One bucket for fraud-v2, whoever calls: three tokens.
    for who in (admin, pay, slow):
        assert isinstance(authority.check(who, INFER_FRAUD), Principal)
    denial = authority.check(slow, INFER_FRAUD)
    assert isinstance(denial, Denial) and denial.status == 429
    assert denial.message == (
        "model 'fraud-v2' is over its rate limit of 1 requests/s (burst 3); retry in 1 s"
    )
    # The model refused it, so slow's own token came back: it has one left, not none.
    assert _name(authority.check(slow, INFER_IRIS)) == "slow"
    assert _status(authority.check(slow, INFER_IRIS)) == 429


def test_a_bucket_survives_a_reload_when_name_and_rate_are_unchanged(
    files: dict[str, Path],
) -> None:
    clock = SteppedClock()
    authority = Authority(AuthConfig(keys_file=files["keys"]), clock=clock)
    slow = Credentials(api_key="k-slow")
    assert [_name(authority.check(slow, INFER_IRIS)) for _ in range(2)] == ["slow", "slow"]
    entries = [
        key_entry("slow", "k-slow", ["infer"], rate={"per_second": 1, "burst": 2}),
        key_entry("other", "k-other", ["read"]),
    ]
    write_atomically(files["keys"], keys_yaml(entries))
    clock.step(1.01)  # reloaded now, and one token refilled
    assert _name(authority.check(slow, INFER_IRIS)) == "slow"
    assert _status(authority.check(slow, INFER_IRIS)) == 429  # the same bucket, not a full one
    entries[0]["rate"] = {"per_second": 1, "burst": 5}
    write_atomically(files["keys"], keys_yaml(entries))
    clock.step(1.01)
    assert [_name(authority.check(slow, INFER_IRIS)) for _ in range(5)] == ["slow"] * 5


def test_rate_limits_work_with_authentication_off() -> None:
    clock = SteppedClock()
    authority = Authority(AuthConfig(model_rates=(parse_model_rate("iris=1"),)), clock=clock)
    assert not authority.enabled
    assert _name(authority.check(Credentials(), INFER_IRIS)) == ""
    assert _status(authority.check(Credentials(), INFER_IRIS)) == 429
    assert _name(authority.check(Credentials(), Action(Kind.INFER, "other"))) == ""


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"keys_file": "missing.yaml"},
            r"auth_keys \(--auth-keys\): keys file .*missing.yaml: No such file",
        ),
        ({"keys_file": "bad.yaml"}, r"auth_keys \(--auth-keys\): .*keys\[0\]\.name: missing"),
        (
            {"jwt_hs256_secret_file": "short"},
            r"auth_jwt_hs256_secret_file \(--auth-jwt-hs256-secret-file\): "
            r".*has 5 bytes; at least 32",
        ),
        (
            {"jwt_jwks": "bad.json"},
            r"auth_jwt_jwks \(--auth-jwt-jwks\): .*keys\[0\]\.kty: 'oct' is not RSA or EC",
        ),
        ({"jwt_jwks": "missing.json"}, r"auth_jwt_jwks \(--auth-jwt-jwks\): .*No such file"),
        (
            {"jwt_leeway_s": 301},
            r"auth_jwt_leeway_s \(--auth-jwt-leeway-s\): 301 is not between 0 and 300",
        ),
    ],
)
def test_bad_settings_name_the_setting(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    (tmp_path / "bad.yaml").write_text("keys: [{sha256: x}]")
    (tmp_path / "short").write_text("short\n")
    (tmp_path / "bad.json").write_text('{"keys": [{"kty": "oct", "kid": "k", "k": "AAAA"}]}')
    resolved = {k: tmp_path / v if isinstance(v, str) else v for k, v in config.items()}
    with pytest.raises(AuthConfigError, match=message):
        Authority(AuthConfig(**resolved))


def test_config_from_settings_parses_rates() -> None:
    class FakeSettings:
        auth_keys = None
        auth_jwt_hs256_secret_file = None
        auth_default_rate = "10:20"
        rate_limit = ("fraud-*=5", "*=100:100")

    config = AuthConfig.from_settings(FakeSettings())
    assert config.default_rate == Rate(10, 20)
    assert [r.glob for r in config.model_rates] == ["fraud-*", "*"]
    assert not config.authenticates

    class BadSettings:
        auth_default_rate = "fast"

    with pytest.raises(
        AuthConfigError, match=r"auth_default_rate \(--auth-default-rate\): rate 'fast'"
    ):
        AuthConfig.from_settings(BadSettings())


# --- the CLI ------------------------------------------------------------------------------------


def test_new_key_prints_a_key_and_an_entry_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from inferbridge.cli import main

    code = main(
        [
            "auth",
            "new-key",
            "--name",
            "payments",
            "--scope",
            "infer:fraud-*",
            "--scope",
            "read",
            "--expires",
            "2027-06-30T00:00:00Z",
            "--rate",
            "100:200",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    key = lines[1]
    assert key.startswith("ib_") and len(key) > 40
    entry = "\n".join(lines[3:])
    parsed = parse_keys("keys:\n" + entry).by_digest[hash_key(key)]
    assert parsed.name == "payments"
    assert parsed.scopes.written == ("infer:fraud-*", "read")
    assert parsed.rate == Rate(100, 200)
    assert parsed.expires == dt.datetime(2027, 6, 30, tzinfo=dt.UTC)
    assert key not in entry


def test_new_key_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from inferbridge.cli import main

    assert main(["auth", "new-key", "--name", "a", "--scope", "write"]) == 2
    assert "--scope: scope 'write' is not one of" in capsys.readouterr().err
    assert main(["auth", "new-key", "--name", "a", "--scope", "read", "--rate", "x"]) == 2
    assert "--rate: rate 'x' is not RPS[:BURST]" in capsys.readouterr().err


def test_hash_reads_the_key_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from inferbridge.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("password\n"))
    assert main(["auth", "hash"]) == 0
    assert capsys.readouterr().out.strip() == DIGEST


# --- the open-server warning ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "auth", "warned"),
    [
        ("0.0.0.0", False, True),
        ("::", False, True),
        ("10.1.2.3", False, True),
        ("inference.example", False, True),
        ("0.0.0.0", True, False),
        ("127.0.0.1", False, False),
        ("::1", False, False),
        ("localhost", False, False),
    ],
)
def test_one_loud_line_when_listening_beyond_loopback_with_auth_off(
    host: str, auth: bool, warned: bool
) -> None:
    # (inferbridge.server logs this line; it is not imported here: its gRPC stubs clash
    # with tritonclient's, which other tests of this session import.)
    from inferbridge.security.exposure import open_server_warning

    warning = open_server_warning(host, authenticates=auth)
    if warned:
        assert warning is not None
        assert f"listening on {host} with authentication OFF" in warning
        assert "--auth-keys" in warning and "--auth-jwt-" in warning
        assert "\n" not in warning  # one line
    else:
        assert warning is None


def test_security_settings_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from inferbridge.settings import Settings

    monkeypatch.setenv("INFERBRIDGE_RATE_LIMIT", "fraud-*=100:200, iris=5")
    monkeypatch.setenv("INFERBRIDGE_AUTH_DEFAULT_RATE", "10")
    monkeypatch.setenv("INFERBRIDGE_AUTH_OPEN_HEALTH", "false")
    monkeypatch.setenv("INFERBRIDGE_AUTH_KEYS", str(tmp_path / "keys.yaml"))
    settings = Settings()
    assert settings.rate_limit == ["fraud-*=100:200", "iris=5"]
    assert settings.authenticates and not settings.auth_open_health
    config = AuthConfig.from_settings(settings)
    assert config.default_rate == Rate(10, 10)
    assert [(r.glob, r.rate) for r in config.model_rates] == [
        ("fraud-*", Rate(100, 200)),
        ("iris", Rate(5, 5)),
    ]
    for bad, named in (
        ({"rate_limit": ["fraud"]}, "rate_limit"),
        ({"auth_default_rate": "fast"}, "auth_default_rate"),
        ({"auth_jwt_leeway_s": 301}, "auth_jwt_leeway_s"),
        ({"tls_cert": tmp_path / "c.pem"}, "tls_key (--tls-key) is missing"),
        ({"tls_client_auth": "request"}, "need the server's own certificate"),
    ):
        with pytest.raises(ValidationError, match=re.escape(named)):
            Settings(**bad)
