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

    @field_validator("load_model", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [name.strip() for name in text.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _gateway_serves_both(self) -> Settings:
        if self.rest_frontend == "gateway" and self.grpc_frontend == "grpcio":
            raise ValueError(
                "rest_frontend 'gateway' needs grpc_frontend 'gateway' or 'auto': the gateway "
                "serves gRPC whenever it serves REST"
            )
        return self
