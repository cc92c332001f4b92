"""Soak benchmark (issue #16): a bounded run at about 70 % of capacity with valid and invalid
requests, client disconnects and a model reload every 30 s, sampling the server's processes
every 10 s; it reports their growth after warm-up and every answer that is not expected.

    .venv/bin/python -m benchmarks.soak                 # 600 s (~12 min with the ramp)
    .venv/bin/python -m benchmarks.soak --quick         # 60 s, to try it
    .venv/bin/python -m benchmarks.soak --duration 300 --fraction 0.5

A benchmark, not a test: it never runs in CI. Everything goes to benchmarks/results/soak/
(ignored by git): RESULTS-soak.md, raw.json, plots, the server's log. A run of 600 s or more
without --quick also puts its section into benchmarks/RESULTS.md between the soak markers
and its plots into benchmarks/plots/soak-*.png (--publish / --no-publish override that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.context import wait_quiet
from benchmarks.procs import Server
from benchmarks.soak import load, report
from benchmarks.soak.probes import CASES, Prober
from benchmarks.soak.reloads import Reloader
from benchmarks.soak.sample import Sample, Sampler, take_sample
from benchmarks.soak.server import MAX_REQUEST_BYTES, MODELS, build_repository, start
from benchmarks.tools import _build_ibload

_HERE = Path(__file__).resolve().parent
_BENCHMARKS = _HERE.parent
_FULL_S = 600.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=_FULL_S, help="seconds of load (600)")
    parser.add_argument("--quick", action="store_true", help="60 s, a shorter ramp and warm-up")
    parser.add_argument(
        "--warmup", type=float, help="seconds left out of the growth figures (60; 20 --quick)"
    )
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds (10)")
    parser.add_argument("--reload-every", type=float, default=30.0, help="seconds (30)")
    parser.add_argument(
        "--fraction", type=float, default=0.7, help="of the measured capacity (0.7)"
    )
    parser.add_argument(
        "--poll",
        action="store_true",
        help="serve in poll mode and reload by touching the model files (the load API is "
        "refused in poll mode)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before the ramp, wait up to this long for other work to use < 0.3 cores over "
        "10 s (the capacity, and so the soak's rate, is only as good as that moment)",
    )
    parser.add_argument(
        "--probes-per-second", type=float, default=12.0, help="hand-made requests a second (12)"
    )
    parser.add_argument("--out", type=Path, default=_BENCHMARKS / "results" / "soak")
    parser.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="put the section into benchmarks/RESULTS.md (default: a full run of >= 600 s)",
    )
    return parser


def _revision() -> str:
    done = subprocess.run(
        ["git", "-C", str(_BENCHMARKS.parent), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()[:100] or "unknown"


def _cpu_time() -> float:
    """CPU seconds of this harness and of its reaped children (the ibload processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


#: Total concurrencies of the capacity ramp (shared by the streams by their shares).
_RAMP_LEVELS = [8, 32, 64, 128]
_QUICK_RAMP_LEVELS = [16, 64]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(argv)
    for name in ("duration", "sample_every", "reload_every", "probes_per_second"):
        if getattr(options, name) <= 0:
            parser.error(
                f"--{name.replace('_', '-')} must be positive (got {getattr(options, name):g})"
            )
    if not 0 < options.fraction <= 1.5:
        parser.error(f"--fraction {options.fraction:g}: expected a share of capacity in (0, 1.5]")
    if options.warmup is not None and options.warmup < 0:
        parser.error("--warmup must be 0 or more seconds")
    duration = 60.0 if options.quick and options.duration == _FULL_S else options.duration
    warmup = options.warmup if options.warmup is not None else (20.0 if options.quick else 60.0)
    publish = options.publish
    if publish is None:
        publish = not options.quick and duration >= _FULL_S
    out: Path = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    began = datetime.now(UTC)
    print(f"soak: {duration:g} s at {options.fraction:.0%} of capacity; output {out}", flush=True)

    ibload = _build_ibload()
    if not ibload:
        raise SystemExit("ibload could not be built (is Go installed?)")
    repository = build_repository(out)
    server = start(repository, out / "server.log", poll=options.poll)
    try:
        return _soak(options, server, repository, ibload, out, began, duration, warmup, publish)
    finally:
        server.stop()


def _soak(
    options: argparse.Namespace,
    server: Server,
    repository: Path,
    ibload: str,
    out: Path,
    began: datetime,
    duration: float,
    warmup: float,
    publish: bool,
) -> int:
    ports = (server.http_port, server.grpc_port or 0)
    if options.wait_quiet > 0:
        # A long window: a two-second lull would measure a capacity the next minute lacks.
        cores = wait_quiet(options.wait_quiet, window=10.0)
        print(f"soak: other work on the machine before the ramp: {cores:.2f} cores", flush=True)
    ramp_s = 2.0 if options.quick else 3.0
    ramp = load.capacity_ramp(
        ibload,
        http_url=server.base_url,
        grpc_target=server.grpc_target,
        levels=_QUICK_RAMP_LEVELS if options.quick else _RAMP_LEVELS,
        seconds=ramp_s,
        warmup=1.0,
        work=out / "ramp",
    )
    mix = max(p.mix_rps for p in ramp)
    rate = options.fraction * mix
    print(f"soak: the mix's capacity {mix:,.0f} req/s; offering {rate:,.0f} req/s", flush=True)

    started = time.monotonic()
    samples = [take_sample(server.process.pid, ports, 0.0, phase="before")]
    sampler = Sampler(server.process.pid, ports, options.sample_every, started)
    touch = {m: next((repository / m / "1").iterdir()) for m in MODELS} if options.poll else None
    reloader = Reloader(server.base_url, MODELS, options.reload_every, started, touch)
    prober = Prober(server.http_port, server.grpc_target, options.probes_per_second)
    cpu0 = _cpu_time()
    streams = load.run_streams(
        ibload,
        http_url=server.base_url,
        grpc_target=server.grpc_target,
        total_rate=rate,
        duration=duration,
        work=out,
        timeline_s=options.sample_every,
    )
    try:
        sampler.start()
        reloader.start()
        prober.start(started)
        results = streams.wait(timeout=duration + 120)
    finally:
        streams.kill()
        prober.stop()
        reloader.stop()
        sampler.stop()
    loaded_s = time.monotonic() - started
    client_cpu = (_cpu_time() - cpu0) / loaded_s
    samples += sampler.samples
    # Once the load is gone: what the server holds at rest (connections closed, drained).
    time.sleep(options.sample_every)
    samples.append(take_sample(server.process.pid, ports, time.monotonic() - started, "after"))
    alive = server.alive()

    growth = report.growth(samples, warmup)
    problems, problem_lines = report.log_problems(server.log_path)
    unexpected_streams = {r.stream.name: r.unexpected for r in results if r.unexpected}
    failed_reloads = [r for r in reloader.reloads if not r.ok]
    plots = [
        report.plot_processes(
            samples, reloader.reloads, warmup, out / "plots" / "soak-processes.png"
        )
    ]
    answers_plot = report.plot_answers(results, out / "plots" / "soak-answers.png")
    if answers_plot is not None:
        plots.append(answers_plot)

    settings = {
        "began": began.isoformat(),
        "duration_s": duration,
        "warmup_s": warmup,
        "fraction": options.fraction,
        "mix_capacity_rps": mix,
        "offered_rps": rate,
        "poll": options.poll,
        "server_alive_at_end": alive,
        "log_problems": problems,
    }
    (out / "raw.json").write_text(
        json.dumps(
            report.raw(samples, ramp, results, prober, reloader.reloads, settings),
            indent=1,
            default=str,
        )
    )
    server_cpu = report.server_cpu(samples)
    block = _markdown(
        began=began,
        duration=duration,
        warmup=warmup,
        options=options,
        ramp=ramp,
        mix=mix,
        rate=rate,
        growth=growth,
        results=results,
        prober=prober,
        reloader=reloader,
        samples=samples,
        machine=report.machine_text(samples, client_cpu, server_cpu),
        problems=(problems, problem_lines),
        alive=alive,
        plots=plots,
    )
    (out / "RESULTS-soak.md").write_text(block)
    print("\n" + block)
    if publish:
        report.into_results(block, plots, _BENCHMARKS)
        print(f"soak: published into {_BENCHMARKS / 'RESULTS.md'} and {_BENCHMARKS / 'plots'}")
    bad = (
        unexpected_streams
        or prober.unexpected
        or failed_reloads
        or not alive
        or not all(g.flat for g in growth if g.judged)
    )
    return 1 if bad else 0


def _markdown(
    *,
    began: datetime,
    duration: float,
    warmup: float,
    options: argparse.Namespace,
    ramp: list[load.RampPoint],
    mix: float,
    rate: float,
    growth: list[report.Growth],
    results: list[load.StreamResult],
    prober: Prober,
    reloader: Reloader,
    samples: list[Sample],
    machine: str,
    problems: tuple[int, list[str]],
    alive: bool,
    plots: list[Path],
) -> str:
    quick = " (--quick: NOT for comparison)" if options.quick else ""
    mode = (
        "poll mode, reloads by touching the model files"
        if options.poll
        else "explicit model control, reloads through `POST /v2/repository/models/{m}/load`"
    )
    parts = [
        report.BEGIN,
        "## Soak: a bounded run under mixed load, reloads and disconnects (issue #16)\n",
        f"Run {began:%Y-%m-%d %H:%M} UTC{quick} on {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, inferbridge at `{_revision()}`. Reproduce with "
        "`.venv/bin/python -m benchmarks.soak` (docs/benchmarks.md, *Soak*).\n",
        f"One `inferbridge serve` (the Go front-end process for REST and gRPC, {mode}, "
        f"`--max-request-bytes {MAX_REQUEST_BYTES}`) on a generated repository: `iris_onnx` "
        "(onnxruntime, dynamic batching) and `iris` (the sklearn pickle, `isolation: process`). "
        f"{duration:g} s of open-loop load at {options.fraction:.0%} of the mix's capacity "
        f"({rate:,.0f} of {mix:,.0f} req/s: the best rate at which a closed-loop ramp of the "
        f"same mix was served in its shares, below), {len(results)} ibload streams (shares "
        + ", ".join(f"{r.stream.name} {r.stream.share:.0%}" for r in results)
        + f") plus {options.probes_per_second:g}/s hand-made probes, both models reloaded "
        f"every {options.reload_every:g} s, the server's processes sampled every "
        f"{options.sample_every:g} s. Growth is measured after a {warmup:g} s warm-up.\n",
        machine,
        "### Growth after warm-up\n",
        report.growth_table(growth),
        f"*≈ 0?*: last - first and slope x window ({growth[0].window_min:.1f} min) both within "
        "max(4 MiB, 2 %) for RSS, 4 for fds, 2 for threads. The growth leaves out the "
        f"{growth[0].left_out} samples after warm-up taken while a reload's new isolation "
        "worker ran beside the old one (two workers, and their channels in the Python "
        "process). *after the load*: "
        f"{options.sample_every:g} s after the load stopped. "
        + report.go_connections_note(samples)
        + "\n",
    ]
    parts += [f"![Soak: the server's processes](plots/{plots[0].name})\n"]
    parts += [
        "### Answers\n",
        report.streams_table(results),
        report.probes_table(prober),
        f"The {len(CASES)} probes take turns on one thread ({options.probes_per_second:g} a "
        "second), each on a connection of its own; REST answers are read whole (a 200 counts "
        "only when its `label` output is the setosa row's 0), gRPC through grpcio. The "
        "client-side classes (closed, reset, cancelled) are what the client did; the server "
        "must survive them without growing.\n",
    ]
    if len(plots) > 1:
        parts.append(f"![Soak: answers over time](plots/{plots[1].name})\n")
    count, lines = problems
    parts += [
        "### Reloads\n",
        report.reloads_text(reloader.reloads),
        "### Unexpected answers and errors\n",
        report.unexpected_text(results, prober),
        f"Server log: {count} lines report a failure"
        + (": " + "; ".join(report.cell(x, 160) for x in lines) if lines else "")
        + f". The server was {'alive' if alive else '**dead**'} at the end.\n",
        "### Capacity ramp (closed loop, before the soak)\n",
        report.ramp_table(ramp),
        report.END,
    ]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.exit(main())
