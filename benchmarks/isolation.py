"""Fault isolation benchmark: what `isolation: process` costs, and what hostile WASM calls
do to the server's other models.

1. Per call, in one process: `Runtime.infer` inline vs the same runtime in a worker
   process (inferbridge.isolation: tensors through a memfd region, a small header over a
   Unix socket), on the C digits library (batch 1 and 64) and on an identity model with
   1 MiB and 16 MiB tensors; beside them, the same arrays pickled through a
   multiprocessing pipe to a child and back (what shared memory avoids).
2. Through a real server: the digits C library over REST (JSON, one sequential client),
   `isolation: inline` vs `process`, in one server.
3. WASM sandbox: the iris WASM model's latency (one sequential client) idle, then while
   another process keeps 100 hostile calls in flight (infinite loops to the wall-clock
   limit, memory bombs to the cap) on two other models of the same server.

    .venv/bin/python -m benchmarks.isolation [--seconds 3] [--write]

`--write` appends the section to benchmarks/RESULTS.md and the plot to benchmarks/plots/.
Compare the ratios within one run, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
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
#: The hostile WASM models: in the server (the default), or in worker processes that
#: yield the CPU (nice 19).
ATTACKS = {"in the server": "", "in niced worker processes": "{mode: process, nice: 19}"}


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


def _attack(base_url: str, suffix: str, stop: Any, counts: Any) -> None:
    """A separate process: keep HOSTILE_IN_FLIGHT hostile calls in flight until `stop`.
    It stands for clients on other machines, so it yields the shared cores (nice 10)."""
    os.nice(10)
    row = [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]

    def worker(number: int) -> None:
        model = ("loops" if number % 2 else "bombs") + suffix
        with httpx.Client(base_url=base_url, timeout=120) as client:
            while not stop.is_set():
                status = client.post(f"/v2/models/{model}/infer", json={"inputs": row})
                with counts.get_lock():
                    counts.value += 1 if status.status_code == 500 else 1_000_000

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(HOSTILE_IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def wasm_under_attack(examples: Path, seconds: float) -> dict[str, Any]:
    from tests.isolation.test_wasm_hostile import hostile_model
    from tests.runtimes.test_wasm import GRAB, LOOP
    from tests.serverproc import start_server

    root = Path(tempfile.mkdtemp(prefix="inferbridge-bench-wasm-"))
    shutil.copytree(examples / "iris_wasm", root / "iris_wasm")
    for number, isolation in enumerate(ATTACKS.values()):
        loops = "{fuel: 1000000000000000, timeout_ms: 100}"
        hostile_model(root, f"loops{number}", LOOP, loops, isolation)
        hostile_model(root, f"bombs{number}", GRAB, "{memory_limit_mb: 32}", isolation)
    server = start_server(root)
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
    context = multiprocessing.get_context("spawn")
    result: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:

            def call() -> None:
                client.post("/v2/models/iris_wasm/infer", json=body).raise_for_status()

            for _ in range(50):
                call()
            idle = _latencies(call, seconds)
            result["idle"] = (_percentile(idle, 50), _percentile(idle, 99))
            for number, attack in enumerate(ATTACKS):
                stop, counts = context.Event(), context.Value("q", 0)
                attacker = context.Process(
                    target=_attack, args=(server.base_url, str(number), stop, counts)
                )
                attacker.start()
                while counts.value < HOSTILE_IN_FLIGHT:  # the attack is under way
                    time.sleep(0.05)
                attacked = _latencies(call, seconds)
                stop.set()
                attacker.join(180)
                result[attack] = (
                    _percentile(attacked, 50),
                    _percentile(attacked, 99),
                    counts.value % 1_000_000,
                    counts.value // 1_000_000,
                )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"  wasm: {result}")
    return result


def markdown(
    rows: list[Overhead],
    served: dict[str, tuple[float, float]],
    wasm: dict[str, Any],
    seconds: float,
    load: str,
) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## 10. Fault isolation: `isolation: process` overhead, hostile WASM calls",
        "",
        f"Measured {stamp} (`.venv/bin/python -m benchmarks.isolation --seconds {seconds:g}`) "
        f"on this 2-core machine, shared with other work (load average before: {load}). "
        "p50 of sequential calls; compare ratios within the run.",
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
    idle = wasm["idle"]
    lines += [
        "",
        "| iris WASM model (REST JSON) | p50 ms | p99 ms | p99 / idle (target ≤ 2x) "
        "| hostile calls answered |",
        "|---|--:|--:|--:|--:|",
        f"| idle | {idle[0]:.3f} | {idle[1]:.3f} | 1.00x | - |",
    ]
    for attack in ATTACKS:
        p50, p99, hostile, unexpected = wasm[attack]
        lines.append(
            f"| {HOSTILE_IN_FLIGHT} hostile calls in flight, {attack} | {p50:.3f} | {p99:.3f} "
            f"| {p99 / idle[1]:.2f}x | {hostile:,} ({unexpected} not a 500) |"
        )
    lines += [
        "",
        "- The hostile calls: infinite loops to a 100 ms wall-clock limit and memory bombs to "
        "a 32 MiB cap, two models with two instances each, so that the sandbox keeps up to "
        "four threads busy on this machine's two cores. Every one is answered 500 by its own "
        "limit. The attacking client runs on the same two cores at nice 10 (it stands for "
        "clients on other machines).",
        "",
        "![10. Fault isolation](plots/isolation.png)",
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[Overhead], wasm: dict[str, Any], path: Path) -> None:
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
    series = ["idle", *ATTACKS]
    width = 0.8 / len(series)
    for index, name in enumerate(series):
        values = wasm[name][:2]
        right.bar(spots + (index - 1) * width, values, width, label=name)
    right.set_xticks(spots, ["p50", "p99"])
    right.set_yscale("log")
    right.set_ylabel("ms")
    right.set_title(f"iris WASM model, {HOSTILE_IN_FLIGHT} hostile calls to other models")
    right.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.isolation", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measured point")
    parser.add_argument("--write", action="store_true", help="append to RESULTS.md, plot")
    options = parser.parse_args()
    from inferbridge.examples.build import example_repository

    examples = example_repository()
    load = f"{os.getloadavg()[0]:.2f} (1 min)"
    print("per call:")
    rows = overheads(examples, options.seconds)
    print("through the server:")
    served = through_server(examples, options.seconds)
    print("wasm under attack:")
    wasm = wasm_under_attack(examples, options.seconds)
    text = markdown(rows, served, wasm, options.seconds, load)
    print(text)
    if options.write:
        plot(rows, wasm, _HERE / "plots" / "isolation.png")
        with (_HERE / "RESULTS.md").open("a") as results:
            results.write("\n" + text)


if __name__ == "__main__":
    main()
