"""The REST overload gap of docs/benchmarks.md, probed (issue #12's "Also").

    .venv/bin/python -m benchmarks.gateway.overload_probe --orders B,A,B,A

Each order starts a fresh server on the `overload_bounded` repository (iris, queue 256,
timeout 100 ms) and measures, as benchmark scenario 6 does:
- A (the harness's order): the bounds-off server running idle beside it; wrk c=64 and
  ibload raw c=64 (capacity = the better), vegeta and ibload at 0.5x, then ibload at 1.5x.
- B (the standalone reproduction's order): wrk c=64, ibload at 0.5x, then ibload at 1.5x.
Per point it prints goodput and, from /proc/<pid>/task/*/schedstat, the share of the
wall time the server's Python event-loop thread spent on a CPU, waiting for one (runnable),
and idle, and the Go front end's CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import loadgen, payloads
from benchmarks.context import Context
from benchmarks.loadgen import Point
from benchmarks.payloads import Payload
from benchmarks.procs import Server
from benchmarks.repos import IRIS_ROW, build_repositories
from benchmarks.tools import locate_tools

__all__ = ["main"]

_HERE = Path(__file__).resolve().parent


def _schedstat(pgid: int) -> dict[str, tuple[int, int]]:
    """(ns on CPU, ns waiting on a run queue) of the group's threads: the Python main
    thread, its other threads, and the Go front end's threads."""
    out: dict[str, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) != pgid:
            continue
        python = stat[stat.index("(") + 1 : stat.rindex(")")] == "python"
        for task in os.scandir(f"/proc/{entry.name}/task"):
            try:
                run, wait, _ = Path(f"{task.path}/schedstat").read_text().split()
            except (OSError, ValueError):
                continue
            key = "go" if not python else ("py main" if task.name == entry.name else "py other")
            before = out.get(key, (0, 0))
            out[key] = (before[0] + int(run), before[1] + int(wait))
    return out


def _point(server: Server, label: str, measure: Callable[[], Point]) -> Point:
    before, t0 = _schedstat(server.process.pid), time.monotonic()
    point = measure()
    wall, after = time.monotonic() - t0, _schedstat(server.process.pid)

    def share(key: str, i: int) -> float:
        return (after.get(key, (0, 0))[i] - before.get(key, (0, 0))[i]) / 1e9 / wall

    run, wait = share("py main", 0), share("py main", 1)
    print(
        f"  {label:30} goodput {point.goodput:8,.0f}/s  p99 {point.p99_ms:7.1f} ms  "
        f"errors {point.errors_text()[:48]:48}  other CPU {point.other_cpu:.2f} | Python "
        f"main: on CPU {run:.2f}, waiting {wait:.2f}, idle {max(0.0, 1 - run - wait):.2f}; "
        f"Go CPU {share('go', 0):.2f}",
        flush=True,
    )
    return point


def _order(ctx: Context, payload: Payload, order: str, duration: float) -> None:
    tools = ctx.tools
    server = ctx.start_inferbridge("overload_bounded", ["iris"])
    idle = ctx.start_inferbridge("overload_unbounded", ["iris"]) if order == "A" else None

    def wrk() -> Point:
        return loadgen.wrk(
            tools, server, payload, series="wrk", concurrency=64, duration=duration, warmup=1
        )

    def ibload(rate: float = 0.0) -> Point:
        return loadgen.ibload(
            tools,
            server,
            payload,
            series="ibload",
            duration=duration,
            warmup=1,
            concurrency=64,
            rate=rate,
            max_inflight=2048,
            timeout_s=10,
        )

    try:
        capacity = _point(server, f"{order} capacity, wrk c=64", wrk).goodput
        if order == "A":
            raw = _point(server, f"{order} capacity, ibload raw c=64", ibload).goodput
            capacity = max(capacity, raw)
            _point(
                server,
                f"{order} 0.5x, vegeta",
                lambda: loadgen.vegeta(
                    tools,
                    server,
                    payload,
                    series="vegeta",
                    rate=capacity / 2,
                    duration=duration,
                    workers=2048,
                    work_dir=ctx.work / "vegeta",
                    timeout_s=10,
                ),
            )
        _point(server, f"{order} 0.5x, ibload", lambda: ibload(capacity / 2))
        over = _point(
            server,
            f"{order} 1.5x ({1.5 * capacity:,.0f}/s), ibload",
            lambda: ibload(1.5 * capacity),
        )
        print(f"{order}: goodput at 1.5x = {over.goodput / capacity:.2f}x capacity", flush=True)
    finally:
        server.stop()
        if idle is not None:
            idle.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway.overload_probe")
    parser.add_argument("--orders", default="B,A,B,A", help="A (harness) / B (standalone)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per point")
    parser.add_argument("--out", type=Path, default=_HERE.parent / "results" / "overload-probe")
    options = parser.parse_args(argv)
    out: Path = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tools = locate_tools()
    ctx = Context(
        tools=tools,
        repos=build_repositories(out),
        work=out,
        duration=options.duration,
        warmup=1.0,
        concurrencies=[64],
        quick=False,
    )
    payload = payloads.rest_json(ctx.payload_dir, "iris", "input", IRIS_ROW)
    for order in (o.strip().upper() for o in options.orders.split(",") if o.strip()):
        if order not in ("A", "B"):
            raise SystemExit(f"unknown order {order!r}: A or B")
        print(f"== order {order}; load average {os.getloadavg()[0]:.1f}", flush=True)
        _order(ctx, payload, order, options.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
