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

from inferbridge.errors import InvalidInput
from inferbridge.repository.config import ModelConfig

__all__ = ["LoadRequest", "parse_load_parameters", "parse_unload_parameters"]

_FILE_PREFIX = "file:"


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """What a load asks for beyond the repository's own files."""

    config: ModelConfig | None = None
    config_json: str = ""  # as sent, for the fingerprint
    files: dict[PurePosixPath, bytes] = field(default_factory=dict)

    @property
    def overrides(self) -> bool:
        return self.config is not None or bool(self.files)


def parse_load_parameters(parameters: Mapping[str, Any], *, base64_files: bool) -> LoadRequest:
    """Check a load's `parameters`: `config` (a JSON model config replacing config.yaml) and
    `file:<version>/<path>` (a file's bytes: base64 text over REST, bytes over gRPC).
    Anything else, or anything malformed, is InvalidInput naming the parameter."""
    config: ModelConfig | None = None
    config_json = ""
    files: dict[PurePosixPath, bytes] = {}
    for key, value in parameters.items():
        if key == "config":
            config_json, config = _config(value)
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
    return LoadRequest(config, config_json, files)


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


def _config(value: Any) -> tuple[str, ModelConfig]:
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
    try:
        return value, ModelConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(root)'}': {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInput(f"parameter 'config' is not a valid model config: {problems}") from None


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
    if path.name == "config.yaml" and len(path.parts) == 1:
        raise InvalidInput(f"parameter '{key}': send the model config as the 'config' parameter")
    return path


def _file_bytes(key: str, value: Any, base64_files: bool) -> bytes:
    if isinstance(value, bytes) and not base64_files:
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"parameter '{key}' is not valid base64: {exc}") from None
    raise InvalidInput(
        f"parameter '{key}' must be the file's bytes "
        f"({'base64 text' if base64_files else 'bytes'}), got {type(value).__name__}"
    )
