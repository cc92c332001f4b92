"""What operators and agents send the control plane, validated: resources, artefact
manifests, deployments, rollouts and node registrations.

Every parse either returns a whole valid object or raises `InvalidSpec` naming the field,
so nothing is half-applied.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from inferbridge.fleet.errors import InvalidSpec

__all__ = [
    "Accelerator",
    "Capacity",
    "DeploymentSpec",
    "Manifest",
    "Registration",
    "Resources",
    "RolloutSpec",
    "format_cpu",
    "format_memory",
    "parse_cpu",
    "parse_memory",
    "parse_model",
    "parse_resources",
    "parse_selector",
]

T = TypeVar("T", bound=BaseModel)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MEMORY_UNITS = {
    "": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def parse_cpu(text: str | float | int) -> float:
    """CPU cores from Kubernetes notation: `500m` = 0.5, `2` = 2."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        raw = text.strip()
        try:
            value = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)
        except ValueError:
            raise InvalidSpec(f"cpu {text!r} is not a number of cores (e.g. 500m or 2)") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidSpec(f"cpu {text!r} must be a non-negative number of cores")
    return value


def parse_memory(text: str | int) -> int:
    """Bytes from Kubernetes notation: `256Mi`, `1G`, `1048576`."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKMGT]i?|)\s*", text)
        if match is None or match.group(2) not in _MEMORY_UNITS:
            raise InvalidSpec(f"memory {text!r} is not a size (e.g. 256Mi, 1Gi, 500M)")
        value = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])
    if value < 0:
        raise InvalidSpec(f"memory {text!r} must not be negative")
    return value


def format_cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m" if cores < 1 else f"{cores:g}"


def format_memory(size: int) -> str:
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if size >= _MEMORY_UNITS[unit] and size % _MEMORY_UNITS[unit] == 0:
            return f"{size // _MEMORY_UNITS[unit]}{unit}"
    return str(size)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    """What one replica of a model needs on its node."""

    cpu: float = 0.0
    memory: int = 0
    gpu: float = 0.0
    gpu_type: str | None = None

    def describe(self) -> str:
        parts = []
        if self.cpu:
            parts.append(f"cpu={format_cpu(self.cpu)}")
        if self.memory:
            parts.append(f"memory={format_memory(self.memory)}")
        if self.gpu:
            parts.append(f"gpu={self.gpu:g}")
        if self.gpu_type:
            parts.append(f"gpu_type={self.gpu_type}")
        return ",".join(parts) or "nothing"


def parse_resources(value: str | dict[str, Any] | None) -> Resources:
    """`cpu=500m,memory=256Mi,gpu=0.25,gpu_type=T4` (or the same as a mapping)."""
    if value is None or value == "":
        return Resources()
    items: dict[str, Any]
    if isinstance(value, str):
        items = {}
        for part in value.split(","):
            key, sep, raw = part.partition("=")
            if not sep or not key.strip():
                raise InvalidSpec(f"resources: {part!r} is not key=value")
            items[key.strip()] = raw.strip()
    elif isinstance(value, dict):
        items = dict(value)
    else:
        raise InvalidSpec("resources must be a mapping or cpu=..,memory=..,gpu=..,gpu_type=..")
    unknown = sorted(set(items) - {"cpu", "memory", "gpu", "gpu_type"})
    if unknown:
        raise InvalidSpec(
            f"resources: unknown key(s) {', '.join(unknown)} (cpu, memory, gpu, gpu_type)"
        )
    gpu_raw = items.get("gpu", 0)
    try:
        gpu = float(gpu_raw)
    except (TypeError, ValueError):
        raise InvalidSpec(f"resources: gpu {gpu_raw!r} is not a number") from None
    if not math.isfinite(gpu) or gpu < 0:
        raise InvalidSpec(f"resources: gpu {gpu_raw!r} must be a non-negative number")
    gpu_type = items.get("gpu_type")
    if gpu_type is not None and not isinstance(gpu_type, str):
        raise InvalidSpec("resources: gpu_type must be a string")
    if gpu_type and gpu == 0:
        raise InvalidSpec("resources: gpu_type needs gpu > 0")
    return Resources(
        cpu=parse_cpu(items.get("cpu", 0)),
        memory=parse_memory(items.get("memory", 0)),
        gpu=gpu,
        gpu_type=gpu_type or None,
    )


def parse_selector(value: str | dict[str, str] | None) -> dict[str, str]:
    """`zone=a,line=3` (or a mapping): every label must equal."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        pairs = {str(k): str(v) for k, v in value.items()}
    else:
        pairs = {}
        for part in value.split(","):
            key, sep, raw = part.partition("=")
            if not sep or not key.strip():
                raise InvalidSpec(f"selector: {part!r} is not key=value")
            pairs[key.strip()] = raw.strip()
    return pairs


class Accelerator(_Strict):
    """A device on a node: `count` of one `type`, each with `memory` bytes."""

    type: str
    count: Annotated[int, Field(ge=0)] = 1
    memory: Annotated[int, Field(ge=0)] = 0


class Capacity(_Strict):
    """What a node offers."""

    cpu: Annotated[float, Field(ge=0)] = 0.0
    memory: Annotated[int, Field(ge=0)] = 0
    accelerators: list[Accelerator] = []


_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)$")


def check_host_port(value: str, what: str) -> str:
    """`value` when it is "" or HOST:PORT (a name, an IPv4 address or a bracketed IPv6
    one; a port 1-65535), else a ValueError saying what is expected."""
    if value == "":
        return value
    host, colon, port = value.rpartition(":")
    if (
        not colon
        or not _HOST.match(host)
        or not port.isdigit()
        or not 1 <= int(port) <= 65535
        or port != str(int(port))
    ):
        raise ValueError(
            f"{what} must be HOST:PORT (e.g. 10.0.0.5:8001, [::1]:8001) or empty, not {value!r}"
        )
    return value


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must be letters, digits, '_', '.', '-' (1-128)")
    return value


class Registration(_Strict):
    """What an agent sends when it registers its node."""

    name: str
    labels: dict[str, str] = {}
    capacity: Capacity = Capacity()
    server_url: str = ""
    #: The server's gRPC address as the gateway reaches it, HOST:PORT ("" = none).
    server_grpc: str = ""
    heartbeat_interval_s: Annotated[float, Field(gt=0, le=300)] = 1.0
    agent_version: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "node name")

    @field_validator("server_grpc")
    @classmethod
    def _grpc(cls, value: str) -> str:
        return check_host_port(value, "server_grpc")


class Manifest(_Strict):
    """An artefact pushed to object storage: where it is and what its bytes must hash to."""

    model: str
    version: Annotated[int, Field(ge=1)]
    uri: str
    sha256: str
    size: Annotated[int, Field(ge=0)]
    format: Literal["tar.gz"] = "tar.gz"
    files: list[str] = []
    created: str = ""

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return _check_name(value, "model name")

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return value

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if not re.match(r"^(s3|https?|file)://.+", value) and not value.startswith("/"):
            raise ValueError("uri must be s3://bucket/key, http(s)://..., file:///path or /path")
        return value


Replicas = int | Literal["all"]


class DeploymentSpec(_Strict):
    """The desired state of one model across the fleet."""

    model: str
    version: Annotated[int, Field(ge=1)]
    replicas: Annotated[Replicas, Field(union_mode="left_to_right")] = 1
    selector: dict[str, str] = {}
    resources: Resources = Resources()

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return _check_name(value, "model name")

    @field_validator("resources", mode="before")
    @classmethod
    def _resources(cls, value: Any) -> Any:
        if isinstance(value, Resources):
            return value
        try:
            return parse_resources(value)
        except InvalidSpec as exc:
            raise ValueError(exc.message) from None

    @field_validator("selector", mode="before")
    @classmethod
    def _selector(cls, value: Any) -> Any:
        if not isinstance(value, str | dict | None):
            raise ValueError("selector must be a mapping or key=value,...")
        try:
            return parse_selector(value)
        except InvalidSpec as exc:
            raise ValueError(exc.message) from None

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: Replicas) -> Replicas:
        if isinstance(value, int) and value < 1:
            raise ValueError("replicas must be >= 1 or 'all'")
        return value


class GateErrorRate(_Strict):
    """A wave's failed share of the new version's requests (as a rollout's error_rate)."""

    max: Annotated[float, Field(ge=0.0, le=1.0)]


class GateLatency(_Strict):
    """The new version's mean latency of successful requests over the gate (Triton's
    statistics give a mean, not quantiles): a bound, and/or a ratio to the old version's
    mean on the same nodes."""

    max_ms: Annotated[float, Field(gt=0.0)] | None = None
    max_ratio_to_baseline: Annotated[float, Field(gt=0.0)] | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> GateLatency:
        if self.max_ms is None and self.max_ratio_to_baseline is None:
            raise ValueError("latency_mean needs 'max_ms' and/or 'max_ratio_to_baseline'")
        return self


class WaveAnalysis(_Strict):
    """What a wave's health gate judges besides readiness: the figures each of its nodes
    reports for the new version (the agent's per-model `stats`) over the gate."""

    min_requests: Annotated[int, Field(ge=1)] = 20
    error_rate: GateErrorRate | None = GateErrorRate(max=0.01)
    latency_mean: GateLatency | None = None


class RolloutSpec(_Strict):
    """A new version in waves: each a cumulative percentage of the deployment's nodes."""

    model: str
    version: Annotated[int, Field(ge=1)]
    waves: list[float] = [100.0]
    health_gate_s: Annotated[float, Field(ge=0)] = 60.0
    wave_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    #: None: the gate looks at readiness only.
    analysis: WaveAnalysis | None = None

    @field_validator("waves")
    @classmethod
    def _waves(cls, waves: list[float]) -> list[float]:
        if not waves:
            raise ValueError("waves must not be empty")
        for earlier, later in itertools.pairwise(waves):
            if later <= earlier:
                raise ValueError(f"waves must increase ({earlier:g}% then {later:g}%)")
        if waves[0] <= 0:
            raise ValueError("the first wave must be above 0%")
        if waves[-1] != 100:
            raise ValueError(f"the last wave must be 100% (it is {waves[-1]:g}%)")
        return waves


def parse_model(kind: type[T], data: Any, what: str) -> T:
    """Validate `data` as `kind`, or raise InvalidSpec naming the first bad field."""
    if not isinstance(data, dict):
        raise InvalidSpec(f"{what} must be a JSON object")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidSpec(f"{what}: field '{where}': {message}") from None
