"""Find or build the Go gateway binary.

The Go source ships inside the package (``gateway/``). It is built once per source
version with the local Go toolchain into the user cache, next to the example models, and
reused by every later start. Without a Go toolchain the server falls back to grpc.aio.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["GATEWAY_SOURCE", "GatewayBuildError", "build_gateway", "find_go", "gateway_binary"]

logger = logging.getLogger(__name__)

GATEWAY_SOURCE = Path(__file__).resolve().parent / "go"
_BINARY_NAME = "inferbridge-gateway"
_BUILD_TIMEOUT_S = 900
#: Where Go is commonly installed when it is not on PATH (the official tarball's place).
_GO_FALLBACKS = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")


class GatewayBuildError(RuntimeError):
    """The gateway could not be built; the message says why."""


def find_go() -> str | None:
    """The Go toolchain: $INFERBRIDGE_GO when set (a path), else `go` on PATH, else the
    usual install places."""
    chosen = os.environ.get("INFERBRIDGE_GO")
    if chosen is not None:
        return chosen if os.access(chosen, os.X_OK) else None
    found = shutil.which("go")
    if found:
        return found
    return next((p for p in _GO_FALLBACKS if os.access(p, os.X_OK)), None)


def _source_files() -> list[Path]:
    """go.mod, go.sum and every non-test .go file, the packages under internal/ included."""
    return sorted(
        p
        for p in GATEWAY_SOURCE.rglob("*")
        if p.is_file()
        and (
            (p.parent == GATEWAY_SOURCE and p.name in ("go.mod", "go.sum"))
            or (p.suffix == ".go" and not p.name.endswith("_test.go"))
        )
    )


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in _source_files():
        name = path.relative_to(GATEWAY_SOURCE).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _cache_dir() -> Path:
    base = os.environ.get("INFERBRIDGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inferbridge"
    )
    return Path(base) / "gateway"


def gateway_binary() -> Path:
    """The cached binary for this source version (it may not exist yet)."""
    return _cache_dir() / _source_hash() / _BINARY_NAME


def build_gateway(*, force: bool = False) -> Path:
    """Return the gateway binary, building it first when it is missing.

    Several servers may start at once (tests do), so the build holds a file lock and
    publishes the binary with an atomic rename.
    """
    binary = gateway_binary()
    if binary.is_file() and not force:
        return binary
    go = find_go()
    if go is None:
        raise GatewayBuildError(
            "no Go toolchain found (looked for `go` on PATH and in /usr/local/go)"
        )
    binary.parent.mkdir(parents=True, exist_ok=True)
    with open(binary.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file() and not force:
            return binary
        logger.info("building the gateway with %s (once per version)", go)
        fd, partial = tempfile.mkstemp(prefix=".build-", dir=binary.parent)
        os.close(fd)
        env = {
            **os.environ,
            "CGO_ENABLED": "0",
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "-mod=readonly",
        }
        try:
            result = subprocess.run(
                [go, "build", "-trimpath", "-o", partial, "."],
                cwd=GATEWAY_SOURCE,
                env=env,
                capture_output=True,
                text=True,
                timeout=_BUILD_TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0:
                raise GatewayBuildError(
                    f"`go build` of the gateway failed: {result.stderr.strip()[-2000:]}"
                )
            os.chmod(partial, 0o755)
            os.replace(partial, binary)
        except subprocess.TimeoutExpired as exc:
            raise GatewayBuildError(
                f"`go build` of the gateway took over {_BUILD_TIMEOUT_S} s"
            ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    return binary
