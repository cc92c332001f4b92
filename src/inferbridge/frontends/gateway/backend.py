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
  deadline), ``u16 meta_count``, that many metadata entries (``u16`` name length,
  lower-case name, ``u32`` value length, value: the call's traceparent, tracestate and
  baggage, then its ``x-`` entries but ``-bin`` ones, which a rollout's
  ``header:<name>`` can route by), request bytes.
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
- REPLY-HTTP-START (17), REPLY-HTTP-CHUNK (18), REPLY-HTTP-END (19) (here -> gateway): a
  reply whose ASGI body comes in parts (``more_body``, as generate_stream's events): START
  is REPLY-HTTP's layout with the first part as body, each CHUNK one more part, END
  ``u8 flag`` (0 the body is whole, 1 the app failed: the gateway cuts the connection)
  and the last part. The gateway sends no Content-Length (chunked), flushes each part and
  answers each START and CHUNK written with STREAM-ACK (``u32 n``); we never have 32 of
  them unacknowledged. CANCEL: the client left, stop.
- LIMITS (here -> gateway, id 0): ``u16`` count, then per model ``u16`` name length, name,
  ``u32`` limit: infer requests (REST and gRPC ModelInfer) outstanding at most; beyond it
  the gateway answers 429 / RESOURCE_EXHAUSTED itself.
- METRICS-PULL (here -> gateway, a nonzero id of ours): empty; answered by METRICS (gateway
  -> here, the same id): the gateway's metrics in the Prometheus text format, which
  `/metrics` appends to this process's.
- STREAM-OPEN (gateway -> here, 12): a call of a streaming method (ModelStreamInfer): as
  CALL without the request bytes. Then STREAM-MSG (13, both ways): one request or response
  message each; STREAM-CLOSE (14, gateway -> here, empty): the client half-closed;
  STREAM-END (15, here -> gateway): ``u8 code``, the UTF-8 error message: the call's
  status, our last frame of it; STREAM-ACK (16, both ways): ``u32 n``: n more STREAM-MSGs
  of the stream taken in (here: read by its handler; gateway: written to the client).
  Neither side has more than 32 STREAM-MSGs of one stream unacknowledged. CANCEL ends a
  stream too. Stream handling lives in `streams.py`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from inferbridge.frontends.gateway.streams import (
    STREAM_ACK,
    STREAM_CLOSE,
    STREAM_MSG,
    STREAM_OPEN,
    STREAM_WINDOW,
    GatewayStream,
)
from inferbridge.frontends.grpc.servicers import (
    MethodTable,
)
from inferbridge.frontends.grpc.streaming import StreamTable
from inferbridge.frontends.rest.app import CANCELS_ON_DISCONNECT
from inferbridge.observability.logs import PRINCIPAL_HEADER, AccessLog

#: An ASGI application (the REST app), called with scope, receive and send.
ASGIApp = Callable[..., Awaitable[None]]

__all__ = ["ASGIApp", "BackendProtocol", "GatewayError"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<IBQ")  # length, kind, id
_ID_AND_KIND = 9  # bytes of the header counted by `length`
_CALL, _CANCEL, _REPLY, _HEALTH, _SHUTDOWN, _DESCRIPTORS, _HTTP, _HTTP_REPLY, _LIMITS = range(1, 10)
_METRICS_PULL, _METRICS = 10, 11
_HTTP_START, _HTTP_CHUNK, _HTTP_END = 17, 18, 19  # a REST reply streamed in parts
_ACCESS = 20  # a request the gateway refused itself, for the access log
_ACCESS_FIGURES = struct.Struct("<qQQ")  # duration_ns, request_bytes, response_bytes
_WHOLE, _BROKEN = b"\x00", b"\x01"  # REPLY-HTTP-END's flag
_SERVING, _NOT_SERVING = 1, 2
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TIMEOUT = struct.Struct("<q")
_NO_METADATA: tuple[tuple[str, str], ...] = ()


class GatewayError(RuntimeError):
    """The gateway could not start or stopped unexpectedly."""


class _Aborted(grpc.aio.AbortError):
    """Raised by _CallContext.abort; carries the status back to the protocol."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _CallContext:
    """The part of grpc.aio.ServicerContext the servicers (and tracing) use."""

    __slots__ = ("_deadline", "_metadata")

    def __init__(
        self, deadline: float | None, metadata: tuple[tuple[str, str], ...] = _NO_METADATA
    ) -> None:
        self._deadline = deadline
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """The call's forwarded metadata (traceparent, tracestate, baggage, x-*), as
        (key, value) pairs like grpc.aio's."""
        return self._metadata

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)


def _status_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number


class BackendProtocol(asyncio.Protocol):
    """Answers the gateway's CALL (gRPC) and HTTP frames; one per gateway connection."""

    def __init__(
        self,
        methods: MethodTable,
        rest_app: ASGIApp | None,
        on_lost: Callable[[], None],
        access_log: AccessLog | None = None,
        streams: StreamTable | None = None,
    ) -> None:
        self._methods = methods
        self._stream_methods: StreamTable = streams or {}
        self._streams: dict[int, GatewayStream] = {}
        self._rest_app = rest_app
        self._on_lost = on_lost
        self._access = access_log
        self._pulls: dict[int, asyncio.Future[bytes]] = {}
        self._next_pull = 0
        self._buffer = bytearray()
        self._calls: dict[int, asyncio.Task[Any]] = {}
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
        for pull in self._pulls.values():
            if not pull.done():
                pull.set_result(b"")
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
            elif kind == STREAM_MSG:
                stream = self._streams.get(call_id)
                if stream is not None:
                    stream.message(_copy(buffer, body, offset))
            elif kind == STREAM_ACK:
                stream = self._streams.get(call_id)
                if stream is not None:
                    stream.ack(_U32.unpack_from(buffer, body)[0])
                elif (exchange := self._exchanges.get(call_id)) is not None:
                    exchange.ack(_U32.unpack_from(buffer, body)[0])  # a streamed reply
            elif kind == STREAM_CLOSE:
                stream = self._streams.get(call_id)
                if stream is not None:
                    stream.half_close()
            elif kind == STREAM_OPEN:
                self._start_stream(call_id, buffer, body)
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
            elif kind == _ACCESS:
                if self._access is not None:
                    self._log_refusal(self._access, bytes(buffer[body:offset]))
            elif kind == _METRICS:
                pull = self._pulls.pop(call_id, None)
                if pull is not None and not pull.done():
                    pull.set_result(_copy(buffer, body, offset))
            else:
                logger.warning("the gateway sent an unknown frame kind %d", kind)
        if offset:
            del buffer[:offset]

    def _log_refusal(self, access: AccessLog, record: bytes) -> None:
        """An ACCESS frame: a request the gateway refused itself (authentication,
        authorization, a rate limit) and the app never saw; logged like any other."""
        try:
            fields: list[str] = []
            offset = 0
            for _ in range(5):
                (size,) = _U16.unpack_from(record, offset)
                offset += _U16.size
                fields.append(record[offset : offset + size].decode("utf-8", "replace"))
                offset += size
            duration_ns, request_bytes, response_bytes = _ACCESS_FIGURES.unpack_from(
                record, offset
            )
            offset += _ACCESS_FIGURES.size
            for _ in range(2):
                (size,) = _U16.unpack_from(record, offset)
                offset += _U16.size
                fields.append(record[offset : offset + size].decode("utf-8", "replace"))
                offset += size
        except struct.error:
            logger.warning("the gateway sent a truncated ACCESS frame (%d bytes)", len(record))
            return
        protocol, method, route, model, status, traceparent, principal = fields
        from inferbridge.observability.frontend import path_model

        version = path_model(route)[1] if protocol == "http" else ""
        access.request(
            protocol=protocol,
            method=method,
            route=route,
            model=model,
            version=version,
            status=status,
            duration_s=duration_ns / 1e9,
            request_bytes=request_bytes,
            response_bytes=response_bytes,
            trace=traceparent or None,
            principal=principal,
        )

    # --- calls --------------------------------------------------------------------------
    def _start_call(self, call_id: int, buffer: bytearray, start: int, end: int) -> None:
        (method_len,) = _U16.unpack_from(buffer, start)
        start += _U16.size
        method = bytes(buffer[start : start + method_len]).decode("utf-8", "replace")
        start += method_len
        (timeout_us,) = _TIMEOUT.unpack_from(buffer, start)
        metadata, start = _metadata(buffer, start + _TIMEOUT.size)
        payload = _copy(buffer, start, end)
        deadline = None if timeout_us < 0 else time.monotonic() + timeout_us / 1e6
        context = _CallContext(deadline, metadata)
        answer: Coroutine[Any, Any, object]
        if self._access is None:
            answer = self._answer(call_id, method, payload, context)
        else:
            answer = self._answer_logged(self._access, call_id, method, payload, context)
        self._calls[call_id] = self._loop.create_task(answer)

    def _start_stream(self, call_id: int, buffer: bytearray, start: int) -> None:
        (method_len,) = _U16.unpack_from(buffer, start)
        start += _U16.size
        method = bytes(buffer[start : start + method_len]).decode("utf-8", "replace")
        start += method_len
        (timeout_us,) = _TIMEOUT.unpack_from(buffer, start)
        metadata, _ = _metadata(buffer, start + _TIMEOUT.size)
        deadline = None if timeout_us < 0 else time.monotonic() + timeout_us / 1e6
        stream = GatewayStream(call_id, self._send)
        self._streams[call_id] = stream
        self._calls[call_id] = self._loop.create_task(
            self._serve_stream(call_id, method, stream, deadline, metadata)
        )

    async def _serve_stream(
        self,
        call_id: int,
        method: str,
        stream: GatewayStream,
        deadline: float | None,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        started = time.perf_counter()
        try:
            await stream.serve(self._stream_methods.get(method), deadline)
        finally:
            self._streams.pop(call_id, None)
            self._calls.pop(call_id, None)
            if self._access is not None:
                self._access.grpc(
                    method,
                    None,
                    metadata,
                    code=stream.code,
                    duration_s=time.perf_counter() - started,
                    request_bytes=0,
                    response_bytes=0,
                    principal=_metadata_principal(metadata),
                )

    async def _answer_logged(
        self,
        access: AccessLog,
        call_id: int,
        method: str,
        payload: bytes,
        context: _CallContext,
    ) -> None:
        start = time.perf_counter()
        code, size, request = "CANCELLED", 0, None
        try:
            code, size, request = await self._answer(call_id, method, payload, context)
        finally:
            access.grpc(
                method,
                request,
                context.invocation_metadata(),
                code=code,
                duration_s=time.perf_counter() - start,
                request_bytes=len(payload),
                response_bytes=size,
                principal=_metadata_principal(context.invocation_metadata()),
            )

    async def _answer(
        self, call_id: int, method: str, payload: bytes, context: _CallContext
    ) -> tuple[str, int, Message | None]:
        """Answer one call; returns its status code name, response size and request (for
        the access log)."""
        request: Message | None = None
        try:
            entry = self._methods.get(method)
            if entry is None:
                message = f"unknown method {method}"
                return self._reply_error(call_id, grpc.StatusCode.UNIMPLEMENTED, message)
            handler, request_type = entry
            try:
                request = request_type.FromString(payload)
            except DecodeError as exc:
                return self._reply_error(
                    call_id,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request is not a valid {request_type.DESCRIPTOR.full_name}: {exc}",
                )
            try:
                response: Message = await handler(request, context)
            except _Aborted as aborted:
                code, size, _ = self._reply_error(call_id, aborted.code, aborted.details)
                return code, size, request
            data = response.SerializeToString()
            self._send(_REPLY, call_id, b"\x00", data)
            return "OK", len(data), request
        except asyncio.CancelledError:
            # The gateway has already answered the caller (cancelled or deadline).
            return "CANCELLED", 0, request
        except Exception:  # the servicers map their own errors; this is a bug
            logger.exception("unhandled error answering %s", method)
            return self._reply_error(
                call_id, grpc.StatusCode.INTERNAL, "internal server error; see the server log"
            )
        finally:
            self._calls.pop(call_id, None)

    # --- REST -----------------------------------------------------------------------------
    def _start_http(self, call_id: int, buffer: bytearray, start: int, end: int) -> None:
        scope, start = _http_scope(buffer, start)
        exchange = _HttpExchange(_copy(buffer, start, end), call_id, self._send)
        self._exchanges[call_id] = exchange
        if self._access is None:
            serve = self._serve_http(call_id, scope, exchange)
        else:
            serve = self._serve_http_logged(self._access, call_id, scope, exchange, end - start)
        self._calls[call_id] = self._loop.create_task(serve)

    async def _serve_http_logged(
        self,
        access: AccessLog,
        call_id: int,
        scope: dict[str, Any],
        exchange: _HttpExchange,
        request_bytes: int,
    ) -> None:
        started = time.perf_counter()
        try:
            await self._serve_http(call_id, scope, exchange)
        finally:
            access.http(
                scope,
                status=499 if exchange.disconnected else (exchange.status or 500),
                duration_s=time.perf_counter() - started,
                request_bytes=request_bytes,
                response_bytes=exchange.sent + sum(len(b) for b in exchange.body),
                principal=_header_principal(scope["headers"]),
            )

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
        if exchange.streamed:
            if not exchange.ended:  # the app failed mid-body: the gateway cuts the reply
                self._send(_HTTP_END, call_id, _BROKEN)
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

    def _reply_error(
        self, call_id: int, code: grpc.StatusCode, message: str
    ) -> tuple[str, int, None]:
        encoded = message.encode()
        self._send(_REPLY, call_id, bytes((_status_number(code),)), encoded)
        return code.name, len(encoded), None

    async def pull_metrics(self, timeout_s: float) -> bytes:
        """The gateway's metrics text (METRICS-PULL, answered by METRICS); b"" when the
        connection is gone."""
        if self._transport is None:
            return b""
        self._next_pull += 1
        pull_id = self._next_pull
        pull = self._loop.create_future()
        self._pulls[pull_id] = pull
        try:
            self._send(_METRICS_PULL, pull_id)
            return await asyncio.wait_for(pull, timeout_s)
        finally:
            self._pulls.pop(pull_id, None)

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

    def send_descriptors(self, file_descriptor_set: bytes) -> None:
        """The services the gateway forwards, for its reflection (the first frame)."""
        self.send_control(_DESCRIPTORS, file_descriptor_set)

    def send_health(self, serving: bool, service: str) -> None:
        status = _SERVING if serving else _NOT_SERVING
        self.send_control(_HEALTH, bytes((status,)) + service.encode())

    def send_limits(self, limits: dict[str, int]) -> None:
        """Replace the gateway's whole table of per-model admission limits."""
        self.send_control(_LIMITS, _encode_limits(limits))

    def send_shutdown(self, grace_s: float) -> None:
        self.send_control(_SHUTDOWN, _U32.pack(int(grace_s * 1000)))


class _HttpExchange:
    """ASGI receive/send for one forwarded HTTP request: the body is already whole. The
    reply leaves whole (REPLY-HTTP) unless the app sends its body in parts (more_body):
    then REPLY-HTTP-START with the first part, REPLY-HTTP-CHUNK per part, REPLY-HTTP-END,
    never more than the window of START and CHUNKs unacknowledged (STREAM-ACK)."""

    __slots__ = (
        "_body",
        "_credit",
        "_gone",
        "_has_credit",
        "_id",
        "_send_frame",
        "body",
        "disconnected",
        "ended",
        "headers",
        "sent",
        "status",
        "streamed",
    )

    def __init__(self, body: bytes, call_id: int, send_frame: Callable[..., None]) -> None:
        self._body: bytes | None = body
        self._gone: asyncio.Future[None] | None = None
        self._id = call_id
        self._send_frame = send_frame
        self._credit = STREAM_WINDOW
        self._has_credit: asyncio.Event | None = None
        self.disconnected = False
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.streamed = False  # REPLY-HTTP-START sent: the body leaves in parts
        self.ended = False  # REPLY-HTTP-END sent
        self.sent = 0  # body bytes sent in parts

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
            part = bytes(message.get("body", b""))
            if message.get("more_body", False):
                await self._send_part(part)
            elif self.streamed:
                if not self.ended:
                    self.ended = True
                    self.sent += len(part)
                    self._send_frame(_HTTP_END, self._id, _WHOLE, part)
            else:
                self.body.append(part)

    async def _send_part(self, part: bytes) -> None:
        """Send a part of a streamed body once the window has room; the gateway writes
        and flushes each as it arrives."""
        while self._credit <= 0:
            if self._has_credit is None:
                self._has_credit = asyncio.Event()
            self._has_credit.clear()
            await self._has_credit.wait()  # CANCEL cancels the task waiting here
        self._credit -= 1
        if self.streamed:
            self._send_frame(_HTTP_CHUNK, self._id, part)
        else:
            self.streamed = True
            status = _U16.pack(self.status or 500)
            self._send_frame(_HTTP_START, self._id, status, _encode_headers(self.headers), part)
        self.sent += len(part)

    def ack(self, count: int) -> None:
        """STREAM-ACK: the gateway has written `count` more parts."""
        self._credit += count
        if self._has_credit is not None:
            self._has_credit.set()

    def internal_error(self) -> None:
        """The app sent no (complete) response: answer 500, as uvicorn would."""
        self.status = 500
        self.headers = [(b"content-type", b"application/json")]
        self.body = [b'{"error": "internal server error; see the server log"}']

    def disconnect(self) -> None:
        self.disconnected = True
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)


def _metadata_principal(metadata: tuple[tuple[str, str], ...]) -> str:
    """Who the gateway says made the call (it removes any a client sends), else ""."""
    return next((v for k, v in metadata if k == PRINCIPAL_HEADER), "")


_PRINCIPAL_HEADER = PRINCIPAL_HEADER.encode()


def _header_principal(headers: list[tuple[bytes, bytes]]) -> str:
    value = next((v for k, v in headers if k == _PRINCIPAL_HEADER), b"")
    return value.decode("utf-8", "replace")


def _copy(buffer: bytearray, start: int, end: int) -> bytes:
    """buffer[start:end] as bytes in one copy (slicing a bytearray copies it twice); the
    view is released at once, so the buffer can still be resized."""
    with memoryview(buffer) as view:
        return bytes(view[start:end])


def _metadata(buffer: bytearray, at: int) -> tuple[tuple[tuple[str, str], ...], int]:
    """A CALL frame's metadata entries; returns them and where the request starts."""
    (count,) = _U16.unpack_from(buffer, at)
    at += 2
    if count == 0:
        return _NO_METADATA, at
    entries: list[tuple[str, str]] = []
    for _ in range(count):
        (size,) = _U16.unpack_from(buffer, at)
        name = bytes(buffer[at + 2 : at + 2 + size]).decode("latin-1")
        at += 2 + size
        (size,) = _U32.unpack_from(buffer, at)
        entries.append((name, bytes(buffer[at + 4 : at + 4 + size]).decode("latin-1")))
        at += 4 + size
    return tuple(entries), at


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
