"""The schema of a model's `config.yaml`, validated with errors naming the file and field;
`read_config` also reads Triton's `config.pbtxt` (`inferbridge.repository.triton`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from inferbridge.errors import ConfigError
from inferbridge.protocol.datatypes import DATATYPES
from inferbridge.protocol.types import TensorSpec
from inferbridge.release.spec import RolloutSpec

__all__ = [
    "DynamicBatching",
    "InstanceGroup",
    "Isolation",
    "ModelConfig",
    "TensorConfig",
    "CONFIG_FILE",
    "CONFIG_FILES",
    "TRITON_CONFIG_FILE",
    "VersionPolicy",
    "find_config",
    "load_config",
    "read_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(_Strict):
    """An input or output. `shape` is the full shape, batch dimension included; -1 is variable."""

    name: str
    datatype: str
    shape: list[int]

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"unknown datatype {value!r}; expected one of {', '.join(DATATYPES)}")
        return value

    @field_validator("shape")
    @classmethod
    def _valid_dims(cls, value: list[int]) -> list[int]:
        if any(d < -1 for d in value):
            raise ValueError("dimensions are non-negative, or -1 for a variable dimension")
        return value

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, tuple(self.shape))


class LatestPolicy(_Strict):
    num_versions: int = Field(default=1, ge=1)


class SpecificPolicy(_Strict):
    versions: list[int] = Field(min_length=1)


class VersionPolicy(_Strict):
    """Which version directories are served: exactly one of latest, all, specific."""

    latest: LatestPolicy | None = None
    all: dict[str, Any] | None = None
    specific: SpecificPolicy | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        chosen = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"choose one of latest, all, specific (got {', '.join(chosen)})")
        return self

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.all is not None:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in self.specific.versions]
        count = self.latest.num_versions if self.latest is not None else 1
        return ordered[-count:]


_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")

DEFAULT_MAX_QUEUE_SIZE = 1024
"""Requests a model version queues before answering 429; the server never grows without limit."""


class DynamicBatching(_Strict):
    """Triton's vocabulary; times in milliseconds (floats allowed)."""

    max_queue_delay_ms: float = Field(default=0.0, ge=0)
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_size: int = Field(default=DEFAULT_MAX_QUEUE_SIZE, ge=0, description="0: unbounded")
    default_timeout_ms: float = Field(default=0.0, ge=0, description="0 means no timeout")
    priority_levels: int = Field(default=1, ge=1, description="1 is the highest level")
    default_priority_level: int = Field(default=0, ge=0, description="0: the lowest level")
    hold_for_delay: bool = Field(
        default=False,
        description="Triton's rule: a batch that is neither max_batch_size nor a preferred "
        "size waits the whole max_queue_delay_ms, even once requests stop arriving; false "
        "sends it as soon as arrivals go quiet",
    )

    @model_validator(mode="after")
    def _levels_agree(self) -> DynamicBatching:
        if self.default_priority_level > self.priority_levels:
            raise ValueError("default_priority_level is above priority_levels")
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise ValueError("preferred_batch_sizes must be positive")
        return self


class InstanceGroup(_Strict):
    count: int = Field(default=1, ge=1)
    kind: Literal["cpu", "gpu"] = "cpu"
    gpus: list[int] = Field(default_factory=list)


class Isolation(_Strict):
    """Where a model's runtime runs (docs/isolation.md). `process`: in a supervised worker
    process, so that a crash, an out-of-memory kill or a hang fails only this model's
    requests; `inline`: in the server. Unset: the runtime's default (`process` for
    `native`, `inline` for the others). `isolation: process` is short for `{mode: process}`."""

    mode: Literal["process", "inline"] | None = None
    memory_limit_mb: float = Field(
        default=0, ge=0, description="the worker's address-space cap (RLIMIT_AS); 0: none"
    )
    call_timeout_s: float = Field(
        default=120,
        ge=0,
        description="a call whose requests have no deadline and that runs longer is a hang: "
        "the worker is killed and restarted; 0: no limit",
    )
    max_crashes: int = Field(
        default=5, ge=1, description="this many failures within crash_window_s: a crash loop"
    )
    crash_window_s: float = Field(default=60, gt=0)
    backoff_initial_s: float = Field(
        default=0.5, ge=0, description="the first restart's delay; doubled for each failure"
    )
    backoff_max_s: float = Field(default=30, ge=0)
    nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description="the worker's niceness: above 0 it yields the CPU to the server and "
        "its other models (an untrusted or CPU-bound model)",
    )
    priority: Literal["normal", "idle"] = Field(
        default="normal",
        description="`idle`: the worker runs only on CPU time nothing else wants "
        "(SCHED_IDLE; where the kernel has autogroup, also a session of its own at the "
        "lowest weight), for an untrusted or runaway model beside important ones; "
        "implies mode: process",
    )

    @model_validator(mode="after")
    def _idle_needs_a_worker(self) -> Isolation:
        if self.priority == "idle" and self.mode == "inline":
            raise ValueError(
                "isolation: priority: idle schedules a worker process; it cannot apply to "
                "mode: inline (use mode: process, or leave mode unset)"
            )
        if self.priority == "idle" and self.nice:
            raise ValueError(
                f"isolation: nice {self.nice} has no effect with priority: idle (SCHED_IDLE "
                "ignores niceness); set one of them"
            )
        return self


class ModelConfig(_Strict):
    """A model's `config.yaml`. Only `runtime` is required."""

    runtime: str
    platform: str | None = None
    model_file: str | None = None
    max_batch_size: int = Field(default=0, ge=0)
    inputs: list[TensorConfig] = Field(default_factory=list)
    outputs: list[TensorConfig] = Field(default_factory=list)
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    dynamic_batching: DynamicBatching | None = None
    instance_group: list[InstanceGroup] = Field(default_factory=lambda: [InstanceGroup()])
    warmup: bool = False
    execution: Literal["auto", "inline", "thread"] = "auto"
    isolation: Isolation | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: A progressive rollout of a new version (docs in the README, "Releasing a new model
    #: version"); started when the model loads with its candidate on disk.
    rollout: RolloutSpec | None = None
    # Safe model loading (docs/security.md).
    trust_pickle: bool = Field(
        default=False,
        description="trust the model's artefacts to run code when they load (joblib "
        "pickles, TorchScript archives, native libraries) without a pinned sha256",
    )
    sha256: dict[str, str] = Field(
        default_factory=dict,
        description="pinned digests: '<version>/<path>' (or a file beside the version "
        "directories) -> lower-case hex SHA-256; a file that differs fails the load",
    )
    # Set when the config came from Triton's format: the fields it ignored or approximated.
    _triton_ignored: tuple[str, ...] = PrivateAttr(default=())
    # Who may vouch for code in the artefacts: None trusts this config's own trust_pickle
    # and sha256; a load request's config gets the disk config's (or nobody's) instead.
    _code_trust: tuple[bool, frozenset[str]] | None = PrivateAttr(default=None)

    @field_validator("sha256")
    @classmethod
    def _digests(cls, value: dict[str, str]) -> dict[str, str]:
        for key, digest in value.items():
            bad_part = any(p in ("", ".", "..") for p in key.split("/"))
            if not key or bad_part or "\\" in key or "\x00" in key:
                raise ValueError(
                    f"{key!r}: a pinned file is '<version>/<path>' inside the model directory"
                )
            if not _HEX_SHA256.fullmatch(digest):
                raise ValueError(f"{key!r}: {digest!r} is not 64 lower-case hex digits")
        return value

    def trusts_code(self, key: str) -> bool:
        """Whether the artefact `key` ('<version>/<path>') may run code when it loads:
        trust_pickle, or a pinned digest, from a config the server's operator wrote."""
        trust_all, pinned = self._code_trust or (self.trust_pickle, frozenset(self.sha256))
        return trust_all or key in pinned

    def with_code_trust_of(self, source: ModelConfig | None) -> ModelConfig:
        """A copy whose artefacts run code only as `source` allows (None: never); its own
        pinned digests are still checked. For configs sent in a load request."""
        copy = self.model_copy()
        copy._code_trust = (
            (False, frozenset())
            if source is None
            else source._code_trust or (source.trust_pickle, frozenset(source.sha256))
        )
        return copy

    @property
    def ignored_fields(self) -> tuple[str, ...]:
        """Triton config fields this config ignored or approximated (empty for config.yaml)."""
        return self._triton_ignored

    @field_validator("isolation", mode="before")
    @classmethod
    def _isolation_shorthand(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _batching_needs_batch_dim(self) -> ModelConfig:
        batching = self.dynamic_batching
        if batching is not None and self.max_batch_size < 1:
            raise ValueError("dynamic_batching needs max_batch_size >= 1")
        if batching is not None and any(
            size > self.max_batch_size for size in batching.preferred_batch_sizes
        ):
            raise ValueError("preferred_batch_sizes must not exceed max_batch_size")
        return self

    def input_specs(self) -> list[TensorSpec]:
        return [t.spec() for t in self.inputs]

    def output_specs(self) -> list[TensorSpec]:
        return [t.spec() for t in self.outputs]

    def device(self) -> str:
        """The device of the first instance group: `cpu` or `cuda:N`."""
        group = self.instance_group[0]
        if group.kind == "gpu":
            return f"cuda:{group.gpus[0] if group.gpus else 0}"
        return "cpu"


CONFIG_FILE = "config.yaml"
TRITON_CONFIG_FILE = "config.pbtxt"
CONFIG_FILES = (CONFIG_FILE, TRITON_CONFIG_FILE)
"""The files a model directory's config may be in, in order of preference: config.yaml
wins over a config.pbtxt beside it."""


def find_config(model_dir: Path) -> Path | None:
    """The config file a model directory loads with (config.yaml, else config.pbtxt)."""
    for name in CONFIG_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    return None


def read_config(path: Path, model: str) -> ModelConfig:
    """Read either format: a `.pbtxt` file is Triton's model config, anything else ours."""
    if path.name.endswith(".pbtxt"):
        from inferbridge.repository.triton import load_pbtxt

        return load_pbtxt(path, model)
    return load_config(path)


def load_config(path: Path) -> ModelConfig:
    """Read and validate one config.yaml; any problem raises ConfigError naming file and field."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of fields, got {type(document).__name__}")
    try:
        return ModelConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(root)'}': {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
