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

__all__ = [
    "GATEWAY_SOURCE",
    "GatewayBuildError",
    "build_gateway",
    "build_go_program",
    "cache_dir",
    "find_go",
    "gateway_binary",
    "source_files",
    "source_hash",
]

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


def source_files(root: Path) -> list[Path]:
    """go.mod, go.sum and every non-test .go file of the Go module at `root`, its packages
    under internal/ included: what a build depends on."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and (
            (p.parent == root and p.name in ("go.mod", "go.sum"))
            or (p.suffix == ".go" and not p.name.endswith("_test.go"))
        )
    )


def source_hash(root: Path) -> str:
    """A digest of the module's sources: one cached binary per source version."""
    digest = hashlib.sha256()
    for path in source_files(root):
        name = path.relative_to(root).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_dir(kind: str) -> Path:
    """Where the binaries of one program (`gateway`, `agent`) are cached."""
    base = os.environ.get("INFERBRIDGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inferbridge"
    )
    return Path(base) / kind


def build_go_program(
    source: Path,
    binary: Path,
    *,
    what: str,
    error: type[RuntimeError],
    force: bool = False,
    ldflags: str | None = None,
) -> Path:
    """Return `binary`, building the Go module at `source` into it first when it is
    missing (`error` says why a build failed).

    Several processes may start at once (tests do), so the build holds a file lock and
    publishes the binary with an atomic rename.
    """
    if binary.is_file() and not force:
        return binary
    go = find_go()
    if go is None:
        raise error("no Go toolchain found (looked for `go` on PATH and in /usr/local/go)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with open(binary.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file() and not force:
            return binary
        logger.info("building the %s with %s (once per version)", what, go)
        fd, partial = tempfile.mkstemp(prefix=".build-", dir=binary.parent)
        os.close(fd)
        env = {
            **os.environ,
            "CGO_ENABLED": "0",
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "-mod=readonly",
        }
        command = [go, "build", "-trimpath"]
        if ldflags is not None:
            command.append(f"-ldflags={ldflags}")
        try:
            result = subprocess.run(
                [*command, "-o", partial, "."],
                cwd=source,
                env=env,
                capture_output=True,
                text=True,
                timeout=_BUILD_TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0:
                raise error(f"`go build` of the {what} failed: {result.stderr.strip()[-2000:]}")
            os.chmod(partial, 0o755)
            os.replace(partial, binary)
        except subprocess.TimeoutExpired as exc:
            raise error(f"`go build` of the {what} took over {_BUILD_TIMEOUT_S} s") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    return binary


def gateway_binary() -> Path:
    """The cached binary for this source version (it may not exist yet)."""
    return cache_dir("gateway") / source_hash(GATEWAY_SOURCE) / _BINARY_NAME


def build_gateway(*, force: bool = False) -> Path:
    """Return the gateway binary, building it first when it is missing."""
    return build_go_program(
        GATEWAY_SOURCE, gateway_binary(), what="gateway", error=GatewayBuildError, force=force
    )
