"""Where a model's files come from: the repository directory, or a load request's files.

Also the fingerprints the poll mode compares: a version changes when its config or any of
its files (path, size, modification time) does.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inferbridge.errors import ConfigError, InvalidInput, ModelNotFound
from inferbridge.models.requests import LoadRequest, max_model_file_bytes
from inferbridge.repository.config import (
    CONFIG_FILE,
    CONFIG_FILES,
    ModelConfig,
    find_config,
    read_config,
)

__all__ = [
    "ModelSource",
    "Planner",
    "VersionPlan",
    "check_inside",
    "check_model_name",
    "model_directories",
    "resolve_source",
]

# A model name is a directory name: no separators, no control characters, not hidden.
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class VersionPlan:
    """What a rollout needs of a model's versions, over its version policy: versions to keep
    loaded, versions not to load, and the version unversioned requests resolve to."""

    keep: frozenset[int] = frozenset()
    exclude: frozenset[int] = frozenset()
    default: int | None = None


#: Given a model's config and the version directories on disk, the plan for them (or None).
Planner = Callable[[ModelConfig, list[int]], VersionPlan | None]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model's directory, config and chosen versions, with a fingerprint per version."""

    name: str
    path: Path
    config: ModelConfig
    versions: dict[int, str]  # chosen version number -> fingerprint
    available: list[int]
    fingerprint: str  # of the whole model: config and every chosen version
    override_dir: Path | None = None
    default: int | None = None  # pinned by a rollout's plan; None: the highest version


def check_model_name(name: str) -> None:
    if not name or _BAD_NAME.search(name) or name.startswith(".") or len(name) > 255:
        raise InvalidInput(
            f"invalid model name {name!r}: a model name is a directory name of the repository "
            "(no '/', '\\' or control characters, not starting with '.')"
        )


def model_directories(root: Path | None) -> list[str]:
    """The model directories of a repository (hidden and `_` ones are skipped)."""
    if root is None or not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )


def resolve_source(
    root: Path | None,
    name: str,
    request: LoadRequest | None,
    scratch: Path | None,
    planner: Planner | None = None,
) -> ModelSource:
    """Read (or, for `file:` parameters, write into `scratch`) one model's files. Raises
    ModelNotFound for an unknown directory and ConfigError for a bad config (config.yaml, else
    Triton's config.pbtxt; the fingerprint covers the file used)."""
    check_model_name(name)
    override_dir: Path | None = None
    if request is not None and request.files:
        assert request.config is not None  # parse_load_parameters insists
        base = scratch or Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        override_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
        path = override_dir / name
        path.mkdir()
        try:
            for relative, data in request.files.items():
                target = path.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        except OSError as exc:
            shutil.rmtree(override_dir, ignore_errors=True)
            raise InvalidInput(f"cannot write the files of model '{name}': {exc}") from None
        config = request.config
        config_token = request.config_json
    else:
        if root is None:
            raise ModelNotFound(f"no model directory '{name}': the server has no repository")
        path = root / name
        if not path.is_dir():
            raise ModelNotFound(
                f"no model directory '{name}' in the repository {root} "
                f"(models there: {', '.join(model_directories(root)) or 'none'})"
            )
        check_inside(root, path, f"model directory '{name}'")
        if request is not None and request.config is not None:
            config, config_token = request.config, request.config_json
            if request.inherits_runtime:
                config = _with_disk_runtime(config, path, name)
            config = _with_disk_trust(config, path, name)
        else:
            config_path = find_config(path)
            if config_path is None:
                raise InvalidInput(
                    f"model '{name}': {path / CONFIG_FILE} (or config.pbtxt) is missing"
                )
            config = read_config(config_path, name)
            config_token = config_path.name + "\0" + config_path.read_text(errors="replace")
    available = sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())
    chosen = config.version_policy.select(available)
    boundary = override_dir or root
    assert boundary is not None  # a model on disk needs a repository (checked above)
    try:
        _check_files(boundary, path, config, chosen)
    except InvalidInput:
        if override_dir is not None:
            shutil.rmtree(override_dir, ignore_errors=True)
        raise
    plan = planner(config, available) if planner is not None else None
    default: int | None = None
    if plan is not None:
        chosen = sorted((set(chosen) | (plan.keep & set(available))) - plan.exclude)
        default = plan.default if plan.default in chosen else None
    versions = {n: _fingerprint(config_token, path / str(n), path) for n in chosen}
    whole = hashlib.sha256(config_token.encode())
    for number, print_ in sorted(versions.items()):
        whole.update(f"{number}:{print_};".encode())
    whole.update(_tree_print(path, top_level_only=True).encode())
    whole.update(f"default:{default}".encode())
    return ModelSource(
        name,
        path,
        config,
        versions,
        available,
        whole.hexdigest(),
        override_dir=override_dir,
        default=default,
    )


def _with_disk_runtime(config: ModelConfig, path: Path, name: str) -> ModelConfig:
    """`config` with the runtime, model file and platform of the model's config on disk."""
    config_path = find_config(path)
    if config_path is None:
        raise InvalidInput(
            f"model '{name}': the load's config names no platform or backend, and there is "
            "no config on disk to take the model's runtime from"
        )
    disk = read_config(config_path, name)
    return config.model_copy(
        update={"runtime": disk.runtime, "model_file": disk.model_file, "platform": disk.platform}
    )


def _with_disk_trust(config: ModelConfig, path: Path, name: str) -> ModelConfig:
    """A load request's config for a model on disk: the disk config's pinned digests are
    checked too, and only the disk config can let an artefact run code (a request cannot)."""
    config_path = find_config(path)
    try:
        disk = read_config(config_path, name) if config_path is not None else None
    except ConfigError:
        disk = None  # the request replaces a broken config; it trusts nothing on its own
    if disk is None:
        return config.with_code_trust_of(None)
    for key, digest in config.sha256.items():
        if disk.sha256.get(key, digest) != digest:
            raise InvalidInput(
                f"parameter 'config' pins {key} to {digest}, the model's config on disk to "
                f"{disk.sha256[key]}"
            )
    merged = config.model_copy(update={"sha256": {**disk.sha256, **config.sha256}})
    return merged.with_code_trust_of(disk)


def check_inside(root: Path, path: Path, what: str) -> None:
    """InvalidInput unless `path`, with every symlink followed, lies inside `root`."""
    try:
        real = path.resolve(strict=False)
        base = root.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise InvalidInput(f"{what}: cannot resolve {path}: {exc}") from None
    if real != base and base not in real.parents:
        link = " (through a symlink)" if real != Path(os.path.abspath(path)) else ""
        raise InvalidInput(f"{what} leaves the repository{link}: {path} is {real}, outside {base}")


def _check_files(root: Path, model_dir: Path, config: ModelConfig, versions: list[int]) -> None:
    """The files a load reads stay inside the repository (symlinks included), and none is
    over the size limit; InvalidInput names the first that is not."""
    limit = max_model_file_bytes()
    model_file = config.model_file
    if model_file is not None:
        if Path(model_file).is_absolute() or "\x00" in model_file:
            raise InvalidInput(
                f"model '{model_dir.name}': model_file {model_file!r} must be a path relative "
                "to the version directory"
            )
        for number in versions:
            where = model_dir / str(number) / model_file
            check_inside(model_dir, where, f"model_file {model_file!r}")
    entries = [model_dir / str(n) for n in versions]
    entries += [p for p in model_dir.iterdir() if not p.name.isdigit()]
    for entry in entries:
        for item in _walk(entry):
            relative = item.relative_to(model_dir).as_posix()
            what = f"model '{model_dir.name}' file {relative}"
            if item.is_symlink():
                check_inside(root, item, what)
            try:
                stat = item.stat()
            except OSError:
                continue  # a dangling link is the runtime's to report
            if limit and stat.st_size > limit and not item.is_dir():
                raise InvalidInput(
                    f"{what} has {stat.st_size} bytes, over the limit of {limit} bytes a model "
                    "file may have (--max-model-file-bytes)"
                )


def _walk(top: Path) -> list[Path]:
    """`top` and everything under it, not following symlinked directories."""
    found = [top]
    if top.is_dir() and not top.is_symlink():
        for directory, dirs, files in os.walk(top):
            found.extend(Path(directory, name) for name in (*dirs, *files))
    return found


def source_fingerprint(root: Path | None, name: str, planner: Planner | None = None) -> str:
    """The fingerprint the model directory would load with now; "" when unreadable."""
    if root is None:
        return ""
    try:
        return resolve_source(root, name, None, None, planner).fingerprint
    except Exception:  # a directory being written may be unreadable for a moment
        path = root / name
        return "unreadable:" + _tree_print(path, top_level_only=False)


def _fingerprint(config_token: str, version_dir: Path, model_dir: Path) -> str:
    digest = hashlib.sha256(config_token.encode())
    digest.update(_tree_print(version_dir, top_level_only=False).encode())
    # Files beside the version directories (labels, vocabularies) belong to every version.
    digest.update(_tree_print(model_dir, top_level_only=True).encode())
    return digest.hexdigest()


def _tree_print(path: Path, *, top_level_only: bool) -> str:
    entries: list[str] = []
    try:
        if top_level_only:
            for entry in os.scandir(path):
                if entry.is_file() and entry.name not in CONFIG_FILES:
                    stat = entry.stat()
                    entries.append(f"{entry.name}:{stat.st_size}:{stat.st_mtime_ns}")
        else:
            for directory, _, files in os.walk(path):
                for file in files:
                    full = Path(directory, file)
                    stat = full.stat()
                    entries.append(f"{full.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}")
    except OSError as exc:
        entries.append(f"error:{exc.errno}")
    return "|".join(sorted(entries))
