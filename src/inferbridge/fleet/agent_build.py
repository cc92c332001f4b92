"""Find or build the Go node agent (`inferbridge-agent`).

Its source ships inside the package (`fleet/agent/`) and is built once per source version
with the local Go toolchain into the user cache, like the gateway.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from inferbridge.frontends.gateway.build import find_go

__all__ = ["AGENT_SOURCE", "AgentBuildError", "agent_binary", "build_agent"]

AGENT_SOURCE = Path(__file__).resolve().parent / "agent"
_BINARY_NAME = "inferbridge-agent"
_BUILD_TIMEOUT_S = 900


class AgentBuildError(RuntimeError):
    """The agent could not be built; the message says why."""


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(AGENT_SOURCE.iterdir()):
        if path.name in ("go.mod", "go.sum") or (
            path.suffix == ".go" and not path.name.endswith("_test.go")
        ):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def agent_binary() -> Path:
    """The cached binary for this source version (it may not exist yet)."""
    base = os.environ.get("INFERBRIDGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inferbridge"
    )
    return Path(base) / "agent" / _source_hash() / _BINARY_NAME


def build_agent(*, force: bool = False) -> Path:
    """Return the agent binary, building it first when it is missing (file lock + atomic
    rename, so concurrent callers are safe)."""
    binary = agent_binary()
    if binary.is_file() and not force:
        return binary
    go = find_go()
    if go is None:
        raise AgentBuildError(
            "no Go toolchain found (looked for `go` on PATH and in /usr/local/go)"
        )
    binary.parent.mkdir(parents=True, exist_ok=True)
    with open(binary.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file() and not force:
            return binary
        fd, partial = tempfile.mkstemp(prefix=".build-", dir=binary.parent)
        os.close(fd)
        env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
        try:
            result = subprocess.run(
                [go, "build", "-trimpath", "-ldflags=-s -w", "-o", partial, "."],
                cwd=AGENT_SOURCE,
                env=env,
                capture_output=True,
                text=True,
                timeout=_BUILD_TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0:
                raise AgentBuildError(
                    f"`go build` of the agent failed: {result.stderr.strip()[-2000:]}"
                )
            os.chmod(partial, 0o755)
            os.replace(partial, binary)
        except subprocess.TimeoutExpired as exc:
            raise AgentBuildError(
                f"`go build` of the agent took over {_BUILD_TIMEOUT_S} s"
            ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    return binary
