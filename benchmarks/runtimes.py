"""Runtime benchmark: each runtime's example model in-process vs through the server.

For every runtime example in the bundled repository this prints p50 latency at batch 1
and throughput at batch 32 (rows per second), measured (a) in-process: `Runtime.infer`,
i.e. the framework plus the runtime's thin adapter, each model alone in a fresh child
process, and (b) through a real `inferbridge serve` subprocess over gRPC with tritonclient
(one client, sequential requests), with the server/in-process ratios. Throughput is batch size over
the median time of one call (one sequential client; `--mean` uses elapsed time instead).
Both run on the same machine in one run: compare the ratios, not absolute numbers
across machines.

    python -m benchmarks.runtimes [--seconds 2] [--models iris_go,digits_c]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: (model, runtime, input name, outputs, kind of input)
MODELS: list[tuple[str, str, str, list[str], str]] = [
    ("digits", "onnx (baseline)", "pixels", ["label", "probabilities"], "digits"),
    ("iris_go", "native (Go)", "input", ["probabilities", "label"], "iris"),
    ("digits_c", "native (C)", "pixels", ["probabilities", "label"], "digits"),
    ("iris_wasm", "wasm (WAT)", "input", ["scores", "label"], "iris"),
    ("digits_wasm", "wasm (C)", "pixels", ["scores", "label"], "digits"),
    ("digits_opencv", "opencv dnn", "pixels", ["scores", "probabilities"], "digits"),
    ("faces", "opencv cascade", "image", ["boxes"], "image"),
    ("digits_tflite", "tflite", "pixels", ["scores", "probabilities", "label"], "digits"),
    ("digits_torchscript", "torchscript", "pixels", ["probabilities", "label"], "digits"),
    ("iris_tensorflow", "tensorflow", "input", ["probabilities", "label"], "iris"),
]


MEAN = False


@dataclass
class Row:
    model: str
    runtime: str
    local_p50_ms: float
    server_p50_ms: float
    local_rows_s: float
    server_rows_s: float


def batch_of(kind: str, rows: int) -> np.ndarray[Any, Any]:
    from inferbridge.examples.build import digits_split, iris_split

    if kind == "image":
        try:
            from skimage.data import astronaut

            image = astronaut().mean(axis=2).astype(np.uint8)[::2, ::2]  # 256 x 256 gray
        except ImportError:
            image = np.zeros((256, 256), np.uint8)
        return np.repeat(image[np.newaxis], rows, axis=0)
    X = (digits_split if kind == "digits" else iris_split)()[1]
    return np.ascontiguousarray(np.resize(X, (rows, X.shape[1])))


def p50_ms(call: Callable[[], object], seconds: float) -> float:
    call()  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def rows_per_s(call: Callable[[], object], rows: int, seconds: float) -> float:
    """Rows per second of one sequential client: rows / the median time of a call.

    The median rather than the mean keeps other processes' bursts on a shared machine
    out of the figure; `--mean` reports calls completed / elapsed instead.
    """
    if MEAN:
        call()
        count = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or count < 3:
            call()
            count += 1
        return count * rows / (time.perf_counter() - start)
    return rows / (p50_ms(call, seconds) / 1000)


def in_process(repository: Path, model: str) -> Any:
    from inferbridge.repository.config import load_config
    from inferbridge.runtimes.registry import runtime_class

    config = load_config(repository / model / "config.yaml")
    runtime = runtime_class(config.runtime)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runtime.load(repository / model / "1", config, "cpu")
    return runtime


def grpc_call(
    client: Any, model: str, name: str, array: Any, outputs: list[str]
) -> Callable[[], object]:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    wanted = [grpcclient.InferRequestedOutput(n) for n in outputs]
    return lambda: client.infer(model, [tensor], outputs=wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (default 2)")
    parser.add_argument("--batch", type=int, default=32, help="throughput batch (default 32)")
    parser.add_argument("--models", help="comma-separated subset of the example models")
    parser.add_argument(
        "--mean", action="store_true", help="throughput from elapsed time, not the median call"
    )
    parser.add_argument("--in-process", metavar="MODEL", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    global MEAN
    MEAN = options.mean

    from inferbridge.examples.build import example_repository

    repository = example_repository()
    if options.in_process:
        # A child measuring one model alone: frameworks in one process disturb each other
        # (cv2.dnn slows cascades down; torch and TensorFlow each bundle LLVM).
        entry = next(m for m in MODELS if m[0] == options.in_process)
        print(json.dumps(measure_local(repository, entry, options)))
        return 0

    import tritonclient.grpc as grpcclient

    from tests.serverproc import start_server

    chosen = set(options.models.split(",")) if options.models else None
    models = [m for m in MODELS if (repository / m[0]).exists() and (not chosen or m[0] in chosen)]
    skipped = [m[0] for m in MODELS if not (repository / m[0]).exists()]
    rows: list[Row] = []
    server = start_server(repository)
    try:
        client = grpcclient.InferenceServerClient(url=server.grpc_url)
        for entry in models:
            local = _local_in_child(entry[0], options)
            remote = measure_server(client, entry, options)
            rows.append(Row(entry[0], entry[1], local[0], remote[0], local[1], remote[1]))
            print(f"measured {entry[0]}", file=sys.stderr, flush=True)
        client.close()
    finally:
        server.stop()
    print(table(rows, options.batch))
    if skipped:
        print(f"\nnot built here (framework or tool missing): {', '.join(skipped)}")
    return 0


def _local_in_child(model: str, options: argparse.Namespace) -> tuple[float, float]:
    command = [
        sys.executable, "-m", "benchmarks.runtimes", "--in-process", model,
        "--seconds", str(options.seconds), "--batch", str(options.batch),
    ]  # fmt: skip
    if options.mean:
        command.append("--mean")
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    p50, rate = json.loads(done.stdout.strip().splitlines()[-1])
    return float(p50), float(rate)


def measure_local(
    repository: Path, entry: tuple[str, str, str, list[str], str], options: argparse.Namespace
) -> tuple[float, float]:
    """(p50 ms at batch 1, rows/s at the throughput batch) calling Runtime.infer here."""
    model, _, input_name, _, kind = entry
    runtime = in_process(repository, model)
    one, many = batch_of(kind, 1), batch_of(kind, options.batch)
    try:
        return (
            p50_ms(lambda: runtime.infer({input_name: one}), options.seconds),
            rows_per_s(lambda: runtime.infer({input_name: many}), options.batch, options.seconds),
        )
    finally:
        runtime.unload()


def measure_server(
    client: Any, entry: tuple[str, str, str, list[str], str], options: argparse.Namespace
) -> tuple[float, float]:
    """(p50 ms at batch 1, rows/s at the throughput batch) through the server over gRPC."""
    model, _, input_name, outputs, kind = entry
    one, many = batch_of(kind, 1), batch_of(kind, options.batch)
    return (
        p50_ms(grpc_call(client, model, input_name, one, outputs), options.seconds),
        rows_per_s(
            grpc_call(client, model, input_name, many, outputs), options.batch, options.seconds
        ),
    )


def table(rows: list[Row], batch: int) -> str:
    header = (
        "| runtime | model | p50 b1 in-process ms | p50 b1 server ms | server/in-process | "
        f"b{batch} in-process rows/s | b{batch} server rows/s | server/in-process |"
    )
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r.runtime} | {r.model} | {r.local_p50_ms:.3f} | {r.server_p50_ms:.3f} | "
            f"{r.server_p50_ms / r.local_p50_ms:.1f}x | {r.local_rows_s:,.0f} | "
            f"{r.server_rows_s:,.0f} | {r.server_rows_s / r.local_rows_s:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
