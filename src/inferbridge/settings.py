"""Typed server settings: INFERBRIDGE_* environment variables, overridden by the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """How one server runs. Every field can be set as INFERBRIDGE_<FIELD> (upper case)."""

    model_config = SettingsConfigDict(env_prefix="INFERBRIDGE_", extra="ignore")

    repository: Path | None = None
    """Model repository directory; None serves the bundled example repository."""

    host: str = "127.0.0.1"
    """Address both front ends listen on."""

    http_port: int = Field(default=8000, ge=0, le=65535)
    """REST port; 0 picks a free one (printed at start-up)."""

    grpc_port: int = Field(default=8001, ge=0, le=65535)
    """gRPC port; 0 picks a free one (printed at start-up)."""

    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=2**31 - 1)
    """Largest request body (REST, after decompression) or gRPC message accepted."""

    max_model_file_bytes: int = Field(default=16 * 1024**3, ge=0)
    """Largest model file a load reads from the repository or accepts in a load request's
    `file:` parameter (0: any size); a larger one fails the load with 400."""

    default_model: str = "iris"
    """The model behind the seed-compatible shortcuts (/predict, AIService.Predict)."""

    grpc_max_concurrent_rpcs: int = Field(default=1024, ge=1)
    """gRPC calls in progress at once; more are refused with RESOURCE_EXHAUSTED at once
    instead of queueing inside gRPC, where no deadline or queue bound can see them."""

    grpc_queue_full_code: Literal["resource_exhausted", "unavailable"] = "resource_exhausted"
    """The gRPC status of a request refused because its model's queue is full (REST always
    answers 429). `unavailable` is Triton's, and the only code KServe's gRPC client retries
    by default; on both gRPC front ends."""

    grpc_frontend: Literal["auto", "gateway", "grpcio"] = "auto"
    """What serves gRPC. `gateway`: the bundled Go gateway (built with the local Go toolchain
    on first use), several times cheaper per call than grpcio; `grpcio`: grpc.aio in this
    process; `auto`: the gateway when it is built or can be, else grpcio."""

    rest_frontend: Literal["auto", "gateway", "uvicorn"] = "auto"
    """What serves REST. `gateway`: the Go gateway, which also refuses requests beyond a
    model's queue bound with 429 before they reach Python; `uvicorn`: uvicorn in this
    process; `auto`: the gateway whenever it serves gRPC."""

    max_http_inflight: int = Field(default=4096, ge=0)
    """REST requests forwarded by the gateway and not yet answered, at most (0: no limit);
    more are answered 429 at once."""

    strict_readiness: bool = False
    """When true, /v2/health/ready is 503 while any model failed to load."""

    shutdown_grace_s: float = Field(default=10.0, ge=0)
    """How long in-flight requests may take to finish after SIGINT/SIGTERM."""

    log_level: str = "info"
    """Python logging level name."""

    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per line (timestamp, level, logger, message, and the request
    fields of access-log lines)."""

    access_log: bool = False
    """Log one line per request: protocol, model, version, status, duration, bytes, trace id."""

    model_control_mode: Literal["none", "poll", "explicit"] = "none"
    """`none`: load the repository once; `poll`: follow the repository directory (new,
    changed and removed models); `explicit`: load only `load_model` at start, then whatever
    the repository API loads and unloads."""

    repository_poll_secs: float = Field(default=15.0, gt=0)
    """How often the poll mode rescans the repository (filesystem events wake it sooner)."""

    state_dir: Path | None = None
    """Where the server keeps durable state (rollouts and their audit log, `rollouts.db`).
    None: `$XDG_STATE_HOME/inferbridge/<repository digest>` (default `~/.local/state/...`),
    one directory per repository, so a restarted server finds its rollouts again."""

    load_model: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Models the explicit mode loads at start (`*`: all of them); in the environment a
    comma-separated list or a JSON list."""

    metrics: bool = True
    """Serve Prometheus metrics at /metrics (and keep their histograms); off, only the
    statistics extension's counters are kept."""

    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Also serve /metrics on this port (0 picks a free one), apart from the REST port."""

    trace_mode: Literal["off", "opentelemetry"] = "off"
    """`opentelemetry`: export spans over OTLP (also turned on by OTEL_TRACES_EXPORTER=otlp)."""

    trace_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    """Fraction of requests that start a new trace (an incoming sampled traceparent is
    always continued)."""

    trace_endpoint: str | None = None
    """OTLP endpoint; default OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, else the SDK's default."""

    trace_protocol: Literal["grpc", "http/protobuf"] | None = None
    """OTLP transport; default OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, else grpc."""

    auth_keys: Path | None = None
    """API keys file (docs/security.md): turns authentication on; re-read when it changes."""

    auth_jwt_hs256_secret_file: Path | None = None
    """Accept JWTs signed HS256 with the secret in this file (at least 32 bytes; one
    trailing newline ignored); turns authentication on."""

    auth_jwt_jwks: Path | None = None
    """Accept JWTs signed RS256 or ES256 (P-256) by a key of this JWKS file, matched by
    `kid`; re-read when it changes; turns authentication on."""

    auth_jwt_issuer: str | None = None
    """When set, a JWT's `iss` must equal it."""

    auth_jwt_audience: str | None = None
    """When set, a JWT's `aud` must be or contain it."""

    auth_jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    """Clock skew allowed on a JWT's `exp` and `nbf`, in seconds."""

    auth_open_health: bool = True
    """Health endpoints (liveness, readiness, grpc.health) answer without a credential;
    false: they need the `read` scope."""

    auth_default_rate: str | None = None
    """RPS[:BURST]: the rate limit of a principal without its own (JWT subjects, keys
    without `rate`)."""

    rate_limit: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """GLOB=RPS[:BURST] per-model limits, one bucket per model shared by every caller (the
    first matching rule); in the environment a comma-separated list or a JSON list."""

    tls_cert: Path | None = None
    """PEM certificate chain: REST and gRPC speak TLS only (1.2 or later). Re-read with the
    key when either changes."""

    tls_key: Path | None = None
    """PEM private key of `tls_cert`."""

    tls_client_ca: Path | None = None
    """Mutual TLS: client certificates are verified against these CAs (PEM)."""

    tls_client_auth: Literal["require", "request"] | None = None
    """`require` (the default with a client CA): no certificate, no connection; `request`:
    a certificate is verified when sent, other credentials apply otherwise."""

    @field_validator("load_model", "rate_limit", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [name.strip() for name in text.split(",") if name.strip()]
        return value

    @field_validator("auth_default_rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            from inferbridge.security.ratelimit import parse_rate

            parse_rate(value)  # RateError is a ValueError: pydantic names the field
        return value

    @field_validator("rate_limit")
    @classmethod
    def _model_rates(cls, value: list[str]) -> list[str]:
        from inferbridge.security.ratelimit import parse_model_rate

        for rule in value:
            parse_model_rate(rule)
        return value

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        from inferbridge.security.tls import TLSFiles

        TLSFiles.from_settings(self)  # TLSConfigError (a ValueError) names what is missing
        return self

    @property
    def authenticates(self) -> bool:
        """A keys file or a JWT verifier is configured."""
        return (
            self.auth_keys is not None
            or self.auth_jwt_hs256_secret_file is not None
            or self.auth_jwt_jwks is not None
        )

    @model_validator(mode="after")
    def _gateway_serves_both(self) -> Settings:
        if self.rest_frontend == "gateway" and self.grpc_frontend == "grpcio":
            raise ValueError(
                "rest_frontend 'gateway' needs grpc_frontend 'gateway' or 'auto': the gateway "
                "serves gRPC whenever it serves REST"
            )
        return self
