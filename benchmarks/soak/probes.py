"""The soak's hand-made requests: what ibload cannot send (oversize and malformed bodies,
clients that leave mid-request, gRPC errors and cancellations), plus a few valid and
invalid requests whose answers are read in full, so that every answer class has an example
and valid answers are checked for their outputs, not only their status.

Each probe opens its own connection (REST) and records one answer class: `HTTP <status>`,
a gRPC code name, or what the client did (`client closed mid-body`, ...). A probe states
which classes it expects; any other is an unexpected answer, kept with an example.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.soak.server import ISOLATED_MODEL, MAX_REQUEST_BYTES, ONNX_MODEL

__all__ = ["CASES", "Case", "Outcome", "Prober", "IRIS_VALUES", "rest_bodies"]

#: One iris row (setosa): every valid request here sends it, and its label must come back 0.
IRIS_VALUES = [5.1, 3.5, 1.4, 0.2]
_SETOSA = 0
_TIMEOUT_S = 10.0


def rest_bodies() -> dict[str, bytes]:
    """The REST JSON bodies shared with the ibload streams."""
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": IRIS_VALUES}
    wrong = {"name": "input", "datatype": "FP32", "shape": [1, 3], "data": IRIS_VALUES[:3]}
    return {
        "valid": json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode(),
        "wrong shape": json.dumps({"inputs": [wrong]}, separators=(",", ":")).encode(),
        "bad JSON": b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "da',
    }


@dataclass(frozen=True)
class Outcome:
    answer: str  # the answer class
    detail: str = ""  # the body (or error) when it is worth showing


@dataclass(frozen=True)
class Case:
    name: str
    expected: frozenset[str]
    run: Callable[[Prober], Outcome]


@dataclass
class Prober:
    """Runs the cases in turn on a thread, `per_second` probes a second in all."""

    http_port: int
    grpc_target: str
    per_second: float = 12.0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: (case, answer) -> (seconds into the soak, detail) of the first unexpected one.
    unexpected: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)
    #: (case, answer) -> an example body, for every pair seen (the report shows them).
    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _channel: Any = None
    stub: Any = None

    # -- running -----------------------------------------------------------------------

    def start(self, started: float) -> None:
        import grpc

        self.started = started
        from inferbridge.protocol.generated import grpc_service_pb2_grpc as pb_grpc

        self._channel = grpc.insecure_channel(self.grpc_target)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._thread = threading.Thread(target=self._run, name="soak-prober", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._channel is not None:
            self._channel.close()

    def _run(self) -> None:
        pause = 1.0 / self.per_second
        turn = 0
        while not self._stop.is_set():
            case = CASES[turn % len(CASES)]
            turn += 1
            began = time.monotonic()
            try:
                outcome = case.run(self)
            except Exception as exc:  # a probe's own failure is an answer class too
                outcome = Outcome(f"probe error {type(exc).__name__}", str(exc)[:300])
            self.record(case, outcome)
            self._stop.wait(max(0.0, pause - (time.monotonic() - began)))

    def record(self, case: Case, outcome: Outcome) -> None:
        key = (case.name, outcome.answer)
        self.counts[key] += 1
        if outcome.detail and key not in self.examples:
            self.examples[key] = outcome.detail
        if outcome.answer not in case.expected and key not in self.unexpected:
            self.unexpected[key] = (time.monotonic() - self.started, outcome.detail)

    # -- REST over a raw socket ----------------------------------------------------------

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.http_port), timeout=_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def exchange(self, data: bytes, *, half_close: bool = False) -> Outcome:
        """Send `data` on a new connection and read one answer."""
        with self.connect() as sock:
            try:
                sock.sendall(data)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
                return read_answer(sock)
            except TimeoutError:
                return Outcome(f"no answer within {_TIMEOUT_S:g} s")
            except ConnectionError as exc:
                return Outcome(f"connection {type(exc).__name__}", str(exc))

    def leave(self, data: bytes, *, reset: bool) -> None:
        """Send `data` on a new connection and go away without reading (a reset: RST)."""
        sock = self.connect()
        try:
            sock.sendall(data)
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()

    # -- gRPC ------------------------------------------------------------------------------

    def grpc_call(self, model: str, shape: list[int], values: list[float]) -> Outcome:
        import grpc

        try:
            reply = self.stub.ModelInfer(_grpc_request(model, shape, values), timeout=_TIMEOUT_S)
        except grpc.RpcError as exc:
            return Outcome(exc.code().name, exc.details() or "")
        label = _grpc_label(reply)
        if label != _SETOSA:
            return Outcome("OK with a wrong output", str(reply)[:300])
        return Outcome("OK")


def read_answer(sock: socket.socket) -> Outcome:
    """One HTTP/1.1 answer: its status, and its body (Content-Length, or until close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return Outcome("closed without an answer" if not data else "truncated answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Outcome("not an HTTP answer", head[:200].decode("latin-1"))
    length = next(
        (int(x.split(":", 1)[1]) for x in lines[1:] if x.lower().startswith("content-length:")),
        None,
    )
    while length is None or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Outcome(f"HTTP {status}", body[:300].decode("utf-8", "replace"))


def _request(path: str, body: bytes, headers: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{headers}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _infer(model: str) -> str:
    return f"/v2/models/{model}/infer"


def _checked(outcome: Outcome) -> Outcome:
    """A 200 is only a valid answer when its outputs are the setosa row's."""
    if outcome.answer != "HTTP 200":
        return outcome
    try:
        document = json.loads(outcome.detail)
        label = next(o for o in document["outputs"] if o["name"] == "label")["data"][0]
    except (ValueError, KeyError, StopIteration, IndexError, TypeError):
        return Outcome("HTTP 200 not a valid answer", outcome.detail)
    if label != _SETOSA:
        return Outcome("HTTP 200 with a wrong output", outcome.detail)
    return Outcome("HTTP 200")


def _binary_request(model: str) -> bytes:
    raw = struct.pack("<4f", *IRIS_VALUES)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        },
        separators=(",", ":"),
    ).encode()
    head = (
        f"POST {_infer(model)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(header) + len(raw)}\r\n\r\n"
    )
    return head.encode() + header + raw


_BODIES = rest_bodies()
#: Twice the limit: refused whole (Content-Length) or once past the limit (chunked).
_OVERSIZE = b" " * (2 * MAX_REQUEST_BYTES)


def _oversize_chunked() -> bytes:
    head = (
        f"POST {_infer(ONNX_MODEL)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b" " * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(len(_OVERSIZE) // 8192))
    return head + chunks + b"0\r\n\r\n"


_OVERSIZE_CHUNKED = _oversize_chunked()
_BAD_CHUNKED = (
    f"POST {_infer(ONNX_MODEL)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    "zz\r\n{}\r\n0\r\n\r\n"
).encode()


def _partial(model: str) -> bytes:
    """Headers announcing the valid body, and only its first half."""
    whole = _request(_infer(model), _BODIES["valid"])
    return whole[: len(whole) - len(_BODIES["valid"]) // 2]


def _grpc_request(model: str, shape: list[int], values: list[float]) -> Any:
    from inferbridge.protocol.generated import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name = "input"
    tensor.datatype = "FP32"
    tensor.shape.extend(shape)
    request.raw_input_contents.append(struct.pack(f"<{len(values)}f", *values))
    return request


def _grpc_label(reply: Any) -> int | None:
    for index, output in enumerate(reply.outputs):
        if output.name == "label" and index < len(reply.raw_output_contents):
            raw = reply.raw_output_contents[index]
            return int(struct.unpack("<q", raw[:8])[0]) if len(raw) >= 8 else None
    return None


def _grpc_cancelled(prober: Prober) -> Outcome:
    """Start a call and cancel it before its answer (a client that gives up)."""
    future = prober.stub.ModelInfer.future(
        _grpc_request(ONNX_MODEL, [1, 4], IRIS_VALUES), timeout=_TIMEOUT_S
    )
    return Outcome("client cancelled" if future.cancel() else "answered before the cancel")


def _grpc_channel_closed(prober: Prober) -> Outcome:
    """A client that closes its connection under a call in flight."""
    import grpc

    from inferbridge.protocol.generated import grpc_service_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(prober.grpc_target)
    try:
        grpc.channel_ready_future(channel).result(timeout=_TIMEOUT_S)
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer.future(
            _grpc_request(ONNX_MODEL, [1, 4], IRIS_VALUES), timeout=_TIMEOUT_S
        )
    finally:
        channel.close()
    return Outcome("client closed the channel mid-call")


def _left(answer: str, data: Callable[[], bytes], reset: bool) -> Callable[[Prober], Outcome]:
    def run(prober: Prober) -> Outcome:
        prober.leave(data(), reset=reset)
        return Outcome(answer)

    return run


def _expect(*answers: str) -> frozenset[str]:
    return frozenset(answers)


CASES: tuple[Case, ...] = (
    Case(
        "REST JSON, iris_onnx",
        _expect("HTTP 200"),
        lambda p: _checked(p.exchange(_request(_infer(ONNX_MODEL), _BODIES["valid"]))),
    ),
    Case(
        "REST binary, iris_onnx",
        _expect("HTTP 200"),
        lambda p: _checked(p.exchange(_binary_request(ONNX_MODEL))),
    ),
    Case(
        "REST JSON, iris (isolated)",
        _expect("HTTP 200"),
        lambda p: _checked(p.exchange(_request(_infer(ISOLATED_MODEL), _BODIES["valid"]))),
    ),
    Case(
        "gRPC, iris_onnx",
        _expect("OK"),
        lambda p: p.grpc_call(ONNX_MODEL, [1, 4], IRIS_VALUES),
    ),
    Case(
        "bad JSON",
        _expect("HTTP 400"),
        lambda p: p.exchange(_request(_infer(ONNX_MODEL), _BODIES["bad JSON"])),
    ),
    Case(
        "wrong shape",
        _expect("HTTP 400"),
        lambda p: p.exchange(_request(_infer(ONNX_MODEL), _BODIES["wrong shape"])),
    ),
    Case(
        "unknown model",
        _expect("HTTP 404"),
        lambda p: p.exchange(_request(_infer("no_such_model"), _BODIES["valid"])),
    ),
    Case(
        "oversize body (Content-Length)",
        _expect("HTTP 413"),
        lambda p: p.exchange(_request(_infer(ONNX_MODEL), _OVERSIZE)),
    ),
    Case(
        "oversize body (chunked)",
        _expect("HTTP 413"),
        lambda p: p.exchange(_OVERSIZE_CHUNKED),
    ),
    Case("malformed chunked body", _expect("HTTP 400"), lambda p: p.exchange(_BAD_CHUNKED)),
    Case(
        "body cut short (half-close)",
        _expect("HTTP 400"),
        lambda p: p.exchange(_partial(ONNX_MODEL), half_close=True),
    ),
    Case(
        "client closes mid-body",
        _expect("client closed mid-body"),
        _left("client closed mid-body", lambda: _partial(ONNX_MODEL), reset=False),
    ),
    Case(
        "client resets mid-body",
        _expect("client reset mid-body"),
        _left("client reset mid-body", lambda: _partial(ISOLATED_MODEL), reset=True),
    ),
    Case(
        "client closes before the answer",
        _expect("client closed before the answer"),
        _left(
            "client closed before the answer",
            lambda: _request(_infer(ONNX_MODEL), _BODIES["valid"]),
            reset=False,
        ),
    ),
    Case(
        "client resets before the answer",
        _expect("client reset before the answer"),
        _left(
            "client reset before the answer",
            lambda: _request(_infer(ISOLATED_MODEL), _BODIES["valid"]),
            reset=True,
        ),
    ),
    Case(
        "gRPC wrong shape",
        _expect("INVALID_ARGUMENT"),
        lambda p: p.grpc_call(ONNX_MODEL, [1, 3], IRIS_VALUES[:3]),
    ),
    Case(
        "gRPC unknown model",
        _expect("NOT_FOUND"),
        lambda p: p.grpc_call("no_such_model", [1, 4], IRIS_VALUES),
    ),
    Case(
        "gRPC cancelled mid-call",
        _expect("client cancelled", "answered before the cancel"),
        _grpc_cancelled,
    ),
    Case(
        "gRPC channel closed mid-call",
        _expect("client closed the channel mid-call"),
        _grpc_channel_closed,
    ),
)
