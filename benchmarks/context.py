"""What every scenario shares: tools, repositories, settings, and the server sessions."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.ceilings import Ceiling
from benchmarks.loadgen import LoadError, Point, machine_busy
from benchmarks.procs import Server, http_ok, launch
from benchmarks.repos import Repositories
from benchmarks.tools import Tools

__all__ = [
    "NOISY_CPU",
    "Context",
    "NoiseRetry",
    "wait_quiet",
    "ScenarioResult",
    "ServerSession",
    "Target",
    "ratio_text",
]

_ROOT = Path(__file__).resolve().parent.parent
#: A point is flagged when other work on the machine took more than this many cores.
NOISY_CPU = 0.3


@dataclass
class Target:
    """One of the issue's targets: what was asked, what was measured, met or the gap."""

    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run
    note: str = ""
    gap: str = ""  # how far from the goal, when not met

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured"
        if self.met:
            return "met"
        return f"NOT met ({self.gap})" if self.gap else "NOT met"


@dataclass
class ScenarioResult:
    key: str
    title: str
    points: list[Point] = field(default_factory=list)
    ceilings: list[Ceiling] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plot: Path | None = None
    error: str | None = None
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0

    def find(self, series: str, concurrency: int, client: str | None = None) -> Point | None:
        for point in self.points:
            same = point.series == series and point.concurrency == concurrency
            if same and (client is None or point.client == client):
                return point
        return None


@dataclass
class Context:
    tools: Tools
    repos: Repositories
    work: Path  # benchmarks/results (ignored by git)
    duration: float
    warmup: float
    concurrencies: list[int]
    quick: bool
    retry: NoiseRetry | None = None
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def payload_dir(self) -> Path:
        path = self.work / "payloads"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def log_dir(self) -> Path:
        return self.work / "logs"

    def start_inferbridge(
        self,
        variant: str,
        models: list[str],
        *,
        frontends: str = "gateway",
        extra: tuple[str, ...] = (),
        label: str = "",
    ) -> Server:
        """inferbridge serving one repository variant, ready when every model is ready.
        `frontends`: "gateway" (the default, Go) or "python" (grpc.aio and uvicorn);
        `extra`: more `serve` arguments, `label` tells such a server apart in its name."""
        repo = self.repos.variant(variant)
        argv = [
            sys.executable,
            "-m",
            "inferbridge",
            "serve",
            str(repo),
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--log-level",
            "warning",
        ]
        if frontends == "python":
            argv += ["--grpc-frontend", "grpcio", "--rest-frontend", "uvicorn"]
        argv += extra
        suffix = "" if frontends == "gateway" else f", {frontends} front ends"
        suffix += f", {label}" if label else ""

        def ready(server: Server) -> bool:
            log = server.log_path.read_text(errors="replace")
            if "NOT loaded" in log:
                raise RuntimeError(f"inferbridge could not load a model:\n{server.log_tail()}")
            return all(http_ok(f"{server.base_url}/v2/models/{m}/ready") for m in models)

        return launch(
            f"inferbridge ({variant}{suffix})",
            argv,
            log_path=self.log_dir
            / f"inferbridge-{variant}-{frontends}{'-' + label if label else ''}.log",
            ready=ready,
            ports_from_log=True,
            cwd=_ROOT,
            env={"PYTHONUNBUFFERED": "1"},
        )


def wait_quiet(limit: float, window: float = 1.0) -> float:
    """Wait until other work uses < NOISY_CPU cores over `window` s, or `limit` s have passed.

    Returns the cores busy in the last window (this harness is idle meanwhile)."""
    deadline = time.monotonic() + limit
    while True:
        busy = machine_busy()
        time.sleep(window)
        cores = (machine_busy() - busy) / window
        if cores < NOISY_CPU or time.monotonic() >= deadline:
            return cores


@dataclass
class NoiseRetry:
    """Re-measure a point that other work disturbed, within a time budget for the whole run."""

    budget_s: float
    wait_s: float = 10.0
    retried: int = 0
    improved: int = 0


class ServerSession:
    """A server for a block of measurements; restarts it once if it dies under a point, and
    re-measures a noisy point once (after waiting for quiet) while the NoiseRetry budget lasts."""

    def __init__(
        self,
        result: ScenarioResult,
        name: str,
        factory: Callable[[], Server],
        retry: NoiseRetry | None = None,
    ):
        self.result = result
        self.name = name
        self.factory = factory
        self.retry = retry
        self.server: Server | None = None

    def __enter__(self) -> ServerSession:
        started = time.monotonic()
        self.server = self.factory()
        print(f"bench:   {self.name} ready in {time.monotonic() - started:.1f} s", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()

    def measure(self, label: str, run: Callable[[Server], Point]) -> Point | None:
        """Run one point; a failure is recorded as a note (and the point left out)."""
        assert self.server is not None
        for attempt in (1, 2):
            try:
                point = run(self.server)
            except LoadError as exc:
                if not self.server.alive() and attempt == 1:
                    self.result.notes.append(
                        f"{self.name} died during {label}; restarted and measured again. "
                        f"Its last output: {self.server.log_tail(5)!r}"
                    )
                    self.server.stop()
                    self.server = self.factory()
                    continue
                self.result.notes.append(f"{label}: measurement failed: {exc}")
                print(f"bench:   {label}: FAILED: {str(exc)[:300]}", flush=True)
                return None
            self._show(label, point)
            point = self._remeasure_if_noisy(label, run, point)
            self.result.points.append(point)
            return point
        return None

    def _remeasure_if_noisy(
        self, label: str, run: Callable[[Server], Point], point: Point
    ) -> Point:
        retry = self.retry
        if retry is None or point.other_cpu <= NOISY_CPU or retry.budget_s <= 0:
            return point
        assert self.server is not None
        started = time.monotonic()
        wait_quiet(retry.wait_s)
        try:
            second = run(self.server)
        except LoadError:
            second = None
        retry.budget_s -= time.monotonic() - started
        retry.retried += 1
        if second is None or second.other_cpu >= point.other_cpu:
            return point
        retry.improved += 1
        second.extra["remeasured"] = f"other CPU was {point.other_cpu:.2f} cores"
        self._show(label + " (again)", second)
        return second

    @staticmethod
    def _show(label: str, point: Point) -> None:
        print(
            f"bench:   {label:<46} {point.rps:>9,.0f} req/s  p50 {point.p50_ms:7.2f}  "
            f"p99 {point.p99_ms:8.2f} ms  other CPU {point.other_cpu:.2f}  "
            f"errors {point.errors_text()}",
            flush=True,
        )


def ratio_text(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
