"""Scenario 9: an image-sized input (1x3x224x224 FP32, 602 KB) passed through system shared
memory, beside binary REST and gRPC raw, on the image model of scenario 3.

One server (batching off, the Go gateway) and one load client for every series: Python
threads, each with its own keep-alive HTTP connection or gRPC channel, sending the same
prepared request bytes in a closed loop. The shared-memory series register one input region
(holding the image) and one output region (a 4,000-byte slot for each thread's logits); the
request names them and carries no tensor bytes, and the answer carries none either. The
difference in p50 at c=1 is what moving the tensor costs: decoding, copying and sending it.
"""

from __future__ import annotations

import http.client
import json
import resource
import threading
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any

import grpc
import httpx
import numpy as np

from benchmarks import payloads
from benchmarks.context import Context, ScenarioResult, ServerSession, Target
from benchmarks.image_model import IMAGE_INPUT, IMAGE_OUTPUT, sample_image
from benchmarks.loadgen import LoadError, Point, _Meter
from benchmarks.procs import Server

__all__ = ["scenario_9"]

_MODEL = "image"
_CONCURRENCY = (1, 4)
_LOGITS_BYTES = 1000 * 4
_INFER = "/inference.GRPCInferenceService/ModelInfer"
_KEY_IN = "/inferbridge_bench_image_in"
_KEY_OUT = "/inferbridge_bench_image_out"

#: One request: send it and return the response's size in bytes.
Call = Callable[[], int]


def _rest_call(server: Server, body: bytes, header_length: int | None) -> Call:
    """A keep-alive connection of its own, posting `body`."""
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    headers = {"Content-Type": "application/octet-stream" if header_length else "application/json"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    path = f"/v2/models/{_MODEL}/infer"
    connection = http.client.HTTPConnection(host, int(port), timeout=60)

    def call() -> int:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise LoadError(f"HTTP {response.status}: {answer[:200]!r}")
        return len(answer)

    return call


def _grpc_call(server: Server, message: bytes) -> Call:
    """A channel of its own (not shared with the other threads'), sending `message`."""
    channel = grpc.insecure_channel(
        server.grpc_target,
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )
    infer = channel.unary_unary(_INFER)

    def call() -> int:
        answer: bytes = infer(message, timeout=60)
        return len(answer)

    return call


def _closed_loop(
    server: Server,
    calls: list[Call],
    *,
    series: str,
    duration: float,
    warmup: float,
    request_bytes: int,
) -> Point:
    concurrency = len(calls)
    latencies: list[list[float]] = [[] for _ in calls]
    response_bytes = [0] * concurrency
    errors: dict[str, int] = {}
    start_measure = threading.Event()
    stop = threading.Event()

    def worker(index: int) -> None:
        call, mine = calls[index], latencies[index]
        while not stop.is_set():
            began = time.perf_counter()
            try:
                size = call()
            except Exception as exc:  # a failed request is counted, not fatal
                kind = type(exc).__name__
                errors[kind] = errors.get(kind, 0) + 1
                continue
            if start_measure.is_set():
                mine.append(time.perf_counter() - began)
                response_bytes[index] = size

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    with _Meter(server) as meter:
        start_measure.set()
        time.sleep(duration)
        stop.set()
        for thread in threads:
            thread.join()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (
        usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime
    ) / meter.wall
    every = np.array([x for mine in latencies for x in mine]) * 1000.0
    if every.size == 0:
        raise LoadError(f"{series}: no successful response; errors {errors}")
    p50, p90, p99 = (float(np.percentile(every, q)) for q in (50, 90, 99))
    return Point(
        series=series,
        client="python threads",
        concurrency=concurrency,
        rps=every.size / meter.wall,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        requests=int(every.size) + sum(errors.values()),
        ok=int(every.size),
        errors=errors,
        client_cpu=client_cpu,
        server_cpu=meter.server_cpu,
        other_cpu=max(0.0, meter.other - client_cpu),
        duration_s=meter.wall,
        payload_bytes=request_bytes,
        goodput=every.size / meter.wall,
        extra={"response_bytes": max(response_bytes)},
    )


class _Regions:
    """The image in one region, a logits slot per thread in another, registered."""

    def __init__(self, server: Server, image: np.ndarray, slots: int) -> None:
        raw = np.ascontiguousarray(image, dtype="<f4").tobytes()
        self.input_bytes = len(raw)
        self.input = shared_memory.SharedMemory(_KEY_IN.lstrip("/"), create=True, size=len(raw))
        self.output = shared_memory.SharedMemory(
            _KEY_OUT.lstrip("/"), create=True, size=_LOGITS_BYTES * slots
        )
        assert self.input.buf is not None
        self.input.buf[: len(raw)] = raw
        self.base = server.base_url
        with httpx.Client(timeout=30) as client:
            client.post(f"{self.base}/v2/systemsharedmemory/unregister").raise_for_status()
            for name, key, size in (
                ("bench_in", _KEY_IN, len(raw)),
                ("bench_out", _KEY_OUT, _LOGITS_BYTES * slots),
            ):
                client.post(
                    f"{self.base}/v2/systemsharedmemory/region/{name}/register",
                    json={"key": key, "offset": 0, "byte_size": size},
                ).raise_for_status()

    def close(self) -> None:
        try:
            httpx.post(f"{self.base}/v2/systemsharedmemory/unregister", timeout=30)
        finally:
            for region in (self.input, self.output):
                region.close()
                region.unlink()

    def rest_body(self, slot: int) -> bytes:
        document = {
            "inputs": [
                {
                    "name": IMAGE_INPUT,
                    "datatype": "FP32",
                    "shape": [1, 3, 224, 224],
                    "parameters": {
                        "shared_memory_region": "bench_in",
                        "shared_memory_byte_size": self.input_bytes,
                    },
                }
            ],
            "outputs": [{"name": IMAGE_OUTPUT, "parameters": self._output(slot)}],
        }
        return json.dumps(document, separators=(",", ":")).encode()

    def grpc_message(self, slot: int) -> bytes:
        from inferbridge.protocol.generated import grpc_service_pb2 as pb

        request = pb.ModelInferRequest(model_name=_MODEL)
        tensor = request.inputs.add(name=IMAGE_INPUT, datatype="FP32", shape=[1, 3, 224, 224])
        tensor.parameters["shared_memory_region"].string_param = "bench_in"
        tensor.parameters["shared_memory_byte_size"].int64_param = self.input_bytes
        output = request.outputs.add(name=IMAGE_OUTPUT)
        for key, value in self._output(slot).items():
            if isinstance(value, str):
                output.parameters[key].string_param = value
            else:
                output.parameters[key].int64_param = value
        return request.SerializeToString()

    @staticmethod
    def _output(slot: int) -> dict[str, Any]:
        return {
            "shared_memory_region": "bench_out",
            "shared_memory_byte_size": _LOGITS_BYTES,
            "shared_memory_offset": slot * _LOGITS_BYTES,
        }


def scenario_9(ctx: Context) -> ScenarioResult:
    """The image input through system shared memory vs binary REST vs gRPC raw."""
    result = ScenarioResult(
        "s9",
        "9. Shared memory: image 1x3x224x224 FP32 by reference vs binary REST vs gRPC raw "
        "(one Python client)",
    )
    image = sample_image(1)
    binary = payloads.rest_binary(
        ctx.payload_dir, _MODEL, IMAGE_INPUT, image, {"binary_data_output": True}, tag="-shm9"
    )
    raw = payloads.grpc_raw(ctx.payload_dir, _MODEL, IMAGE_INPUT, image, tag="-shm9")
    concurrencies = (1,) if ctx.quick else _CONCURRENCY
    with ServerSession(
        result,
        "inferbridge batching off",
        lambda: ctx.start_inferbridge("off", [_MODEL]),
        ctx.retry,
    ) as session:
        assert session.server is not None
        regions = _Regions(session.server, image, max(concurrencies))
        try:
            for concurrency in concurrencies:
                for series in ("binary REST", "gRPC raw", "shm REST", "shm gRPC"):
                    session.measure(
                        f"{series} c={concurrency}",
                        _runner(ctx, series, concurrency, binary, raw, regions),
                    )
        finally:
            regions.close()
    _targets(result, concurrencies)
    return result


def _runner(
    ctx: Context,
    series: str,
    concurrency: int,
    binary: payloads.Payload,
    raw: payloads.Payload,
    regions: _Regions,
) -> Callable[[Server], Point]:
    def run(server: Server) -> Point:
        slots = range(concurrency)
        if series == "binary REST":
            body, length = binary.body(), binary.header_length()
            calls = [_rest_call(server, body, length) for _ in slots]
            size = binary.size
        elif series == "gRPC raw":
            calls = [_grpc_call(server, raw.body()) for _ in slots]
            size = raw.size
        elif series == "shm REST":
            calls = [_rest_call(server, regions.rest_body(i), None) for i in slots]
            size = len(regions.rest_body(0))
        else:
            calls = [_grpc_call(server, regions.grpc_message(i)) for i in slots]
            size = len(regions.grpc_message(0))
        return _closed_loop(
            server,
            calls,
            series=series,
            duration=ctx.duration,
            warmup=ctx.warmup,
            request_bytes=size,
        )

    return run


def _targets(result: ScenarioResult, concurrencies: tuple[int, ...]) -> None:
    for concurrency in concurrencies:
        base = {s: result.find(s, concurrency) for s in ("binary REST", "gRPC raw")}
        for shm_series, against in (("shm REST", "binary REST"), ("shm gRPC", "gRPC raw")):
            shm = result.find(shm_series, concurrency)
            other = base[against]
            name = f"image {shm_series} vs {against}, c={concurrency}"
            if shm is None or other is None:
                result.targets.append(Target(name, "the transfer cost vanishes", "missing", None))
                continue
            saved = other.p50_ms - shm.p50_ms
            result.targets.append(
                Target(
                    name,
                    "p50 below the in-message series (the 602 KB transfer no longer paid)",
                    f"p50 {shm.p50_ms:.2f} vs {other.p50_ms:.2f} ms ({saved:+.2f} ms saved), "
                    f"{shm.rps:,.0f} vs {other.rps:,.0f} req/s; request {shm.payload_bytes:,} vs "
                    f"{other.payload_bytes:,} B, response {shm.extra.get('response_bytes', 0):,} "
                    f"vs {other.extra.get('response_bytes', 0):,} B",
                    shm.p50_ms < other.p50_ms,
                )
            )
    result.notes.append(
        "One server (batching off, the Go gateway, the image model of scenario 3). All four "
        "series use the same client: Python threads, one keep-alive connection (REST, "
        "http.client) or channel (gRPC, raw bytes in and out) per thread, each sending one "
        "prepared request in a closed loop. Binary REST asks for the logits binary "
        "(binary_data_output); gRPC raw sends the tensor in raw_input_contents. The "
        "shared-memory series name a registered input region holding the image and a "
        "4,000-byte output slot per thread; their requests and responses carry no tensor "
        "bytes. Payload B is the request body; the response sizes are in the targets."
    )
