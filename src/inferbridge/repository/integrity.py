"""Pinned file digests and the trust that artefacts able to run code need before they load.

A config's `sha256` maps `<version>/<path>` (a file of one version) or `<path>` (a file
beside the version directories, shared by every version) to the file's SHA-256; every pin
that applies to a version is checked before its runtime loads anything, whatever the
runtime. Artefacts that run code when they load (joblib pickles, TorchScript archives,
native libraries) load only when the config pins their digest or says `trust_pickle: true`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from inferbridge.errors import ModelLoadError
from inferbridge.repository.config import ModelConfig

__all__ = ["file_sha256", "pin_key", "require_code_trust", "verify_pinned_files"]

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pin_key(path: Path, version_dir: Path) -> str:
    """The `sha256` key of a file of a version: `<version>/<path>`, relative to the model
    directory (a model file may live beside the version directories)."""
    model_dir = version_dir.parent
    return Path(os.path.relpath(path, model_dir)).as_posix()


def _pins_for(version_dir: Path, config: ModelConfig) -> list[tuple[str, str]]:
    version = version_dir.name
    pins = []
    for key, digest in config.sha256.items():
        head, _, rest = key.partition("/")
        if rest and head.isdigit() and head != version:
            continue  # another version's file
        pins.append((key, digest))
    return pins


def verify_pinned_files(version_dir: Path, config: ModelConfig) -> None:
    """Check every pinned digest that applies to this version; ModelLoadError names the
    first file that is missing or differs."""
    model_dir = version_dir.parent
    for key, want in _pins_for(version_dir, config):
        _check(model_dir / key, key, want)


def _check(path: Path, key: str, want: str) -> None:
    if not path.is_file():
        raise ModelLoadError(f"pinned file {key} ({path}) does not exist or is not a file")
    got = file_sha256(path)
    if got != want:
        raise ModelLoadError(
            f"sha256 mismatch for {key}: config pins {want}, the file has {got}; "
            "it is not the file that was pinned"
        )


def require_code_trust(path: Path, version_dir: Path, config: ModelConfig, kind: str) -> None:
    """Refuse (ModelLoadError) to load `path`, an artefact that runs code when it loads (`kind`
    says what it is), unless its config pins its digest (checked here, right before the load)
    or sets trust_pickle."""
    key = pin_key(path, version_dir)
    if not config.trusts_code(key):
        digest = file_sha256(path) if path.is_file() else "<not a file>"
        raise ModelLoadError(
            f"{path} is {kind}, which runs code when it loads; inferbridge loads it only when "
            f"the model's config.yaml on the server pins its digest (sha256: {{'{key}': "
            f"'{digest}'}}) or sets trust_pickle: true"
        )
    want = config.sha256.get(key)
    if want is not None:
        _check(path, key, want)
