"""Service benchmark: images/s or texts/s and p99 latency per service, in-process vs server.

For each service of issue #4 (faces, digit classification, detection, text embedding) this
measures one request at a time (a) in this process (the pipeline runtime's `infer`, i.e.
decode + model + post-processing), (b) through a real `inferbridge serve` over REST (the
/v1 endpoints: multipart upload or JSON), and (c) over gRPC (OIP ModelInfer, BYTES input,
tritonclient). `--concurrency N` runs N clients against the server (the pipelines batch).
Everything runs on this machine in one run: compare ratios, not absolute numbers.

    python -m benchmarks.services [--seconds 3] [--concurrency 1] [--services faces,embed]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Service:
    key: str
    model: str
    unit: str
    oip_inputs: Callable[[], dict[str, np.ndarray[Any, Any]]]
    rest: Callable[[Any, str], Any]


@dataclass
class Result:
    items_s: float
    p99_ms: float


def _encode(image: np.ndarray[Any, Any], ext: str) -> bytes:
    import cv2

    ok, data = cv2.imencode(ext, image)
    assert ok
    return bytes(data)


def _astronaut() -> bytes:
    from skimage.data import astronaut

    return _encode(np.ascontiguousarray(astronaut()[..., ::-1]), ".jpg")


def _digit() -> bytes:
    import cv2

    from inferbridge.examples.build import digits_split

    row = digits_split()[1][0]
    ink = (255 - row.reshape(8, 8) * (255 / 16)).astype(np.uint8)
    return _encode(cv2.resize(ink, (64, 64), interpolation=cv2.INTER_NEAREST), ".png")


def _photo() -> bytes:
    from skimage.data import chelsea

    return _encode(np.ascontiguousarray(chelsea()[..., ::-1]), ".jpg")  # 451 x 300


SENTENCE = "Backend services want to send a sentence and get an answer back quickly."


def _bytes(*items: bytes) -> np.ndarray[Any, Any]:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def services() -> list[Service]:
    face, digit, photo = _astronaut(), _digit(), _photo()

    def upload(path: str, data: bytes) -> Callable[[Any, str], Any]:
        files = {"image": ("upload", data, "image/jpeg")}
        return lambda client, base: client.post(f"{base}{path}", files=files).raise_for_status()

    def embed(client: Any, base: str) -> Any:
        url = f"{base}/v1/text/embed"
        return client.post(url, json={"texts": [SENTENCE]}).raise_for_status()

    return [
        Service(
            "faces",
            "face_detection",
            "images",
            lambda: {"image": _bytes(face), "detector": np.zeros((1, 3), np.float32)},
            upload("/v1/vision/faces", face),
        ),
        Service(
            "classify",
            "digits_classifier",
            "images",
            lambda: {"image": _bytes(digit)},
            upload("/v1/vision/classify", digit),
        ),
        Service(
            "detect",
            "detection",
            "images",
            lambda: {"image": _bytes(photo)},
            upload("/v1/vision/detect", photo),
        ),
        Service(
            "embed", "text_embedding", "texts", lambda: {"text": _bytes(SENTENCE.encode())}, embed
        ),
    ]


def run(call: Callable[[], object], seconds: float, concurrency: int = 1) -> Result:
    """Items per second over the run and the p99 of single-request latencies."""
    call()  # warm-up
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        mine: list[float] = []
        while time.perf_counter() < stop or not mine:
            start = time.perf_counter()
            call()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
    return Result(len(latencies) / elapsed, p99 * 1000)


def grpc_call(
    url: str, model: str, inputs: dict[str, np.ndarray[Any, Any]]
) -> Callable[[], object]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=url)
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(
            name, list(array.shape), "BYTES" if array.dtype == object else "FP32"
        )
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return lambda: client.infer(model, tensors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    parser.add_argument("--concurrency", type=int, default=1, help="server clients (default 1)")
    parser.add_argument("--services", help="comma-separated subset: faces,classify,detect,embed")
    options = parser.parse_args(argv)

    import httpx

    from inferbridge.examples.build import example_repository
    from inferbridge.export.verify import load_entry
    from tests.serverproc import start_server

    repository: Path = example_repository()
    chosen = set(options.services.split(",")) if options.services else None
    todo = [s for s in services() if not chosen or s.key in chosen]
    missing = [s.model for s in todo if not (repository / s.model).exists()]
    todo = [s for s in todo if (repository / s.model).exists()]
    rows: list[tuple[Service, Result, Result, Result]] = []
    server = start_server(repository)
    try:
        local_http = threading.local()

        def http_client() -> httpx.Client:
            if not hasattr(local_http, "client"):
                local_http.client = httpx.Client(timeout=60)
            return local_http.client  # type: ignore[no-any-return]

        for service in todo:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runtime = load_entry(repository / service.model)
            inputs = service.oip_inputs()
            local = run(lambda r=runtime, i=inputs: r.infer(i), options.seconds)
            runtime.unload()
            rest = run(
                lambda s=service: s.rest(http_client(), server.base_url),
                options.seconds,
                options.concurrency,
            )

            calls = threading.local()

            def grpc(
                s: Service = service, i: dict[str, Any] = inputs, calls: Any = calls
            ) -> object:
                if not hasattr(calls, s.key):
                    setattr(calls, s.key, grpc_call(server.grpc_url, s.model, i))
                return getattr(calls, s.key)()

            remote = run(grpc, options.seconds, options.concurrency)
            rows.append((service, local, rest, remote))
            print(f"measured {service.key}", file=sys.stderr, flush=True)
    finally:
        server.stop()
    print(table(rows, options.concurrency))
    if missing:
        print(f"\nnot built here: {', '.join(missing)}")
    return 0


def table(rows: list[tuple[Service, Result, Result, Result]], concurrency: int) -> str:
    lines = [
        f"| service | model | unit | in-process /s | in-process p99 ms | REST /s (c={concurrency}) "
        f"| REST p99 ms | gRPC /s (c={concurrency}) | gRPC p99 ms | REST / in-process |",
        "|" + "---|" * 10,
    ]
    for service, local, rest, grpc in rows:
        lines.append(
            f"| {service.key} | {service.model} | {service.unit} | {local.items_s:,.1f} | "
            f"{local.p99_ms:.2f} | {rest.items_s:,.1f} | {rest.p99_ms:.2f} | "
            f"{grpc.items_s:,.1f} | {grpc.p99_ms:.2f} | {rest.items_s / local.items_s:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
