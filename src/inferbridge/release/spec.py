"""What a rollout declares: candidate, steps, analysis and webhooks (config.yaml's `rollout:`
block and the body of `POST /v1/rollouts`), validated before anything changes."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from inferbridge.errors import InvalidInput

__all__ = [
    "AgreementCheck",
    "AnalysisSpec",
    "ApprovalStep",
    "CanaryStep",
    "ErrorRateCheck",
    "LatencyCheck",
    "PrometheusCheck",
    "RolloutSpec",
    "ShadowStep",
    "Step",
    "parse_duration",
    "parse_rollout",
]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from `10m`, `1m30s`, `500ms`, `2h` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '30s' or '10m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        position, seconds = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        if position != len(text) or position == 0:
            raise ValueError(
                f"cannot parse duration {value!r}: expected a number with a unit "
                "(ms, s, m, h), e.g. '500ms', '30s', '10m', '1m30s'"
            )
    else:
        raise ValueError(f"expected a duration such as '30s' or '10m', got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration must not be negative, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShadowSpec(_Strict):
    duration: Duration
    sample: float = Field(default=1.0, gt=0.0, le=1.0)


class CanarySpec(_Strict):
    weight: float = Field(ge=0.0, le=100.0)
    duration: Duration


class ApprovalSpec(_Strict):
    name: str = Field(min_length=1, max_length=100)
    approvers: int = Field(default=1, ge=1, le=100)
    timeout: Duration | None = None  # then the rollout aborts


class ShadowStep(_Strict):
    shadow: ShadowSpec


class CanaryStep(_Strict):
    canary: CanarySpec


class ApprovalStep(_Strict):
    approval: ApprovalSpec


Step = ShadowStep | CanaryStep | ApprovalStep


class ErrorRateSpec(_Strict):
    max: float | None = Field(default=None, ge=0.0, le=1.0)
    max_ratio_to_baseline: float | None = Field(default=None, gt=0.0)
    #: Failure reasons counted as errors (FAILURE_REASONS of observability.stats).
    reasons: tuple[Literal["rejected", "canceled", "timeout", "invalid", "backend"], ...] = (
        "timeout",
        "backend",
    )

    @model_validator(mode="after")
    def _a_bound(self) -> ErrorRateSpec:
        if self.max is None and self.max_ratio_to_baseline is None:
            raise ValueError("error_rate needs 'max' and/or 'max_ratio_to_baseline'")
        return self


class LatencySpec(_Strict):
    max_ratio_to_baseline: float | None = Field(default=None, gt=0.0)
    max_ms: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _a_bound(self) -> LatencySpec:
        if self.max_ms is None and self.max_ratio_to_baseline is None:
            raise ValueError("a latency check needs 'max_ms' and/or 'max_ratio_to_baseline'")
        return self


class AgreementSpec(_Strict):
    min: float = Field(ge=0.0, le=1.0)
    #: Float outputs agree when every element is within atol + rtol * |primary|.
    atol: float = Field(default=1e-5, ge=0.0)
    rtol: float = Field(default=1e-4, ge=0.0)
    #: Optional bound on the largest absolute difference of a float output.
    max_abs_diff: float | None = Field(default=None, ge=0.0)


class PrometheusSpec(_Strict):
    query: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    max: float | None = None
    min: float | None = None
    timeout: Duration = 5.0

    @model_validator(mode="after")
    def _a_bound(self) -> PrometheusSpec:
        if self.max is None and self.min is None:
            raise ValueError("a prometheus check needs 'max' and/or 'min'")
        return self


class ErrorRateCheck(_Strict):
    error_rate: ErrorRateSpec


class LatencyCheck(_Strict):
    latency_p99: LatencySpec | None = None
    latency_p50: LatencySpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LatencyCheck:
        if (self.latency_p99 is None) == (self.latency_p50 is None):
            raise ValueError("a latency check is either latency_p99 or latency_p50")
        return self

    @property
    def quantile(self) -> float:
        return 0.99 if self.latency_p99 is not None else 0.5

    @property
    def spec(self) -> LatencySpec:
        spec = self.latency_p99 or self.latency_p50
        assert spec is not None
        return spec


class AgreementCheck(_Strict):
    agreement: AgreementSpec


class PrometheusCheck(_Strict):
    prometheus: PrometheusSpec


Check = ErrorRateCheck | LatencyCheck | AgreementCheck | PrometheusCheck


class AnalysisSpec(_Strict):
    interval: Duration = 10.0
    #: How far back each analysis looks (default: one interval).
    window: Duration | None = None
    min_requests: int = Field(default=50, ge=0)
    failure_limit: int = Field(default=2, ge=1)
    checks: tuple[Check, ...] = (
        ErrorRateCheck(error_rate=ErrorRateSpec(max=0.01, max_ratio_to_baseline=2.0)),
    )

    @model_validator(mode="after")
    def _positive_interval(self) -> AnalysisSpec:
        if self.interval < 0.1:
            raise ValueError("analysis.interval must be at least 100ms")
        if self.window is not None and self.window < self.interval:
            raise ValueError("analysis.window must not be shorter than analysis.interval")
        return self

    @property
    def window_s(self) -> float:
        return self.window if self.window is not None else self.interval


class RolloutSpec(_Strict):
    """One rollout: candidate version, steps in order, analysis, what happens on abort."""

    candidate: int = Field(ge=1)
    #: Sticky routing: `header:<name>` (HTTP header or gRPC metadata) or `parameter:<name>`
    #: (an inference request parameter); the same key always sees the same version.
    route_key: str | None = Field(default=None, pattern=r"^(header|parameter):[A-Za-z0-9_.-]+$")
    steps: tuple[Step, ...] = Field(min_length=1)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    on_abort: Literal["keep", "unload"] = "unload"
    webhooks: tuple[Annotated[str, Field(pattern=r"^https?://")], ...] = ()
    #: At most this many shadow copies run at once; more are dropped (and counted).
    shadow_queue: int = Field(default=64, ge=1, le=100_000)

    @model_validator(mode="after")
    def _reaches_full_weight(self) -> RolloutSpec:
        weights = [s.canary.weight for s in self.steps if isinstance(s, CanaryStep)]
        if not weights or weights[-1] != 100:
            raise ValueError(
                "the steps never reach weight 100: the last canary step must have weight 100 "
                f"(canary weights: {weights or 'none'})"
            )
        gates = [s.approval.name for s in self.steps if isinstance(s, ApprovalStep)]
        if len(gates) != len(set(gates)):
            raise ValueError(f"approval gate names must be unique, got {gates}")
        return self

    @property
    def route_header(self) -> str | None:
        if self.route_key is not None and self.route_key.startswith("header:"):
            return self.route_key.removeprefix("header:").lower()
        return None

    @property
    def route_parameter(self) -> str | None:
        if self.route_key is not None and self.route_key.startswith("parameter:"):
            return self.route_key.removeprefix("parameter:")
        return None


def parse_rollout(document: Any, where: str = "the rollout") -> RolloutSpec:
    """Validate a rollout document; InvalidInput names every field that is wrong."""
    if not isinstance(document, dict):
        raise InvalidInput(f"{where} must be a JSON/YAML object, got {type(document).__name__}")
    try:
        return RolloutSpec.model_validate(document)
    except ValidationError as exc:
        raise InvalidInput(f"{where}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """One line per problem: the field's path and what was expected."""
    problems = []
    for err in exc.errors():
        # Tagless unions report every member; a member's class name in the path says little.
        path = [str(p) for p in err["loc"] if not str(p)[:1].isupper()]
        problems.append(f"field '{'.'.join(path) or '(root)'}': {err['msg']}")
    unique = list(dict.fromkeys(problems))
    return "; ".join(unique[:6]) + ("; ..." if len(unique) > 6 else "")
