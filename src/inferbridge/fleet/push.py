"""Package one model version as an artefact, upload it, and describe it in a manifest.

The artefact is a gzipped tar of the model's config (`config.yaml` or `config.pbtxt`) and
its version directory, with fixed timestamps and ownership so that the same files always
give the same sha256. It goes to `<prefix>/<model>/<version>/model.tar.gz` beside a
`manifest.json`, in S3 (`s3://bucket/prefix`, any S3 endpoint) or a local directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import orjson

from inferbridge.fleet.errors import InvalidSpec
from inferbridge.fleet.spec import Manifest

__all__ = ["package", "push"]

_CONFIG_FILES = ("config.yaml", "config.pbtxt")


def package(model_dir: Path, version: int) -> tuple[bytes, list[str]]:
    """The artefact's bytes and the files it holds (config + version directory)."""
    version_dir = model_dir / str(version)
    if not model_dir.is_dir():
        raise InvalidSpec(f"{model_dir} is not a model directory")
    if not version_dir.is_dir():
        raise InvalidSpec(f"{model_dir} has no version directory {version}/")
    configs = [model_dir / name for name in _CONFIG_FILES if (model_dir / name).is_file()]
    if not configs:
        raise InvalidSpec(f"{model_dir} has no config.yaml or config.pbtxt")
    paths = configs + sorted(p for p in version_dir.rglob("*") if p.is_file())
    raw = io.BytesIO()
    names = []
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            name = path.relative_to(model_dir).as_posix()
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with path.open("rb") as handle:
                tar.addfile(info, handle)
            names.append(name)
    return gzip.compress(raw.getvalue(), mtime=0), names


def _split_destination(destination: str) -> tuple[str, str, str]:
    """(scheme, bucket-or-dir, key prefix) of s3://bucket/prefix, file:///dir or /dir."""
    if destination.startswith("s3://"):
        bucket, _, prefix = destination[5:].partition("/")
        if not bucket:
            raise InvalidSpec(f"--to {destination!r}: no bucket")
        return "s3", bucket, prefix.strip("/")
    if destination.startswith("file://"):
        return "file", destination[7:], ""
    if destination.startswith("/") or destination.startswith("."):
        return "file", str(Path(destination).resolve()), ""
    raise InvalidSpec(f"--to {destination!r}: expected s3://bucket[/prefix] or a directory")


def _s3_client(endpoint: str | None) -> Any:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    return boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def push(
    model_dir: Path,
    version: int,
    destination: str,
    *,
    s3_endpoint: str | None = None,
    s3_client: Any = None,
) -> Manifest:
    """Upload the artefact and its manifest; return the manifest."""
    model = model_dir.resolve().name
    data, files = package(model_dir, version)
    scheme, where, prefix = _split_destination(destination)
    key = "/".join(p for p in (prefix, model, str(version), "model.tar.gz") if p)
    uri = f"s3://{where}/{key}" if scheme == "s3" else f"file://{Path(where) / key}"
    manifest = Manifest(
        model=model,
        version=version,
        uri=uri,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        files=files,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    body = orjson.dumps(manifest.model_dump(), option=orjson.OPT_INDENT_2)
    manifest_key = key.rsplit("/", 1)[0] + "/manifest.json"
    if scheme == "s3":
        client = s3_client or _s3_client(s3_endpoint)
        client.put_object(Bucket=where, Key=key, Body=data)
        client.put_object(Bucket=where, Key=manifest_key, Body=body)
    else:
        target = Path(where) / key
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        os.replace(partial, target)
        (Path(where) / manifest_key).write_bytes(body)
    return manifest
