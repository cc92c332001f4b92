"""One decision per request: who is calling (API key, JWT, client certificate), may they
do this, and are they (and the model) within their rate. Both Python front ends, and the
fleet control plane, ask `Authority.check`; the Go front-end process has its own copy of
these rules (internal/auth) with the same messages.

Checks run in this order: authenticate, authorize, the principal's bucket, the model's
bucket. An Authority is used from one event loop (it is not thread-safe).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from inferbridge.security.keys import KeyEntry, KeysFile, KeysFileError, parse_keys
from inferbridge.security.ratelimit import (
    Clock,
    ModelRate,
    Rate,
    RateBuckets,
    RateError,
    model_rate,
    parse_model_rate,
    parse_rate,
    retry_after_seconds,
)
from inferbridge.security.scopes import Action, Kind, ScopeSet, refusal
from inferbridge.security.tokens import (
    JwtVerifier,
    TokenRefused,
    looks_like_jwt,
    read_hs256_secret,
    watch_jwks,
)
from inferbridge.security.watched import WatchedFile

if TYPE_CHECKING:
    import grpc

__all__ = [
    "ANONYMOUS",
    "AuthConfig",
    "REFUSAL",
    "AuthConfigError",
    "Authority",
    "Credentials",
    "Denial",
    "Principal",
]

MAX_LEEWAY_S = 300.0

#: Set by the Python front ends, in the task serving a request they refused: the
#: `reason` label of inferbridge_frontend_rejected_total (as the Go front end's), so a
#: 429 of a bucket is not counted as a full queue.
REFUSAL: ContextVar[str] = ContextVar("inferbridge_refusal", default="")
_REASONS = {401: "unauthenticated", 403: "permission_denied", 429: "rate_limit"}
REALM = 'Bearer realm="inferbridge"'


class AuthConfigError(ValueError):
    """A setting that cannot work; the message names the setting and its flag."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request carries: the Authorization header (or gRPC metadata), the x-api-key
    header, and the verified client certificate's subject common name ("" for none)."""

    authorization: str = ""
    api_key: str = ""
    cert_subject: str = ""
    repeated: str = ""
    """The credential sent more than once ("Authorization header", "x-api-key metadata
    entry", ...): refused, as the Go front end does, rather than picking one."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: `name` is "" when nobody had to say (authentication off, or an
    open health endpoint)."""

    name: str
    scopes: ScopeSet | None = None


ANONYMOUS = Principal("")


@dataclass(frozen=True, slots=True)
class Denial:
    """A refusal: 401 (authentication), 403 (scope) or 429 (rate, with `retry_after`
    whole seconds); `token_sent` says a credential came with the request (401 then adds
    `error="invalid_token"` to WWW-Authenticate); `principal` is who was refused, when
    known (403, 429), for the access log."""

    status: int
    message: str
    retry_after: int | None = None
    token_sent: bool = False
    principal: str = ""

    @property
    def reason(self) -> str:
        """The metrics reason: unauthenticated, permission_denied or rate_limit."""
        return _REASONS[self.status]

    @property
    def www_authenticate(self) -> str | None:
        """The WWW-Authenticate header of a 401, else None."""
        if self.status != 401:
            return None
        return f'{REALM}, error="invalid_token"' if self.token_sent else REALM

    @property
    def grpc_code(self) -> grpc.StatusCode:
        import grpc

        return {
            401: grpc.StatusCode.UNAUTHENTICATED,
            403: grpc.StatusCode.PERMISSION_DENIED,
            429: grpc.StatusCode.RESOURCE_EXHAUSTED,
        }[self.status]


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The settings of docs/security.md's authentication and rate-limit sections."""

    keys_file: Path | None = None
    jwt_hs256_secret_file: Path | None = None
    jwt_jwks: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = 30.0
    open_health: bool = True
    default_rate: Rate | None = None
    model_rates: tuple[ModelRate, ...] = ()

    @classmethod
    def from_settings(cls, settings: object) -> AuthConfig:
        """From any settings object with the server's field names (auth_keys,
        auth_jwt_hs256_secret_file, auth_jwt_jwks, auth_jwt_issuer, auth_jwt_audience,
        auth_jwt_leeway_s, auth_open_health, auth_default_rate, rate_limit); missing
        fields take their defaults, rates may be strings or parsed already."""

        def get(name: str, default: object = None) -> object:
            return getattr(settings, name, default)

        default_rate = get("auth_default_rate")
        if isinstance(default_rate, str):
            default_rate = _setting(
                "auth_default_rate", "--auth-default-rate", parse_rate, default_rate
            )
        model_rates: list[ModelRate] = []
        for rule in _sequence(get("rate_limit", ())):
            if isinstance(rule, str):
                rule = _setting("rate_limit", "--rate-limit", parse_model_rate, rule)
            if not isinstance(rule, ModelRate):
                raise AuthConfigError(
                    f"rate_limit (--rate-limit): {rule!r} is not GLOB=RPS[:BURST]"
                )
            model_rates.append(rule)
        if default_rate is not None and not isinstance(default_rate, Rate):
            raise AuthConfigError(f"auth_default_rate: {default_rate!r} is not RPS[:BURST]")
        return cls(
            keys_file=_path(get("auth_keys")),
            jwt_hs256_secret_file=_path(get("auth_jwt_hs256_secret_file")),
            jwt_jwks=_path(get("auth_jwt_jwks")),
            jwt_issuer=_text(get("auth_jwt_issuer")),
            jwt_audience=_text(get("auth_jwt_audience")),
            jwt_leeway_s=float(get("auth_jwt_leeway_s", 30.0)),  # type: ignore[arg-type]
            open_health=bool(get("auth_open_health", True)),
            default_rate=default_rate,
            model_rates=tuple(model_rates),
        )

    @property
    def authenticates(self) -> bool:
        """A keys file or a JWT verifier is configured: every request needs a credential."""
        return (
            self.keys_file is not None
            or self.jwt_hs256_secret_file is not None
            or self.jwt_jwks is not None
        )


def _setting(name: str, flag: str, parse: Callable[[str], object], text: str) -> object:
    try:
        return parse(text)
    except RateError as exc:
        raise AuthConfigError(f"{name} ({flag}): {exc}") from None


def _sequence(value: object) -> Sequence[object]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return value
    raise AuthConfigError(f"rate_limit (--rate-limit): expected a list of rules, got {value!r}")


def _path(value: object) -> Path | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, Path) else Path(str(value))


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


#: An authenticated principal, its rate, and its bucket's key (key principals and JWT
#: subjects of the same name have buckets apart).
_Found = tuple[Principal, Rate | None, str]


class Authority:
    """`check(credentials, action)`: the Principal, or a Denial saying why not."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Loads every file now; AuthConfigError names the setting whose file or value
        cannot work (a server then stops before it serves)."""
        self.config = config
        self._wall_clock = wall_clock
        if not 0 <= config.jwt_leeway_s <= MAX_LEEWAY_S:
            raise AuthConfigError(
                f"auth_jwt_leeway_s (--auth-jwt-leeway-s): {config.jwt_leeway_s:g} is not "
                f"between 0 and {MAX_LEEWAY_S:g} seconds"
            )
        self._keys: WatchedFile[KeysFile] | None = None
        if config.keys_file is not None:
            try:
                self._keys = WatchedFile(
                    config.keys_file, parse_keys, what="keys file", clock=clock
                )
            except (OSError, KeysFileError) as exc:
                raise AuthConfigError(
                    f"auth_keys (--auth-keys): keys file {config.keys_file}: {_reason(exc)}"
                ) from None
        self._jwt: JwtVerifier | None = None
        if config.jwt_hs256_secret_file is not None or config.jwt_jwks is not None:
            self._jwt = _verifier(config, clock)
        self._principal_buckets = RateBuckets(clock)
        self._model_buckets = RateBuckets(clock)

    @property
    def enabled(self) -> bool:
        """Authentication is on: every request needs a credential (health maybe not)."""
        return self._keys is not None or self._jwt is not None

    @property
    def limits_rates(self) -> bool:
        return self.enabled or bool(self.config.model_rates)

    def authenticate(self, credentials: Credentials) -> Principal | Denial:
        """Who the credentials name (401 when nobody), checking no scope and taking no
        token: for a stream whose requests are checked one by one as they come."""
        if not self.enabled:
            return ANONYMOUS
        found = self._authenticate(credentials)
        return found if isinstance(found, Denial) else found[0]

    def check(self, credentials: Credentials, action: Action) -> Principal | Denial:
        if action.kind is Kind.HEALTH and self.config.open_health:
            return ANONYMOUS
        principal = ANONYMOUS
        rate: Rate | None = None
        bucket_key = ""
        if self.enabled:
            found = self._authenticate(credentials)
            if isinstance(found, Denial):
                return found
            principal, rate, bucket_key = found
            assert principal.scopes is not None
            if not principal.scopes.grants(action):
                message = refusal(principal.name, principal.scopes, action)
                return Denial(403, message, principal=principal.name)
        taken = None
        if rate is not None:
            bucket = self._principal_buckets.bucket(bucket_key, rate)
            wait = bucket.take()
            if wait:
                return _over_rate(f"principal '{principal.name}'", rate, wait, principal.name)
            taken = bucket
        if action.kind is Kind.INFER and self.config.model_rates:
            limit = model_rate(self.config.model_rates, action.model)
            if limit is not None:
                wait = self._model_buckets.bucket(action.model, limit).take()
                if wait:
                    if taken is not None:
                        taken.give_back()  # the request does not run: it costs nothing
                    return _over_rate(f"model '{action.model}'", limit, wait, principal.name)
        return principal

    def _authenticate(self, credentials: Credentials) -> _Found | Denial:
        if credentials.repeated:
            return _unauthenticated(
                f"the request carries more than one {credentials.repeated}; send one credential",
                sent=True,
            )
        if credentials.authorization:
            scheme, _, credential = credentials.authorization.strip().partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                return _unauthenticated(
                    "the Authorization header must be 'Bearer <credential>'", sent=True
                )
            if self._jwt is not None and looks_like_jwt(credential):
                return self._token(self._jwt, credential)
            return self._api_key(credential)
        if credentials.api_key:
            return self._api_key(credentials.api_key.strip())
        if credentials.cert_subject:
            return self._subject(credentials.cert_subject)
        return _unauthenticated(
            "authentication required: send an API key (x-api-key: <key>) or a bearer "
            "credential (Authorization: Bearer <credential>)",
            sent=False,
        )

    def _token(self, verifier: JwtVerifier, token: str) -> _Found | Denial:
        try:
            subject, scopes = verifier.verify(token)
        except TokenRefused as refused:
            return _unauthenticated(f"the bearer token is not valid: {refused.message}", sent=True)
        return Principal(subject, scopes), self.config.default_rate, "jwt:" + subject

    def _api_key(self, key: str) -> _Found | Denial:
        from inferbridge.security.keys import hash_key

        entry = self._keys.current().by_digest.get(hash_key(key)) if self._keys else None
        if entry is None:
            return _unauthenticated("the API key is not valid", sent=True)
        return self._entry(entry, "API key")

    def _subject(self, subject: str) -> _Found | Denial:
        # A certificate is not a token: its 401s carry no error="invalid_token".
        entry = self._keys.current().by_subject.get(subject) if self._keys else None
        if entry is None:
            return _unauthenticated(
                f"the client certificate's subject '{subject}' is not a principal of the keys file",
                sent=False,
            )
        return self._entry(entry, "client certificate principal", sent=False)

    def _entry(self, entry: KeyEntry, what: str, *, sent: bool = True) -> _Found | Denial:
        now = dt.datetime.fromtimestamp(self._wall_clock(), dt.UTC)
        if entry.expired(now):
            assert entry.expires is not None
            when = entry.expires.replace(microsecond=0).isoformat().replace("+00:00", "Z")
            return _unauthenticated(f"{what} '{entry.name}' expired at {when}", sent=sent)
        rate = entry.rate or self.config.default_rate
        return Principal(entry.name, entry.scopes), rate, "key:" + entry.name


def _verifier(config: AuthConfig, clock: Clock) -> JwtVerifier:
    secret = None
    if config.jwt_hs256_secret_file is not None:
        try:
            secret = read_hs256_secret(config.jwt_hs256_secret_file)
        except (OSError, ValueError) as exc:
            raise AuthConfigError(
                "auth_jwt_hs256_secret_file (--auth-jwt-hs256-secret-file): "
                f"{config.jwt_hs256_secret_file}: {_reason(exc)}"
            ) from None
    jwks = None
    if config.jwt_jwks is not None:
        try:
            jwks = watch_jwks(config.jwt_jwks, clock)
        except (OSError, ValueError) as exc:
            raise AuthConfigError(
                f"auth_jwt_jwks (--auth-jwt-jwks): JWKS file {config.jwt_jwks}: {_reason(exc)}"
            ) from None
    return JwtVerifier(
        hs256_secret=secret,
        jwks=jwks,
        issuer=config.jwt_issuer,
        audience=config.jwt_audience,
        leeway_s=config.jwt_leeway_s,
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc)


def _unauthenticated(message: str, *, sent: bool) -> Denial:
    return Denial(401, message, token_sent=sent)


def _over_rate(who: str, rate: Rate, wait_s: float, principal: str) -> Denial:
    seconds = retry_after_seconds(wait_s)
    return Denial(
        429,
        f"{who} is over its rate limit of {rate.per_second:g} requests/s (burst {rate.burst}); "
        f"retry in {seconds} s",
        retry_after=seconds,
        principal=principal,
    )
