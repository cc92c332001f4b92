"""Fault isolation benchmark: what `isolation: process` costs, and what hostile WASM calls
do to the server's other models.

1. Per call, in one process: `Runtime.infer` inline vs the same runtime in a worker
   process (inferbridge.isolation: tensors through a memfd region, a small header over a
   Unix socket), on the C digits library (batch 1 and 64) and on an identity model with
   1 MiB and 16 MiB tensors; beside them, the same arrays pickled through a
   multiprocessing pipe to a child and back (what shared memory avoids).
2. Through a real server: the digits C library over REST (JSON, one sequential client),
   `isolation: inline` vs `process`, in one server.
3. WASM sandbox: the iris WASM model's latency (one sequential client) idle, and while
   another process keeps 100 hostile calls in flight (infinite loops to the wall-clock
   limit, memory bombs to the cap) on two other models of the same server, placed in the
   server, in worker processes at nice 19, or in worker processes under SCHED_IDLE
   (`priority: idle`), the calls kept in flight by wrk (and, for priority: idle, by the
   heavier Python client too); the points interleaved over several rounds, with the load
   average and the server's and the workers' CPU.

    .venv/bin/python -m benchmarks.isolation [--seconds 3] [--rounds 5] [--only-wasm] [--write]

`--write` replaces the section between its markers in benchmarks/RESULTS.md and writes the
plot to benchmarks/plots/.
Compare the ratios within one run, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

_HERE = Path(__file__).resolve().parent
HOSTILE_IN_FLIGHT = 100
#: Through the server: the same C library inline on the event loop (auto picks it for a
#: fast model), inline on an instance thread, and in a worker process (always a thread).
SERVER_SERIES = {
    "inline": "isolation: inline",
    "thread": "isolation: inline\nexecution: thread",
    "process": "isolation: process",
}


@dataclass(frozen=True)
class Attack:
    """One attacked point: where the hostile models run (their `isolation`), and which
    client keeps the
    calls in flight on this machine's cores, at nice 10 (it stands for clients on other
    machines): `wrk` (two wrk processes, 50 connections each: little CPU per call) or
    `python` (100 httpx threads in one process, this benchmark's client until December
    2026: about a millisecond of CPU per call)."""

    isolation: str
    client: str = "wrk"


#: The hostile WASM models in the server (the default), in worker processes at nice 19,
#: in worker processes under SCHED_IDLE; the last also with the heavier client.
ATTACKS = {
    "in the server": Attack(""),
    "in worker processes, nice 19": Attack("{mode: process, nice: 19}"),
    "in worker processes, priority: idle": Attack("{priority: idle}"),
    "priority: idle, the Python client": Attack("{priority: idle}", "python"),
}
IDLE = "idle"


@dataclass
class Overhead:
    case: str
    inline_us: float
    process_us: float
    pickle_us: float | None

    @property
    def ratio(self) -> float:
        return self.process_us / self.inline_us


def _p50_us(call: Callable[[], object], seconds: float) -> float:
    for _ in range(20):
        call()
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end or len(times) < 50:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _echo_child(conn: Any) -> None:
    while True:
        try:
            conn.send(conn.recv())
        except EOFError:
            return


def _pickle_pipe_us(arrays: dict[str, np.ndarray[Any, Any]], seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_echo_child, args=(theirs,), daemon=True)
    child.start()
    try:

        def call() -> object:
            ours.send(arrays)
            return ours.recv()

        return _p50_us(call, seconds)
    finally:
        ours.close()
        child.join(10)


def _config(runtime: str, isolation: str, io: str) -> Any:
    import yaml

    from inferbridge.repository.config import ModelConfig

    document = yaml.safe_load(io)
    document.update({"runtime": runtime, "isolation": isolation})
    if "trust_pickle" in ModelConfig.model_fields:
        document["trust_pickle"] = True
    return ModelConfig.model_validate(document)


def overheads(examples: Path, seconds: float) -> list[Overhead]:
    from inferbridge.isolation.runtime import make_runtime

    digits_io = (examples / "digits_c" / "config.yaml").read_text()
    cases: list[tuple[str, str, Path, str, dict[str, np.ndarray[Any, Any]], bool]] = []
    rng = np.random.default_rng(0)
    for rows in (1, 64):
        pixels = (rng.random((rows, 64)) * 16).astype(np.float32)
        cases.append(
            (
                f"C digits, batch {rows}",
                "native",
                examples / "digits_c" / "1",
                digits_io,
                {"pixels": pixels},
                True,
            )
        )
    identity_io = (
        "inputs: [{name: x, datatype: FP32, shape: [-1, 1024]}]\n"
        "outputs: [{name: x, datatype: FP32, shape: [-1, 1024]}]\n"
    )
    work = Path(tempfile.mkdtemp(prefix="inferbridge-bench-isolation-"))
    (work / "identity" / "1").mkdir(parents=True)
    for mib in (1, 16):
        x = rng.random((mib * 256, 1024)).astype(np.float32)
        cases.append(
            (
                f"identity, {mib} MiB in and out",
                "tests.support.runtimes:Identity",
                work / "identity" / "1",
                identity_io,
                {"x": x},
                True,
            )
        )
    rows: list[Overhead] = []
    for case, runtime_name, model_dir, io, inputs, with_pickle in cases:
        measured: dict[str, float] = {}
        for isolation in ("inline", "process"):
            config = _config(runtime_name, isolation, io)
            runtime = make_runtime(config)
            runtime.load(model_dir, config, "cpu")
            try:
                measured[isolation] = _p50_us(lambda r=runtime, i=inputs: r.infer(i), seconds)
            finally:
                runtime.unload()
        pickled = _pickle_pipe_us(inputs, seconds) if with_pickle else None
        rows.append(Overhead(case, measured["inline"], measured["process"], pickled))
        print(f"  {case}: inline {measured['inline']:.1f} us, process {measured['process']:.1f} us")
    shutil.rmtree(work, ignore_errors=True)
    return rows


def _latencies(call: Callable[[], None], seconds: float) -> list[float]:
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end or len(times) < 100:
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def through_server(examples: Path, seconds: float) -> dict[str, tuple[float, float]]:
    from tests.serverproc import start_server

    root = Path(tempfile.mkdtemp(prefix="inferbridge-bench-isolation-"))
    for series, extra in SERVER_SERIES.items():
        target = root / f"digits_c_{series}"
        shutil.copytree(examples / "digits_c", target)
        with (target / "config.yaml").open("a") as config:
            config.write(f"\n{extra}\n")
    server = start_server(root)
    pixels = (np.random.default_rng(1).random((1, 64)) * 16).round(2).tolist()
    body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels}]}
    results: dict[str, tuple[float, float]] = {}
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            for isolation in SERVER_SERIES:
                path = f"/v2/models/digits_c_{isolation}/infer"

                def call(path: str = path) -> None:
                    client.post(path, json=body).raise_for_status()

                for _ in range(50):
                    call()
                times = _latencies(call, seconds)
                results[isolation] = (_percentile(times, 50), _percentile(times, 99))
                print(f"  server {isolation}: p50 {results[isolation][0]:.3f} ms")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return results


def _attack(base_url: str, models: tuple[str, str], stop: Any, counts: Any) -> None:
    """A separate process: keep HOSTILE_IN_FLIGHT hostile calls in flight until `stop`.
    It stands for clients on other machines, so it yields the shared cores (nice 10)."""
    os.nice(10)
    row = [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]

    def worker(number: int) -> None:
        model = models[number % 2]
        with httpx.Client(base_url=base_url, timeout=120) as client:
            while not stop.is_set():
                status = client.post(f"/v2/models/{model}/infer", json={"inputs": row})
                expected = status.status_code == 500
                with counts.get_lock():
                    counts.value += 1 if expected else 1_000_000

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(HOSTILE_IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@dataclass
class AttackPoint:
    """One measured point: the iris model's latency while one placement is attacked."""

    p50: float
    p99: float
    load: float  # 1-minute load average at the end of the point
    server_cpu: float  # the server's and its front end's CPU, in cores, over the point
    workers_cpu: float  # its worker processes' CPU, in cores
    hostile_per_s: float = 0.0  # hostile calls answered with the expected status, a second
    unexpected: int = 0  # hostile calls answered anything else


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """The CPU seconds (user + system) a process has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _children_cpu_s(parent: int) -> tuple[float, float]:
    """CPU seconds so far of the server's children: its front end (the Go gateway), and
    its model worker processes."""
    front, workers = 0.0, 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid != parent:
            continue
        if b"inferbridge.isolation.worker" in command:
            workers += _cpu_s(int(entry.name))
        else:
            front += _cpu_s(int(entry.name))
    return front, workers


def _measure(call: Callable[[], None], seconds: float, server_pid: int) -> AttackPoint:
    began, server = time.monotonic(), _cpu_s(server_pid)
    front, workers = _children_cpu_s(server_pid)
    times = _latencies(call, seconds)
    took = time.monotonic() - began
    front_after, workers_after = _children_cpu_s(server_pid)
    return AttackPoint(
        p50=_percentile(times, 50),
        p99=_percentile(times, 99),
        load=os.getloadavg()[0],
        server_cpu=(_cpu_s(server_pid) - server + front_after - front) / took,
        # A worker restarted during the point (a killed one) is not counted: a lower bound.
        workers_cpu=max(0.0, workers_after - workers) / took,
    )


def _attacked(
    call: Callable[[], None], seconds: float, server_pid: int, base_url: str, attack: Attack
) -> AttackPoint:
    number = _placements().index(attack.isolation)
    models = (f"bombs{number}", f"loops{number}")
    if attack.client == "wrk":
        point = _attacked_by_wrk(call, seconds, server_pid, base_url, models)
    else:
        point = _attacked_by_python(call, seconds, server_pid, base_url, models)
    _drained(base_url, models)
    return point


def _attacked_by_python(
    call: Callable[[], None],
    seconds: float,
    server_pid: int,
    base_url: str,
    models: tuple[str, str],
) -> AttackPoint:
    context = multiprocessing.get_context("spawn")
    stop, counts = context.Event(), context.Value("q", 0)
    attacker = context.Process(target=_attack, args=(base_url, models, stop, counts))
    attacker.start()
    ramp = time.monotonic() + 15
    while counts.value < HOSTILE_IN_FLIGHT and time.monotonic() < ramp:  # under way
        time.sleep(0.05)
    answered, began = counts.value, time.monotonic()
    point = _measure(call, seconds, server_pid)
    answered, took = counts.value - answered, time.monotonic() - began
    stop.set()
    attacker.join(180)
    point.hostile_per_s, point.unexpected = answered % 1_000_000 / took, answered // 1_000_000
    return point


_RAMP_S = 2.0


def _attacked_by_wrk(
    call: Callable[[], None],
    seconds: float,
    server_pid: int,
    base_url: str,
    models: tuple[str, str],
) -> AttackPoint:
    """Two wrk processes (one per hostile model, HOSTILE_IN_FLIGHT / 2 connections each)
    run for the ramp, the point and a margin; their rate is over all of that time."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("the hostile WASM part needs wrk (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="inferbridge-bench-wrk-"))
    body = work / "body.json"
    row = [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
    body.write_text(json.dumps({"inputs": row}))
    duration = math.ceil(_RAMP_S + seconds * 1.5 + 1)
    command = ["nice", "-n", "10", wrk, "-t1", f"-c{HOSTILE_IN_FLIGHT // 2}", f"-d{duration}s"]
    command += ["--timeout", "60s", "-s", str(_HERE / "lua" / "oip.lua"), base_url, "--"]
    attackers = [
        subprocess.Popen(
            [*command, f"/v2/models/{model}/infer", str(body)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in models
    ]
    time.sleep(_RAMP_S)
    point = _measure(call, seconds, server_pid)
    for attacker in attackers:
        out, err = attacker.communicate(timeout=duration + 120)
        line = next((x for x in out.splitlines() if x.startswith("BENCHJSON ")), None)
        if line is None:
            raise SystemExit(f"wrk printed no result: {out[-400:]} {err[-400:]}")
        result = json.loads(line.removeprefix("BENCHJSON "))
        statuses: dict[str, int] = result["statuses"]
        expected = statuses.pop("500", 0)
        point.hostile_per_s += expected / (result["duration_us"] / 1e6)
        point.unexpected += sum(statuses.values())
    shutil.rmtree(work, ignore_errors=True)
    return point


def _drained(base_url: str, models: tuple[str, str]) -> None:
    """Wait until the server has no request to `models` left (a client that went away
    may leave queued calls behind), so that none runs into the next point."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = httpx.get(f"{base_url}/metrics", timeout=30).text
        inflight = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("inferbridge_inflight_requests{")
            and any(f'model="{model}"' in line for model in models)
        ]
        if not any(inflight):
            return
        time.sleep(0.1)


def _placements() -> list[str]:
    """The hostile models' distinct `isolation` settings: models loops<n> and bombs<n>."""
    found: list[str] = []
    for attack in ATTACKS.values():
        if attack.isolation not in found:
            found.append(attack.isolation)
    return found


def wasm_under_attack(examples: Path, seconds: float, rounds: int) -> dict[str, list[AttackPoint]]:
    """The iris model's latency idle and under each attack, interleaved (idle, A, B, C,
    idle, A, ...) so that the shared machine's load falls on all alike."""
    from tests.isolation.test_wasm_hostile import hostile_model
    from tests.runtimes.test_wasm import GRAB, LOOP
    from tests.serverproc import start_server

    root = Path(tempfile.mkdtemp(prefix="inferbridge-bench-wasm-"))
    shutil.copytree(examples / "iris_wasm", root / "iris_wasm")
    for number, isolation in enumerate(_placements()):
        loops = "{fuel: 1000000000000000, timeout_ms: 100}"
        hostile_model(root, f"loops{number}", LOOP, loops, isolation)
        hostile_model(root, f"bombs{number}", GRAB, "{memory_limit_mb: 32}", isolation)
    server = start_server(root)
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
    points: dict[str, list[AttackPoint]] = {IDLE: [], **{name: [] for name in ATTACKS}}
    pid = server.process.pid
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:

            def call() -> None:
                client.post("/v2/models/iris_wasm/infer", json=body).raise_for_status()

            for _ in range(200):
                call()
            for round_number in range(rounds):
                points[IDLE].append(_measure(call, seconds, pid))
                for name, attack in ATTACKS.items():
                    points[name].append(_attacked(call, seconds, pid, server.base_url, attack))
                summary = ", ".join(f"{p[-1].p99:.2f}" for p in points.values())
                print(f"  round {round_number + 1}/{rounds}: p99 ms {summary}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return points


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ratios(points: dict[str, list[AttackPoint]], name: str, field: str) -> list[float]:
    """Each round's value over the same round's idle value."""
    idle = points[IDLE]
    return [getattr(p, field) / getattr(i, field) for p, i in zip(points[name], idle, strict=True)]


def wasm_table(points: dict[str, list[AttackPoint]]) -> list[str]:
    lines = [
        "| iris WASM model (REST JSON), 100 hostile calls in flight ... | p50 ms | p99 ms "
        "| p50 / idle | p99 / idle (target ≤ 2x) | p99 / idle, each round | load average "
        "| server + front end CPU, cores | hostile workers' CPU, cores "
        "| hostile calls answered a second (any not a 500, all rounds) |",
        "|---|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for name, series in points.items():
        if name == IDLE:
            label, p50_ratio, p99_ratio, each, hostile = "none (idle)", "1.00x", "1.00x", "-", "-"
        else:
            label = name
            p50_ratio = f"{_median(_ratios(points, name, 'p50')):.2f}x"
            per_round = _ratios(points, name, "p99")
            p99_ratio = f"**{_median(per_round):.2f}x**"
            each = " ".join(f"{r:.1f}" for r in per_round)
            rate = _median([p.hostile_per_s for p in series])
            hostile = f"{rate:,.0f} ({sum(p.unexpected for p in series)} not a 500)"
        workers = (
            "-"
            if name == IDLE or not ATTACKS[name].isolation
            else (f"{_median([p.workers_cpu for p in series]):.2f}")
        )
        lines.append(
            f"| {label} | {_median([p.p50 for p in series]):.3f} "
            f"| {_median([p.p99 for p in series]):.3f} | {p50_ratio} | {p99_ratio} | {each} "
            f"| {_median([p.load for p in series]):.2f} "
            f"| {_median([p.server_cpu for p in series]):.2f} | {workers} | {hostile} |"
        )
    return lines


def markdown(
    rows: list[Overhead],
    served: dict[str, tuple[float, float]],
    wasm: dict[str, list[AttackPoint]],
    seconds: float,
    rounds: int,
    load: str,
) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## 10. Fault isolation: `isolation: process` overhead, hostile WASM calls",
        "",
        f"Measured {stamp} (`.venv/bin/python -m benchmarks.isolation --seconds {seconds:g} "
        f"--rounds {rounds}`) on this 2-core machine, shared with other work (load average "
        f"before: {load}). p50 of sequential calls; compare ratios within the run.",
        "",
        "| per call (one process) | inline µs | process µs | added µs | ratio "
        "| pickled through a pipe µs |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        pickled = f"{row.pickle_us:.0f}" if row.pickle_us is not None else "-"
        lines.append(
            f"| {row.case} | {row.inline_us:.1f} | {row.process_us:.1f} | "
            f"{row.process_us - row.inline_us:.1f} | {row.ratio:.2f}x | {pickled} |"
        )
    inline = served["inline"]
    lines += [
        "",
        "| through the server (REST JSON, C digits, batch 1) | p50 ms | p99 ms | p50 / inline |",
        "|---|--:|--:|--:|",
    ]
    for series, extra in SERVER_SERIES.items():
        p50, p99 = served[series]
        label = extra.replace("\n", ", ")
        lines.append(f"| {label} | {p50:.3f} | {p99:.3f} | {p50 / inline[0]:.2f}x |")
    lines += [
        "",
        f"Hostile WASM calls: {rounds} rounds of {seconds:g} s per point, interleaved (idle, "
        "then each placement, then idle again ...); medians of the rounds, each ratio taken "
        "against the same round's idle point.",
        "",
        *wasm_table(wasm),
        "",
        "- The hostile calls: infinite loops to a 100 ms wall-clock limit and memory bombs to "
        "a 32 MiB cap, two models with two instances each, so that the sandbox keeps up to "
        "four threads busy on this machine's two cores. Every one is answered 500 by its own "
        "limit. The attacking client runs on the same two cores at nice 10 (it stands for "
        "clients on other machines): wrk, 50 connections per hostile model, unless the row "
        "says the Python client (100 httpx threads in one process).",
        "",
        "![10. Fault isolation](plots/isolation.png)",
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[Overhead], wasm: dict[str, list[AttackPoint]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    positions = np.arange(len(rows))
    left.bar(positions - 0.2, [r.inline_us for r in rows], 0.4, label="inline")
    left.bar(positions + 0.2, [r.process_us for r in rows], 0.4, label="isolation: process")
    left.set_xticks(positions, [r.case for r in rows], rotation=15, fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("p50 µs per call")
    left.set_title("Runtime.infer inline vs in a worker process")
    left.legend()
    spots = np.arange(2)
    width = 0.8 / len(wasm)
    for index, (name, series) in enumerate(wasm.items()):
        values = [_median([p.p50 for p in series]), _median([p.p99 for p in series])]
        offset = (index - (len(wasm) - 1) / 2) * width
        right.bar(spots + offset, values, width, label=name if name == IDLE else f"hostile {name}")
    right.set_xticks(spots, ["p50", "p99"])
    right.set_yscale("log")
    right.set_ylabel("ms (median of rounds)")
    right.set_title(f"iris WASM model, {HOSTILE_IN_FLIGHT} hostile calls to other models")
    right.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


BEGIN = "<!-- isolation benchmarks: begin (python -m benchmarks.isolation) -->"
END = "<!-- isolation benchmarks: end -->"


def publish(text: str, results: Path) -> None:
    """Replace the section between its markers in RESULTS.md (or append it, marked)."""
    document = results.read_text()
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in document and END in document:
        head, rest = document.split(BEGIN, 1)
        document = head + block + rest.split(END, 1)[1]
    else:
        document = document.rstrip() + "\n\n" + block + "\n"
    results.write_text(document)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.isolation", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measured point")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved hostile rounds")
    parser.add_argument(
        "--only-wasm", action="store_true", help="only the hostile WASM part (not publishable)"
    )
    parser.add_argument("--write", action="store_true", help="update RESULTS.md, plot")
    options = parser.parse_args()
    if options.rounds < 1 or options.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    if options.only_wasm and options.write:
        parser.error("--write publishes the whole section: run without --only-wasm")
    from inferbridge.examples.build import example_repository

    examples = example_repository()
    load = f"{os.getloadavg()[0]:.2f} (1 min)"
    rows: list[Overhead] = []
    served: dict[str, tuple[float, float]] = {}
    if not options.only_wasm:
        print("per call:")
        rows = overheads(examples, options.seconds)
        print("through the server:")
        served = through_server(examples, options.seconds)
    print("wasm under attack:")
    wasm = wasm_under_attack(examples, options.seconds, options.rounds)
    if options.only_wasm:
        print("\n".join(wasm_table(wasm)))
        return
    text = markdown(rows, served, wasm, options.seconds, options.rounds, load)
    print(text)
    if options.write:
        plot(rows, wasm, _HERE / "plots" / "isolation.png")
        publish(text, _HERE / "RESULTS.md")


if __name__ == "__main__":
    main()
