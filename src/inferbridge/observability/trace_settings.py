"""Triton's trace extension over our OpenTelemetry tracing: the settings a client reads and
changes at run time (globally or for one model), and the root-sampling decision they make.

Triton's keys and how they map:

- trace_level: ["OFF"] starts no new traces (a caller's sampled trace context is still
  continued); ["TIMESTAMPS"] traces (our spans carry timings; "TENSORS" is refused).
- trace_rate: one trace in every N requests, i.e. a sampling ratio of 1/N.
- trace_count: how many more traces to start (-1: no limit); at 0 no new traces start.
- trace_file, log_frequency, trace_mode: spans are exported over OTLP, not written to a
  file, so only "" / "0" / "opentelemetry" are accepted (no change).

Per-model settings override the global ones key by key; a key set to null (REST) or to no
value (gRPC) falls back to the global value, and an empty per-model update clears them all.
When tracing was not enabled at start (`--trace-mode opentelemetry`), the settings read
trace_level OFF and a change that would start traces is refused: the exporter is set up at
start only.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from inferbridge.errors import InvalidInput

if TYPE_CHECKING:
    from inferbridge.observability.tracing import Tracing

__all__ = ["TRACE_KEYS", "TraceSettings", "settings_of"]

TRACE_KEYS = (
    "trace_level",
    "trace_rate",
    "trace_count",
    "log_frequency",
    "trace_file",
    "trace_mode",
)
_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
_FIXED = {"log_frequency": "0", "trace_file": "", "trace_mode": "opentelemetry"}
_BOUND = 2**64


@dataclass(frozen=True, slots=True)
class _Policy:
    on: bool | None = None
    ratio: float | None = None


class _Counter:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


class TraceSettings:
    """The trace settings of one server. `enabled` is whether tracing was started."""

    def __init__(self, ratio: float | None) -> None:
        """`ratio`: the start-up --trace-rate, or None when tracing is off."""
        self.enabled = ratio is not None
        start = ratio or 0.0
        # A start-up rate of 0 reads as level OFF; turning it on then samples every request
        # unless trace_rate says otherwise.
        self._global = _Policy(on=start > 0, ratio=start if start > 0 else 1.0)
        self._models: dict[str, _Policy] = {}
        self._counters: dict[str | None, _Counter] = {None: _Counter(-1)}
        self._lock = threading.Lock()
        #: Whether any request without a caller's trace context may start a trace; the
        #: front ends pass such requests straight through when not.
        self.new_traces = self.enabled and start > 0

    @property
    def ratio(self) -> float:
        """The global sampling ratio of new traces now (0 when the level is OFF)."""
        policy = self._global
        return (policy.ratio or 0.0) if policy.on else 0.0

    # -- reading and changing --------------------------------------------------------------

    def current(self, model: str | None = None) -> dict[str, Any]:
        policy = self._effective(model)
        counter = self._counter(model)
        assert policy.ratio is not None
        return {
            "trace_level": ["TIMESTAMPS"] if policy.on else ["OFF"],
            "trace_rate": str(max(1, round(1 / policy.ratio))),
            "trace_count": str(counter.left),
            **_FIXED,
        }

    def update(self, changes: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
        """Apply `changes` (key -> value; None clears a per-model key) all or nothing and
        answer the settings now in force for `model` (or globally)."""
        parsed: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in TRACE_KEYS:
                raise InvalidInput(f"unknown trace setting '{key}'; known: {', '.join(TRACE_KEYS)}")
            if value is None:
                if model is None:
                    raise InvalidInput(
                        f"trace setting '{key}': a global setting cannot be cleared, only set"
                    )
                parsed[key] = None
            else:
                parsed[key] = _parse(key, value)
        if not self.enabled and _starts_traces(parsed):
            raise InvalidInput(
                "tracing is off on this server: start it with --trace-mode opentelemetry "
                "(and --trace-endpoint) to change trace settings at run time"
            )
        with self._lock:
            if model is not None and not changes:
                self._models.pop(model, None)
                self._counters.pop(model, None)
            elif self.enabled:
                self._apply(parsed, model)
            self.new_traces = self.enabled and any(
                self._may_start(m) for m in (None, *self._models)
            )
        return self.current(model)

    # -- the sampler's decision ------------------------------------------------------------

    def sample(self, model: str | None, trace_id: int) -> bool:
        """Whether a request for `model` without a sampled parent starts trace `trace_id`
        (the trace id's low 64 bits against the ratio, as TraceIdRatioBased decides)."""
        policy = self._effective(model)
        if not policy.on or policy.ratio is None:
            return False
        if (trace_id & 0xFFFFFFFFFFFFFFFF) >= round(policy.ratio * _BOUND):
            return False
        counter = self._counter(model)
        if counter.left < 0:
            return True
        with self._lock:
            if counter.left == 0:
                return False
            counter.left -= 1
            if counter.left == 0:
                self.new_traces = any(self._may_start(m) for m in (None, *self._models))
        return True

    # -- helpers ---------------------------------------------------------------------------

    def _apply(self, parsed: dict[str, Any], model: str | None) -> None:
        if model is None:
            policy = self._global
            for key, value in parsed.items():
                policy = _set(policy, key, value)
            self._global = policy
        else:
            policy = self._models.get(model, _Policy())
            for key, value in parsed.items():
                policy = _set(policy, key, value)
            self._models[model] = policy
        if "trace_count" in parsed:
            count = parsed["trace_count"]
            if count is None:
                self._counters.pop(model, None)
            else:
                self._counters[model] = _Counter(count)

    def _effective(self, model: str | None) -> _Policy:
        own = self._models.get(model) if model is not None else None
        base = self._global
        if own is None:
            return base
        return _Policy(
            on=base.on if own.on is None else own.on,
            ratio=base.ratio if own.ratio is None else own.ratio,
        )

    def _counter(self, model: str | None) -> _Counter:
        if model is not None and model in self._counters:
            return self._counters[model]
        return self._counters[None]

    def _may_start(self, model: str | None) -> bool:
        return bool(self._effective(model).on) and self._counter(model).left != 0


_OFF: TraceSettings | None = None


def settings_of(tracing: Tracing | None) -> TraceSettings:
    """The server's trace settings; a server started without tracing has fixed ones."""
    global _OFF
    if tracing is not None:
        return tracing.settings
    if _OFF is None:
        _OFF = TraceSettings(None)
    return _OFF


def _set(policy: _Policy, key: str, value: Any) -> _Policy:
    if key == "trace_level":
        return replace(policy, on=value)
    if key == "trace_rate":
        return replace(policy, ratio=None if value is None else 1 / value)
    return policy  # trace_count has its counter; the fixed keys change nothing


def _starts_traces(parsed: dict[str, Any]) -> bool:
    """Whether a change means anything beyond "no tracing" (refused while tracing is off)."""
    return any(
        value is not None and key not in _FIXED and not (key == "trace_level" and not value)
        for key, value in parsed.items()
    )


def _parse(key: str, value: Any) -> Any:
    """A setting's value as sent (REST: a string, or a list for trace_level; numbers are
    taken too) -> True/False for trace_level, an int for rate and count, the text else."""
    if key == "trace_level":
        levels = value if isinstance(value, list) else [value]
        if not levels or not all(isinstance(v, str) for v in levels):
            raise InvalidInput(
                f"trace setting 'trace_level' must be a list of levels, got {value!r}"
            )
        unknown = [v for v in levels if v not in _LEVELS]
        if unknown:
            raise InvalidInput(
                f"trace setting 'trace_level': unknown level(s) {unknown}; use OFF or TIMESTAMPS"
            )
        if "TENSORS" in levels:
            raise InvalidInput(
                "trace setting 'trace_level': TENSORS is not supported (spans carry timings, "
                "not tensor data); use TIMESTAMPS"
            )
        if "OFF" in levels and len(levels) > 1:
            raise InvalidInput("trace setting 'trace_level': OFF cannot be combined with a level")
        return levels != ["OFF"]
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidInput(f"trace setting '{key}' takes one value, got {value!r}")
        value = value[0]
    if key in ("trace_rate", "trace_count"):
        number = _integer(key, value)
        if key == "trace_rate" and number < 1:
            raise InvalidInput(
                f"trace setting 'trace_rate' must be at least 1 (one trace in every N "
                f"requests), got {value!r}"
            )
        if key == "trace_count" and number < -1:
            raise InvalidInput(
                f"trace setting 'trace_count' must be -1 (no limit) or more, got {value!r}"
            )
        return number
    text = str(value)
    if text != _FIXED[key]:
        raise InvalidInput(
            f"trace setting '{key}' cannot be {value!r}: this server exports OpenTelemetry "
            f"spans over OTLP (--trace-endpoint); only {_FIXED[key]!r} is accepted"
        )
    return text


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"trace setting '{key}' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise InvalidInput(f"trace setting '{key}' must be an integer, got {value!r}")
