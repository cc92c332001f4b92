"""The parameters of a repository load request (Triton's), checked before anything loads."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import orjson
from pydantic import ValidationError

from inferbridge.errors import ConfigError, InvalidInput
from inferbridge.repository.config import CONFIG_FILES, ModelConfig

__all__ = [
    "DEFAULT_MAX_MODEL_FILE_BYTES",
    "LoadRequest",
    "max_model_file_bytes",
    "parse_load_parameters",
    "parse_unload_parameters",
    "set_max_model_file_bytes",
]

_FILE_PREFIX = "file:"

DEFAULT_MAX_MODEL_FILE_BYTES = 16 * 1024**3
_limits = {"file_bytes": DEFAULT_MAX_MODEL_FILE_BYTES}


def set_max_model_file_bytes(limit: int) -> None:
    """The largest model file a load accepts, sent or on disk (0: any size); a server
    setting, set once at start-up."""
    _limits["file_bytes"] = limit


def max_model_file_bytes() -> int:
    return _limits["file_bytes"]


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """What a load asks for beyond the repository's own files."""

    config: ModelConfig | None = None
    config_json: str = ""  # as sent, for the fingerprint
    files: dict[PurePosixPath, bytes] = field(default_factory=dict)
    # A Triton config that names no platform or backend: the model's runtime comes from
    # its config on disk (Triton completes such a config from the model the same way).
    inherits_runtime: bool = False

    @property
    def overrides(self) -> bool:
        return self.config is not None or bool(self.files)


def parse_load_parameters(
    parameters: Mapping[str, Any], *, base64_files: bool, model: str = ""
) -> LoadRequest:
    """Check a load's `parameters`: `config` (a JSON model config replacing the one on disk:
    ours, or Triton's ModelConfig JSON, told apart by its keys) and `file:<version>/<path>`
    (a file's bytes: base64 text over REST, bytes over gRPC). Anything else, or anything
    malformed, is InvalidInput naming the parameter."""
    config: ModelConfig | None = None
    config_json = ""
    inherits = False
    files: dict[PurePosixPath, bytes] = {}
    for key, value in parameters.items():
        if key == "config":
            config_json, config, inherits = _config(value, model)
        elif key.startswith(_FILE_PREFIX):
            files[_file_path(key)] = _file_bytes(key, value, base64_files)
        else:
            raise InvalidInput(
                f"unknown load parameter '{key}'; expected 'config' (a JSON model config) "
                "or 'file:<version>/<path>' (a file of the model)"
            )
    if files and config is None:
        raise InvalidInput(
            "'file:' parameters need a 'config' parameter too: a model sent in the request "
            "has no config.yaml on disk"
        )
    if files and inherits:
        raise InvalidInput(
            "parameter 'config' names no platform or backend, and a model sent in the "
            "request has no config on disk to take its runtime from"
        )
    return LoadRequest(config, config_json, files, inherits)


def parse_unload_parameters(parameters: Mapping[str, Any]) -> bool:
    """`unload_dependents` (bool) is the only unload parameter; returns it."""
    dependents = False
    for key, value in parameters.items():
        if key != "unload_dependents":
            raise InvalidInput(
                f"unknown unload parameter '{key}'; expected 'unload_dependents' (a boolean)"
            )
        if not isinstance(value, bool):
            raise InvalidInput(f"parameter 'unload_dependents' must be a boolean, got {value!r}")
        dependents = value
    return dependents


# Triton's ModelConfig fields (model_config.proto), listed here so that telling the shapes
# apart needs no protobuf stubs; and the keys only our schema has.
_TRITON_FIELDS = frozenset(
    [
        "name",
        "platform",
        "backend",
        "runtime",
        "version_policy",
        "max_batch_size",
        "input",
        "output",
        "batch_input",
        "batch_output",
        "optimization",
        "dynamic_batching",
        "sequence_batching",
        "ensemble_scheduling",
        "instance_group",
        "default_model_filename",
        "cc_model_filenames",
        "metric_tags",
        "parameters",
        "model_warmup",
        "model_operations",
        "model_transaction_policy",
        "model_repository_agents",
        "response_cache",
        "model_metrics",
    ]
)
_OURS_ONLY = frozenset(ModelConfig.model_fields) - _TRITON_FIELDS
_TRITON_ONLY = _TRITON_FIELDS - frozenset(ModelConfig.model_fields)


def _is_triton(document: dict[str, Any]) -> bool:
    """Triton's shape when a key is Triton's alone (`input`, `backend`, ...), or when every
    key is one of Triton's and there is no `runtime` (which ours requires); InvalidInput
    when the keys mix both shapes. Anything else is read as ours."""
    keys = set(document)
    ours = keys & _OURS_ONLY
    triton = keys & _TRITON_ONLY
    if ours and triton:
        raise InvalidInput(
            f"parameter 'config' mixes inferbridge fields ({', '.join(sorted(ours))}) with "
            f"Triton ModelConfig fields ({', '.join(sorted(triton))}); send one shape"
        )
    if triton:
        return True
    return bool(keys) and keys <= _TRITON_FIELDS and "runtime" not in keys


def _config(value: Any, model: str) -> tuple[str, ModelConfig, bool]:
    """The config's text, the config, and whether its runtime must come from disk."""
    if isinstance(value, dict):  # a JSON object instead of its text: take it as meant
        value = orjson.dumps(value).decode()
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise InvalidInput("parameter 'config' is not UTF-8 text") from None
    if not isinstance(value, str):
        raise InvalidInput(f"parameter 'config' must be a JSON string, got {type(value).__name__}")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"parameter 'config' is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput(
            f"parameter 'config' must be a JSON object, got {type(document).__name__}"
        )
    if _is_triton(document):
        from inferbridge.repository.triton import parse_triton_json

        inherits = not (document.keys() & {"platform", "backend"})
        if inherits:  # mapped with a stand-in; the manager puts the disk's runtime in
            document = {**document, "backend": "onnxruntime"}
        try:
            parsed = parse_triton_json(document, model, "parameter 'config'")
            return value, _untrusting(parsed), inherits
        except ConfigError as exc:
            raise InvalidInput(
                f"{exc.message} (read as Triton's ModelConfig JSON by its keys; "
                "inferbridge's own shape has 'runtime')"
            ) from None
    try:
        return value, _untrusting(ModelConfig.model_validate(document)), False
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(root)'}': {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInput(f"parameter 'config' is not a valid model config: {problems}") from None


def _untrusting(config: ModelConfig) -> ModelConfig:
    """A config sent over the network never lets an artefact run code: trust is granted
    only by the model's config.yaml on the server's disk (docs/security.md)."""
    granted = [
        field
        for field, given in (
            ("trust_pickle", config.trust_pickle),
            ("parameters.trusted_types", "trusted_types" in config.parameters),
        )
        if given
    ]
    if granted:
        raise InvalidInput(
            f"parameter 'config' sets {' and '.join(granted)}: only the model's config on the "
            "server's disk can trust an artefact to run code; a load request cannot"
        )
    return config.with_code_trust_of(None)


def _file_path(key: str) -> PurePosixPath:
    raw = key[len(_FILE_PREFIX) :]
    path = PurePosixPath(raw)
    if (
        not raw
        or path.is_absolute()
        or "\\" in raw
        or "\x00" in raw
        or any(part in ("..", ".", "") for part in raw.split("/"))
    ):
        raise InvalidInput(
            f"parameter '{key}': the path must be relative to the model directory, such as "
            "'file:1/model.onnx', without '..' or '.' components"
        )
    if path.name in CONFIG_FILES and len(path.parts) == 1:
        raise InvalidInput(f"parameter '{key}': send the model config as the 'config' parameter")
    return path


def _file_bytes(key: str, value: Any, base64_files: bool) -> bytes:
    if isinstance(value, bytes) and not base64_files:
        return _within_limit(key, value)
    if isinstance(value, str):
        try:
            return _within_limit(key, base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"parameter '{key}' is not valid base64: {exc}") from None
    raise InvalidInput(
        f"parameter '{key}' must be the file's bytes "
        f"({'base64 text' if base64_files else 'bytes'}), got {type(value).__name__}"
    )


def _within_limit(key: str, data: bytes) -> bytes:
    limit = max_model_file_bytes()
    if limit and len(data) > limit:
        raise InvalidInput(
            f"parameter '{key}': the file has {len(data)} bytes, over the limit of {limit} "
            "bytes a model file may have (--max-model-file-bytes)"
        )
    return data
