"""REST and gRPC served through the Go gateway: HTTP in Go, everything else here.

grpcio spends about half a millisecond of CPU per unary call in Python, and uvicorn about
30 us of the event loop per HTTP request; both cap a 2-core machine well below what the
dataplane can do, and under overload a Python server spends its loop refusing requests.
The gateway (a small Go program, source in ``go/``) terminates gRPC and HTTP on its own
threads, serves gRPC health and reflection itself, refuses REST requests beyond a model's
queue bound, and forwards everything else over a Unix socketpair. This module answers
them with the same servicers and the same ASGI app the in-process front ends use, so
both behave identically.

Wire protocol, little-endian, both directions: ``u32 length`` (bytes after it) ``u8 kind``
``u64 id``, then the body:

- CALL (gateway -> here): ``u16 method_len``, method path, ``i64 timeout_us`` (-1 = no
  deadline), request bytes.
- CANCEL (gateway -> here): the caller cancelled or its deadline passed; drop the call.
- REPLY (here -> gateway): ``u8 code`` (gRPC status), then response bytes (code 0) or the
  UTF-8 error message.
- HEALTH (here -> gateway, id 0): ``u8 status`` (1 serving, 2 not serving), service name.
- SHUTDOWN (here -> gateway, id 0): ``u32 grace_ms``; the gateway drains and exits.
- DESCRIPTORS (here -> gateway, id 0): a FileDescriptorSet of the forwarded services, for
  reflection; always the first frame.
- HTTP (gateway -> here): method, path, raw path and query (each ``u16`` length + bytes),
  ``u16`` header count, headers (``u16`` name length, lower-case name, ``u32`` value length,
  value), ``i64`` arrival time (unix ns), then the whole body. CANCEL: the client left.
- REPLY-HTTP (here -> gateway): ``u16 status``, headers as above, the whole body.
- LIMITS (here -> gateway, id 0): ``u16`` count, then per model ``u16`` name length, name,
  ``u32`` limit: infer requests (REST and gRPC ModelInfer) outstanding at most; beyond it
  the gateway answers 429 / RESOURCE_EXHAUSTED itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError, Message

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.frontends.grpc.servicers import (
    AIServicer,
    InferenceServicer,
    MethodTable,
    method_table,
)
from inferbridge.frontends.rest.app import CANCELS_ON_DISCONNECT
from inferbridge.protocol.generated import ai_service_pb2, grpc_service_pb2

#: An ASGI application (the REST app), called with scope, receive and send.
ASGIApp = Callable[..., Awaitable[None]]

__all__ = ["GatewayError", "GatewayFrontend"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<IBQ")  # length, kind, id
_ID_AND_KIND = 9  # bytes of the header counted by `length`
_CALL, _CANCEL, _REPLY, _HEALTH, _SHUTDOWN, _DESCRIPTORS, _HTTP, _HTTP_REPLY, _LIMITS = range(1, 10)
_SERVING, _NOT_SERVING = 1, 2
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TIMEOUT = struct.Struct("<q")
_STARTUP_TIMEOUT_S = 30.0


class GatewayError(RuntimeError):
    """The gateway could not start or stopped unexpectedly."""


class _Aborted(grpc.aio.AbortError):
    """Raised by _CallContext.abort; carries the status back to the protocol."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _CallContext:
    """The part of grpc.aio.ServicerContext the servicers use."""

    __slots__ = ("_deadline",)

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)


def _status_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number


class _BackendProtocol(asyncio.Protocol):
    """Answers the gateway's CALL (gRPC) and HTTP frames; one per gateway connection."""

    def __init__(
        self, methods: MethodTable, rest_app: ASGIApp | None, on_lost: Callable[[], None]
    ) -> None:
        self._methods = methods
        self._rest_app = rest_app
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._exchanges: dict[int, _HttpExchange] = {}
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for task in self._calls.values():
            task.cancel()
        self._on_lost()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset, end = 0, len(buffer)
        while end - offset >= 4:
            (length,) = struct.unpack_from("<I", buffer, offset)
            if end - offset - 4 < length:
                break
            _, kind, call_id = _HEADER.unpack_from(buffer, offset)
            body = offset + _HEADER.size
            offset += 4 + length
            if kind == _HTTP:
                self._start_http(call_id, buffer, body, offset)
            elif kind == _CALL:
                self._start_call(call_id, buffer, body, offset)
            elif kind == _CANCEL:
                # The caller cancelled or disconnected: drop its work wherever it is (a
                # queued request leaves the queue). The REST app is told by the scope's
                # extension that this is how disconnects arrive, so it needs no watch.
                exchange = self._exchanges.get(call_id)
                if exchange is not None:
                    exchange.disconnect()
                task = self._calls.get(call_id)
                if task is not None:
                    task.cancel()
            else:
                logger.warning("the gateway sent an unknown frame kind %d", kind)
        if offset:
            del buffer[:offset]

    # --- calls --------------------------------------------------------------------------
    def _start_call(self, call_id: int, buffer: bytearray, start: int, end: int) -> None:
        (method_len,) = _U16.unpack_from(buffer, start)
        start += _U16.size
        method = bytes(buffer[start : start + method_len]).decode("utf-8", "replace")
        start += method_len
        (timeout_us,) = _TIMEOUT.unpack_from(buffer, start)
        payload = _copy(buffer, start + _TIMEOUT.size, end)
        deadline = None if timeout_us < 0 else time.monotonic() + timeout_us / 1e6
        task = self._loop.create_task(self._answer(call_id, method, payload, deadline))
        self._calls[call_id] = task

    async def _answer(
        self, call_id: int, method: str, payload: bytes, deadline: float | None
    ) -> None:
        try:
            entry = self._methods.get(method)
            if entry is None:
                self._reply_error(
                    call_id, grpc.StatusCode.UNIMPLEMENTED, f"unknown method {method}"
                )
                return
            handler, request_type = entry
            try:
                request = request_type.FromString(payload)
            except DecodeError as exc:
                self._reply_error(
                    call_id,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request is not a valid {request_type.DESCRIPTOR.full_name}: {exc}",
                )
                return
            try:
                response: Message = await handler(request, _CallContext(deadline))
            except _Aborted as aborted:
                self._reply_error(call_id, aborted.code, aborted.details)
                return
            self._send(_REPLY, call_id, b"\x00", response.SerializeToString())
        except asyncio.CancelledError:
            pass  # the gateway has already answered the caller (cancelled or deadline)
        except Exception:  # the servicers map their own errors; this is a bug
            logger.exception("unhandled error answering %s", method)
            self._reply_error(
                call_id, grpc.StatusCode.INTERNAL, "internal server error; see the server log"
            )
        finally:
            self._calls.pop(call_id, None)

    # --- REST -----------------------------------------------------------------------------
    def _start_http(self, call_id: int, buffer: bytearray, start: int, end: int) -> None:
        scope, start = _http_scope(buffer, start)
        exchange = _HttpExchange(_copy(buffer, start, end))
        self._exchanges[call_id] = exchange
        self._calls[call_id] = self._loop.create_task(self._serve_http(call_id, scope, exchange))

    async def _serve_http(
        self, call_id: int, scope: dict[str, Any], exchange: _HttpExchange
    ) -> None:
        assert self._rest_app is not None  # the gateway sends HTTP frames only when given one
        try:
            await self._rest_app(scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            return  # the client or the gateway is gone
        except Exception:  # the app maps its own errors; this is a bug
            logger.exception("unhandled error serving %s %s", scope["method"], scope["path"])
            exchange.status = None
        finally:
            self._exchanges.pop(call_id, None)
            self._calls.pop(call_id, None)
        if exchange.disconnected:
            return
        if exchange.status is None:
            exchange.internal_error()
        self._send(
            _HTTP_REPLY,
            call_id,
            _U16.pack(exchange.status or 500),
            _encode_headers(exchange.headers),
            *exchange.body,
        )

    def _reply_error(self, call_id: int, code: grpc.StatusCode, message: str) -> None:
        self._send(_REPLY, call_id, bytes((_status_number(code),)), message.encode())

    def _send(self, kind: int, call_id: int, *parts: bytes) -> None:
        if self._transport is None:
            return
        length = _ID_AND_KIND + sum(len(p) for p in parts)
        # Replies finished in one turn of the event loop leave in one write (one syscall
        # instead of one each): under load many calls complete per turn.
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(_HEADER.pack(length, kind, call_id))
        self._outgoing.extend(parts)

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self._transport is not None:
            self._transport.write(b"".join(outgoing))

    def send_control(self, kind: int, body: bytes) -> None:
        self._send(kind, 0, body)


class _HttpExchange:
    """ASGI receive/send for one forwarded HTTP request: the body is already whole."""

    __slots__ = ("_body", "_gone", "body", "disconnected", "headers", "status")

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self._gone: asyncio.Future[None] | None = None
        self.disconnected = False
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    async def receive(self) -> dict[str, Any]:
        if self._body is not None and not self.disconnected:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        if not self.disconnected:
            if self._gone is None:
                self._gone = asyncio.get_running_loop().create_future()
            await self._gone
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            self.body.append(bytes(message.get("body", b"")))

    def internal_error(self) -> None:
        """The app sent no (complete) response: answer 500, as uvicorn would."""
        self.status = 500
        self.headers = [(b"content-type", b"application/json")]
        self.body = [b'{"error": "internal server error; see the server log"}']

    def disconnect(self) -> None:
        self.disconnected = True
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)


def _copy(buffer: bytearray, start: int, end: int) -> bytes:
    """buffer[start:end] as bytes in one copy (slicing a bytearray copies it twice); the
    view is released at once, so the buffer can still be resized."""
    with memoryview(buffer) as view:
        return bytes(view[start:end])


def _http_scope(buffer: bytearray, at: int) -> tuple[dict[str, Any], int]:
    """Decode an HTTP frame's request line and headers into an ASGI scope; returns it and
    where the body starts."""
    fields: list[bytes] = []
    for _ in range(4):  # method, path, raw path, query
        (size,) = _U16.unpack_from(buffer, at)
        at += 2
        fields.append(bytes(buffer[at : at + size]))
        at += size
    (count,) = _U16.unpack_from(buffer, at)
    at += 2
    headers: list[tuple[bytes, bytes]] = []
    for _ in range(count):
        (size,) = _U16.unpack_from(buffer, at)
        name = bytes(buffer[at + 2 : at + 2 + size])
        at += 2 + size
        (size,) = _U32.unpack_from(buffer, at)
        headers.append((name, bytes(buffer[at + 4 : at + 4 + size])))
        at += 4 + size
    at += 8  # arrival time (unix ns); the deadline clock starts when the app reads it
    method, path, raw_path, query = fields
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http",
        "method": method.decode("latin-1"),
        "path": path.decode("utf-8", "surrogateescape"),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": None,
        "server": None,
        "extensions": _EXTENSIONS,
    }
    return scope, at


_EXTENSIONS: dict[str, dict[str, Any]] = {CANCELS_ON_DISCONNECT: {}}


def _encode_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [_U16.pack(len(headers))]
    for name, value in headers:
        parts += (_U16.pack(len(name)), name, _U32.pack(len(value)), value)
    return b"".join(parts)


def _encode_limits(limits: dict[str, int]) -> bytes:
    parts = [_U16.pack(len(limits))]
    for name, limit in limits.items():
        encoded = name.encode()
        parts += (_U16.pack(len(encoded)), encoded, _U32.pack(limit))
    return b"".join(parts)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _descriptor_set() -> bytes:
    files = descriptor_pb2.FileDescriptorSet()
    for module in (grpc_service_pb2, ai_service_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    return files.SerializeToString()


class GatewayFrontend:
    """gRPC, and REST when given the app, served by the Go gateway process and answered
    by this process's servicers and REST app."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        binary: Path,
        max_message_bytes: int,
        default_model: str,
        max_concurrent_rpcs: int | None = None,
        rest_app: ASGIApp | None = None,
        max_http_inflight: int = 0,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._binary = binary
        self._max_message_bytes = max_message_bytes
        self._max_concurrent_rpcs = max_concurrent_rpcs or 0
        self._rest_app = rest_app
        self._max_http_inflight = max_http_inflight
        self._methods = method_table(
            InferenceServicer(dataplane), AIServicer(dataplane, default_model)
        )
        self._on_failure = on_failure
        self._process: asyncio.subprocess.Process | None = None
        self._protocol: _BackendProtocol | None = None
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self.http_port: int | None = None
        self.service_names = [
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            ai_service_pb2.DESCRIPTOR.services_by_name["AIService"].full_name,
        ]

    @property
    def serves_rest(self) -> bool:
        return self._rest_app is not None

    async def start(self, host: str, port: int, http_port: int | None = None) -> int:
        """Start the gateway: gRPC on host:port, and REST on host:http_port when it serves
        REST (0 = any free). Returns the bound gRPC port; `http_port` tells the REST one."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [
            str(self._binary),
            "--listen",
            _address(host, port),
            "--backend-fd",
            str(theirs.fileno()),
            "--max-recv-bytes",
            str(self._max_message_bytes),
            "--max-concurrent-rpcs",
            str(self._max_concurrent_rpcs),
        ]
        if self._rest_app is not None:
            command += [
                "--http-listen",
                _address(host, http_port or 0),
                "--max-http-inflight",
                str(self._max_http_inflight),
            ]
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
            )
        finally:
            theirs.close()
        self._process = process
        loop = asyncio.get_running_loop()
        _, protocol = await loop.connect_accepted_socket(
            lambda: _BackendProtocol(self._methods, self._rest_app, self._backend_lost), ours
        )
        self._protocol = protocol
        protocol.send_control(_DESCRIPTORS, _descriptor_set())
        bound = await self._read_bound_port(process, "listening", f"gRPC to {host}:{port}")
        if self._rest_app is not None:
            self.http_port = await self._read_bound_port(
                process, "listening-http", f"REST to {host}:{http_port}"
            )
        self._watcher = asyncio.create_task(self._watch(process))
        return bound

    async def _read_bound_port(
        self, process: asyncio.subprocess.Process, word: str, what: str
    ) -> int:
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), _STARTUP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            raise GatewayError(
                f"the gateway did not start within {_STARTUP_TIMEOUT_S:g} s"
            ) from None
        words = line.decode(errors="replace").split()
        if len(words) != 2 or words[0] != word:
            code = await process.wait()
            # The gateway says why on its stderr, which is the server's.
            raise OSError(f"cannot bind {what} (gateway exited with {code})")
        return int(words[1].rsplit(":", 1)[1])

    def set_admission_limits(self, limits: dict[str, int]) -> None:
        """Per model, how many infer requests (REST and gRPC together) may be outstanding
        at once; beyond that the gateway answers 429 / RESOURCE_EXHAUSTED itself, without
        this process reading the request."""
        if self._protocol is not None:
            self._protocol.send_control(_LIMITS, _encode_limits(limits))

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if not self._stopping:
            message = f"the gateway exited unexpectedly with code {code}"
            logger.error(message)
            if self._on_failure is not None:
                self._on_failure(message)

    def _backend_lost(self) -> None:
        if not self._stopping:
            logger.error("lost the connection to the gateway")

    async def set_serving(self, serving: bool) -> None:
        if self._protocol is None:
            return
        status = bytes((_SERVING if serving else _NOT_SERVING,))
        for name in ("", *self.service_names):
            self._protocol.send_control(_HEALTH, status + name.encode())

    async def stop(self, grace_s: float) -> None:
        """Drain: the gateway stops taking calls, in-flight ones are answered, it exits."""
        self._stopping = True
        process = self._process
        if process is None or self._protocol is None:
            return
        self._protocol.send_control(_SHUTDOWN, struct.pack("<I", int(grace_s * 1000)))
        try:
            await asyncio.wait_for(process.wait(), grace_s + 5.0)
        except TimeoutError:
            logger.warning("the gateway did not exit after its grace period; killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._watcher is not None:
            await self._watcher
