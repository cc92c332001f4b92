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
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any, ClassVar

import orjson

__all__ = [
    "ACCESS_LOGGER",
    "ANSWERED",
    "LOG_SETTINGS",
    "AccessLog",
    "JsonFormatter",
    "LogSettings",
    "PRINCIPAL",
    "PRINCIPAL_HEADER",
    "configure_logging",
    "trace_id",
]

ACCESS_LOGGER = "inferbridge.access"

#: Set by the dataplane, only while the access log is on, in the task serving a request:
#: the version that answered it and the trace id of its span (or ""), which the front end
#: cannot know from the request alone (a default version; a trace started by the server).
ANSWERED: ContextVar[tuple[str, str]] = ContextVar("inferbridge_answered", default=("", ""))

#: Set by the Python front ends' authentication (security.asgi, security.interceptor) in
#: the task serving a request: who made it ("" when nobody had to say). Never a credential.
PRINCIPAL: ContextVar[str] = ContextVar("inferbridge_principal", default="")

#: The header (gRPC: metadata) by which the Go front-end process tells this one who the
#: principal is; it removes any that a client sends.
PRINCIPAL_HEADER = "x-inferbridge-principal"

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


_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _IsoFormatter(logging.Formatter):
    """The text lines with ISO-8601 UTC timestamps (Triton's log_format "ISO8601")."""

    def __init__(self) -> None:
        self.converter = _utc
        super().__init__(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )


def _utc(seconds: float | None) -> time.struct_time:
    return time.gmtime(seconds)


def _formatter(format: str) -> logging.Formatter:
    if format == "json":
        return JsonFormatter()
    if format == "ISO8601":
        return _IsoFormatter()
    return logging.Formatter(_TEXT)


def configure_logging(level: str, format: str = "text") -> None:
    """Send every log record to stderr, as text lines or JSON lines (`format`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The access log is asked for with --access-log, whatever the level says.
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
    LOG_SETTINGS.attach(handler, root.level, "json" if format == "json" else "default")


class LogSettings(logging.Filter):
    """Triton's logging extension over Python logging, changeable at run time: which levels
    are written (log_info, log_warning, log_error; log_verbose_level above 0 writes DEBUG),
    and the line format ("default" text, "ISO8601" text with UTC timestamps, or our "json").
    The access log is not affected (it is asked for with --access-log). The log goes to
    stderr; log_file cannot be changed at run time (only "" is accepted)."""

    _BOOLS: ClassVar[dict[str, str]] = {
        "log_info": "info",
        "log_warning": "warning",
        "log_error": "error",
    }
    # Triton's protocol document spells these in the plural; its server and clients do not.
    _ALIASES: ClassVar[dict[str, str]] = {"log_warnings": "log_warning", "log_errors": "log_error"}
    FORMATS = ("default", "ISO8601", "json")

    def __init__(self) -> None:
        super().__init__()
        self.info = True
        self.warning = True
        self.error = True
        self.verbose = 0
        self.format = "default"
        self._handler: logging.Handler | None = None

    def attach(self, handler: logging.Handler, level: int, format: str) -> None:
        """Take over `handler` (the server's one) at start, with the configured level."""
        self._handler = handler
        handler.addFilter(self)
        self.verbose = 1 if level <= logging.DEBUG else 0
        self.info = level <= logging.INFO
        self.warning = level <= logging.WARNING
        self.error = level <= logging.ERROR
        self.format = format

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS_LOGGER:
            return True
        level = record.levelno
        if level >= logging.ERROR:
            return self.error
        if level >= logging.WARNING:
            return self.warning
        if level >= logging.INFO:
            return self.info
        return self.verbose > 0

    def current(self) -> dict[str, Any]:
        return {
            "log_file": "",
            "log_info": self.info,
            "log_warning": self.warning,
            "log_error": self.error,
            "log_verbose_level": self.verbose,
            "log_format": self.format,
        }

    def update(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply `changes` (all or nothing) and answer the current settings; InvalidInput
        names an unknown key or a bad value."""
        from inferbridge.errors import InvalidInput

        wanted: dict[str, Any] = {}
        for raw_key, value in changes.items():
            key = self._ALIASES.get(raw_key, raw_key)
            if key in self._BOOLS:
                if not isinstance(value, bool):
                    raise InvalidInput(f"log setting '{raw_key}' must be a boolean, got {value!r}")
            elif key == "log_verbose_level":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise InvalidInput(
                        f"log setting 'log_verbose_level' must be an integer >= 0, got {value!r}"
                    )
            elif key == "log_format":
                if value not in self.FORMATS:
                    raise InvalidInput(
                        f"log setting 'log_format' must be one of {', '.join(self.FORMATS)}, "
                        f"got {value!r}"
                    )
            elif key == "log_file":
                if value != "":
                    raise InvalidInput(
                        "log setting 'log_file' cannot be changed at run time: the server logs "
                        "to stderr (redirect it, or use a log collector)"
                    )
            else:
                raise InvalidInput(
                    f"unknown log setting '{raw_key}'; known: log_file, log_info, log_warning, "
                    "log_error, log_verbose_level, log_format"
                )
            wanted[key] = value
        for key, value in wanted.items():
            if key in self._BOOLS:
                setattr(self, self._BOOLS[key], value)
            elif key == "log_verbose_level":
                self.verbose = value
            elif key == "log_format" and value != self.format:
                self.format = value
                if self._handler is not None:
                    self._handler.setFormatter(_formatter(value))
        if wanted:
            self._apply_level()
        return self.current()

    def _apply_level(self) -> None:
        # The root level is the lowest level written, so that disabled levels cost a
        # logger call nothing; the filter drops the levels switched off in between.
        level = logging.CRITICAL + 1
        for on, threshold in (
            (self.error, logging.ERROR),
            (self.warning, logging.WARNING),
            (self.info, logging.INFO),
            (self.verbose > 0, logging.DEBUG),
        ):
            if on:
                level = threshold
        logging.getLogger().setLevel(level)


#: The process's log settings (logging is per process).
LOG_SETTINGS = LogSettings()


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
        principal: str | None = None,
    ) -> None:
        """`method`: the HTTP method or the gRPC full method name; `route`: the HTTP path
        (as sent) or the gRPC method; `status`: the HTTP status or the gRPC code name;
        `principal`: who made the request (None: as PRINCIPAL says)."""
        if principal is None:
            principal = PRINCIPAL.get()
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
            "principal": principal,
        }
        self._logger.info(
            "%s %s %s %.3fms in=%d out=%d model=%s version=%s trace_id=%s principal=%s",
            protocol,
            f"{method} {route}" if protocol == "http" else method,
            status,
            duration_ms,
            request_bytes,
            response_bytes,
            model or "-",
            version or "-",
            tid or "-",
            principal or "-",
            extra=fields,
        )

    def http(
        self,
        scope: Mapping[str, Any],
        *,
        status: int,
        duration_s: float,
        request_bytes: int,
        response_bytes: int,
        principal: str | None = None,
    ) -> None:
        """One HTTP request, its model, version and trace read from the ASGI scope."""
        from inferbridge.observability.frontend import path_model

        path: str = scope["path"]
        model, version = path_model(path)
        self.request(
            protocol="http",
            method=scope["method"],
            route=path,
            model=model,
            version=version,
            status=str(status),
            duration_s=duration_s,
            request_bytes=request_bytes,
            response_bytes=response_bytes,
            trace=next((v for k, v in scope["headers"] if k == b"traceparent"), None),
            principal=principal,
        )

    def grpc(
        self,
        method: str,
        request: object,
        metadata: Iterable[tuple[str, Any]],
        *,
        code: str,
        duration_s: float,
        request_bytes: int,
        response_bytes: int,
        principal: str | None = None,
    ) -> None:
        """One gRPC call, its model and version read from the request message (None when
        it did not decode) and its trace from the call's metadata."""
        model, version = _model_version(request)
        self.request(
            protocol="grpc",
            method=method,
            route=method,
            model=model,
            version=version,
            status=code,
            duration_s=duration_s,
            request_bytes=request_bytes,
            response_bytes=response_bytes,
            trace=next((v for k, v in metadata if k == "traceparent"), None),
            principal=principal,
        )


def _model_version(request: object) -> tuple[str, str]:
    """The model and version a gRPC request names (ModelInfer's model_name, or the name of
    the metadata, ready, config and statistics requests), else ("", "")."""
    for name, version in (("model_name", "model_version"), ("name", "version")):
        model = getattr(request, name, None)
        if isinstance(model, str):
            value = getattr(request, version, "")
            return model, value if isinstance(value, str) else ""
    return "", ""
