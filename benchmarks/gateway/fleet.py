"""The upstreams: N `inferbridge serve` processes on fixed loopback ports, one repository.

Every upstream serves the same small repository (the bundled examples' iris as sklearn and
as ONNX, batching on), on ports chosen once, so that an upstream killed with SIGKILL comes
back where the balancers expect it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.procs import Server, free_port, http_ok, launch
from benchmarks.repos import _config, _iris_models, _model

__all__ = ["MODELS", "Fleet", "Upstream", "build_repository"]

_ROOT = Path(__file__).resolve().parents[2]
#: The models every upstream serves.
MODELS = ("iris_onnx", "iris")


def build_repository(work: Path, batching: bool = True) -> Path:
    """iris (sklearn) and iris_onnx, batching on (the `on` variant of benchmarks/repos.py)
    or off (no dynamic_batching: every request is its own model call)."""
    repo = work / ("repository" if batching else "repository-no-batching")
    if repo.exists():
        return repo
    sources = work / "sources"
    if (sources / "iris.onnx").exists():
        joblib_path, onnx_path = sources / "iris.joblib", sources / "iris.onnx"
    else:
        joblib_path, onnx_path = _iris_models(sources)
    _model(repo, "iris", joblib_path, _config("iris", batching=batching))
    _model(repo, "iris_onnx", onnx_path, _config("iris_onnx", batching=batching))
    return repo


@dataclass
class Upstream:
    """One `inferbridge serve` process group on fixed ports (restartable in place)."""

    name: str
    repository: Path
    log_dir: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    server: Server | None = None
    restarts: int = 0

    @property
    def rest_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 120.0) -> Server:
        argv = [
            sys.executable,
            "-m",
            "inferbridge",
            "serve",
            str(self.repository),
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--log-level",
            "warning",
        ]

        def ready(server: Server) -> bool:
            return all(http_ok(f"{server.base_url}/v2/models/{m}/ready") for m in MODELS)

        suffix = f"-{self.restarts}" if self.restarts else ""
        self.server = launch(
            f"upstream {self.name}",
            argv,
            log_path=self.log_dir / f"upstream-{self.name}{suffix}.log",
            ready=ready,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            cwd=_ROOT,
            env={"PYTHONUNBUFFERED": "1"},
            timeout=timeout,
        )
        return self.server

    def kill(self) -> None:
        """SIGKILL the whole process group (Go front end and Python alike), no warning."""
        if self.server is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.server.process.wait(10)
        self.server = None

    def restart(self) -> float:
        """Start again on the same ports; returns the seconds until every model was ready."""
        self.restarts += 1
        started = time.monotonic()
        self.start()
        return time.monotonic() - started

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def alive(self) -> bool:
        return self.server is not None and self.server.alive()

    def cpu_seconds(self) -> float:
        return self.server.cpu_seconds() if self.server is not None else 0.0


class Fleet:
    """The upstreams of one run, started together and stopped together."""

    def __init__(self, repository: Path, log_dir: Path, count: int, prefix: str = "u") -> None:
        self.upstreams = [Upstream(f"{prefix}{i + 1}", repository, log_dir) for i in range(count)]

    def __enter__(self) -> Fleet:
        try:
            for upstream in self.upstreams:
                upstream.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for upstream in self.upstreams:
            upstream.stop()

    def ensure_all_up(self) -> None:
        """Restart any upstream a scenario left dead (a kill scenario that failed half-way)."""
        for upstream in self.upstreams:
            if not upstream.alive():
                upstream.restart()

    def cpu_seconds(self) -> float:
        return sum(u.cpu_seconds() for u in self.upstreams)
