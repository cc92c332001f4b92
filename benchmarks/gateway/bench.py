"""What the gateway scenarios share: settings, the upstream fleet, fronts, fault proxies,
one section of results per scenario."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import payloads
from benchmarks.context import Target
from benchmarks.gateway import balancers
from benchmarks.gateway.balancers import Front
from benchmarks.gateway.balancers import Target as Upstream
from benchmarks.gateway.fleet import Fleet
from benchmarks.gateway.load import LoadError, Run, run_ibload
from benchmarks.payloads import Payload
from benchmarks.procs import Server, free_port, launch
from benchmarks.repos import IRIS_ROW

__all__ = ["Bench", "LoadError", "Section", "Target"]

_ROOT = Path(__file__).resolve().parents[2]
#: The model every scenario sends (the cheaper of the two: what a proxy adds shows most).
MODEL = "iris_onnx"


@dataclass
class Section:
    """One scenario's results: its tables (markdown), targets, notes and plot."""

    key: str
    title: str
    tables: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    plot: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    """Settings and the fleet for one harness run."""

    ibload: str
    work: Path
    fleet: Fleet
    duration: float  # seconds per healthy point
    fault_duration: float  # seconds per fault run (with a timeline)
    warmup: float
    quick: bool
    kinds: tuple[str, ...]  # the fronts asked for: gateway, nginx, haproxy, direct
    gateway_missing: str  # why the inferbridge gateway is left out ("" when it runs)
    gateway_gomaxprocs: int = 0  # the gateway process's GOMAXPROCS (0: Go's default)
    rounds: int = 1  # healthy scenarios: how many times every point is measured

    @property
    def plots(self) -> Path:
        path = self.work / "plots"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def payload_dir(self) -> Path:
        path = self.work / "payloads"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def payload(self) -> Payload:
        return payloads.rest_json(self.payload_dir, MODEL, "input", IRIS_ROW)

    def targets(self, count: int) -> list[Upstream]:
        return [
            Upstream(u.name, u.rest_address, u.grpc_address) for u in self.fleet.upstreams[:count]
        ]

    def wanted(self, kind: str) -> bool:
        if kind == "gateway" and self.gateway_missing:
            return False
        return kind in self.kinds

    def start_front(
        self,
        kind: str,
        targets: Sequence[Upstream],
        balance: str,
        *,
        deadline_s: float = 30.0,
        check_timeout_s: float = 0.0,
        label: str = "",
        extra: str = "",
    ) -> Front:
        """`check_timeout_s` (0 = each front's default): the active health checks' timeout
        (the gateway's discovery too; nginx has no active checks)."""
        if kind == "nginx":
            return balancers.nginx(self.work, targets, balance=balance, read_timeout_s=deadline_s)
        if kind == "haproxy":
            return balancers.haproxy(
                self.work,
                targets,
                balance=balance,
                read_timeout_s=deadline_s,
                check_timeout_s=check_timeout_s or 1.0,
            )
        if kind == "gateway":
            return balancers.gateway(
                self.work,
                targets,
                balance=balance,
                deadline_s=deadline_s,
                check_timeout_s=check_timeout_s,
                label=label,
                extra=extra,
                gomaxprocs=self.gateway_gomaxprocs,
            )
        return balancers.direct(targets[0])

    @contextlib.contextmanager
    def front(
        self, kind: str, targets: Sequence[Upstream], balance: str = "", **options: Any
    ) -> Iterator[Front]:
        front = self.start_front(kind, targets, balance, **options)
        try:
            yield front
        finally:
            front.stop()

    def measure(
        self,
        front: Front,
        *,
        protocol: str = "REST",
        concurrency: int,
        duration: float | None = None,
        timeline: bool = False,
        timeout_s: float = 10.0,
        during: Callable[[], None] | None = None,
    ) -> Run:
        run = run_ibload(
            self.ibload,
            front=front.name,
            rest_url=front.rest_url,
            grpc_target=front.grpc_target,
            payload=self.payload() if protocol == "REST" else self._grpc_payload(),
            protocol=protocol,
            concurrency=concurrency,
            duration=duration or self.duration,
            warmup=self.warmup,
            timeout_s=timeout_s,
            timeline=timeline,
            front_cpu=front.cpu_seconds,
            upstreams_cpu=self.fleet.cpu_seconds,
            during=during,
        )
        print(
            f"bench:   {front.name:<28} {protocol:<4} c={concurrency:<3} {run.rps:>8,.0f} req/s"
            f"  p50 {run.p50_ms:7.2f}  p99 {run.p99_ms:8.2f} ms  ok {run.ok:,}/{run.requests:,}"
            f"  errors {run.errors_text()}  other CPU {run.other_cpu:.2f}",
            flush=True,
        )
        return run

    def _grpc_payload(self) -> Payload:
        return payloads.grpc_raw(self.payload_dir, MODEL, "input", IRIS_ROW)

    @contextlib.contextmanager
    def fault_proxy(
        self, upstream: Upstream, *, delay_ms: float = 0.0, error_rate: float = 0.0
    ) -> Iterator[Upstream]:
        """benchmarks/faults (the gateway's fault-injecting proxy) in front of `upstream`'s
        REST port; yields the target to use instead (gRPC stays direct: the fault scenarios
        load over REST). Every request through it meets the fault, health checks too."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "benchmarks.faults",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            upstream.rest,
            "--delay",
            f"{delay_ms:g}ms",
            "--error-rate",
            f"{error_rate:g}",
        ]

        def ready(server: Server) -> bool:
            return "faults listening" in server.log_path.read_text(errors="replace")

        server = launch(
            f"fault proxy ({upstream.name})",
            argv,
            log_path=self.work / "logs" / f"faults-{upstream.name}.log",
            ready=ready,
            http_port=port,
            cwd=_ROOT,
            timeout=30,
        )
        try:
            yield Upstream(upstream.name, f"127.0.0.1:{port}", upstream.grpc)
        finally:
            server.stop()

    def settle(self) -> None:
        """Every upstream up, and a moment for sockets in TIME_WAIT and queues to drain."""
        self.fleet.ensure_all_up()
        time.sleep(0.5)
