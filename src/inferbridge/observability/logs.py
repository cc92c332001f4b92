"""Logging set-up (text or JSON lines) and the access log, configured by the CLI at start.

Nothing is configured at import. The access log is one `inferbridge.access` record per
request, written by whichever front end answers it (the gateway backend, the uvicorn
wrapper, the grpc.aio interceptor); when it is off the front ends hold no `AccessLog` and
pay nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from contextvars import ContextVar
from typing import Any

import orjson

__all__ = [
    "ACCESS_LOGGER",
    "ANSWERED",
    "AccessLog",
    "JsonFormatter",
    "configure_logging",
    "trace_id",
]

ACCESS_LOGGER = "inferbridge.access"

#: Set by the dataplane, only while the access log is on, in the task serving a request:
#: the version that answered it and the trace id of its span (or ""), which the front end
#: cannot know from the request alone (a default version; a trace started by the server).
ANSWERED: ContextVar[tuple[str, str]] = ContextVar("inferbridge_answered", default=("", ""))

#: LogRecord attributes that are not extra fields.
_STANDARD = frozenset(
    {*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (ISO-8601, UTC), level, logger, message, then
    every `extra` field of the record (and `exception` with the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(document, default=str).decode()


def configure_logging(level: str, format: str = "text") -> None:
    """Send every log record to stderr, as text lines or JSON lines (`format`)."""
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The access log is asked for with --access-log, whatever the level says.
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)


def trace_id(traceparent: str | bytes | None) -> str:
    """The trace id of a W3C traceparent (`00-<trace id>-<span id>-<flags>`), else ""."""
    if not traceparent:
        return ""
    text = traceparent.decode("latin-1") if isinstance(traceparent, bytes) else traceparent
    parts = text.strip().split("-")
    if len(parts) >= 4 and len(parts[1]) == 32:
        return parts[1].lower()
    return ""


class AccessLog:
    """Writes one access-log record per request."""

    __slots__ = ("_logger",)

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)

    def request(
        self,
        *,
        protocol: str,
        method: str,
        route: str,
        model: str,
        version: str,
        status: str,
        duration_s: float,
        request_bytes: int,
        response_bytes: int,
        trace: str | bytes | None,
    ) -> None:
        """`method`: the HTTP method or the gRPC full method name; `route`: the HTTP path
        (as sent) or the gRPC method; `status`: the HTTP status or the gRPC code name."""
        duration_ms = round(duration_s * 1000.0, 3)
        tid = trace_id(trace)
        if not version or not tid:
            answered_version, answered_trace = ANSWERED.get()
            version = version or answered_version
            tid = tid or answered_trace
        fields = {
            "protocol": protocol,
            "method": method,
            "route": route,
            "model": model,
            "version": version,
            "status": status,
            "duration_ms": duration_ms,
            "request_bytes": request_bytes,
            "response_bytes": response_bytes,
            "trace_id": tid,
        }
        self._logger.info(
            "%s %s %s %.3fms in=%d out=%d model=%s version=%s trace_id=%s",
            protocol,
            f"{method} {route}" if protocol == "http" else method,
            status,
            duration_ms,
            request_bytes,
            response_bytes,
            model or "-",
            version or "-",
            tid or "-",
            extra=fields,
        )
