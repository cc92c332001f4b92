"""gRPC served through the Go gateway: HTTP/2 in Go, everything else here.

grpcio spends about half a millisecond of CPU per unary call in Python, which caps a
2-core machine well below what the dataplane can do. The gateway (a small Go program,
source in ``gateway/``) terminates gRPC, serves health and reflection itself, and forwards
each call's raw request bytes over a Unix socketpair. This module answers them with the
same servicers the grpc.aio front end uses, so both front ends behave identically.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

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
from inferbridge.protocol.generated import ai_service_pb2, grpc_service_pb2

__all__ = ["GatewayError", "GatewayFrontend"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<IBQ")  # length, kind, id
_ID_AND_KIND = 9  # bytes of the header counted by `length`
_CALL, _CANCEL, _REPLY, _HEALTH, _SHUTDOWN, _DESCRIPTORS = range(1, 7)
_SERVING, _NOT_SERVING = 1, 2
_METHOD_LEN = struct.Struct("<H")
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
    """Answers the gateway's CALL frames; one instance per gateway connection."""

    def __init__(self, methods: MethodTable, on_lost: Callable[[], None]) -> None:
        self._methods = methods
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._calls: dict[int, asyncio.Task[None]] = {}
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
            if kind == _CALL:
                self._start_call(call_id, buffer, body, offset)
            elif kind == _CANCEL:
                task = self._calls.get(call_id)
                if task is not None:
                    task.cancel()
            else:
                logger.warning("gRPC gateway sent an unknown frame kind %d", kind)
        if offset:
            del buffer[:offset]

    # --- calls --------------------------------------------------------------------------
    def _start_call(self, call_id: int, buffer: bytearray, start: int, end: int) -> None:
        (method_len,) = _METHOD_LEN.unpack_from(buffer, start)
        start += _METHOD_LEN.size
        method = bytes(buffer[start : start + method_len]).decode("utf-8", "replace")
        start += method_len
        (timeout_us,) = _TIMEOUT.unpack_from(buffer, start)
        payload = bytes(buffer[start + _TIMEOUT.size : end])
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

    def _reply_error(self, call_id: int, code: grpc.StatusCode, message: str) -> None:
        self._send(_REPLY, call_id, bytes((_status_number(code),)), message.encode())

    def _send(self, kind: int, call_id: int, *parts: bytes) -> None:
        if self._transport is None:
            return
        length = _ID_AND_KIND + sum(len(p) for p in parts)
        self._transport.writelines((_HEADER.pack(length, kind, call_id), *parts))

    def send_control(self, kind: int, body: bytes) -> None:
        self._send(kind, 0, body)


def _descriptor_set() -> bytes:
    files = descriptor_pb2.FileDescriptorSet()
    for module in (grpc_service_pb2, ai_service_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    return files.SerializeToString()


class GatewayFrontend:
    """gRPC served by the Go gateway process, answered by this process's servicers."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        binary: Path,
        max_message_bytes: int,
        default_model: str,
        max_concurrent_rpcs: int | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._binary = binary
        self._max_message_bytes = max_message_bytes
        self._max_concurrent_rpcs = max_concurrent_rpcs or 0
        self._methods = method_table(
            InferenceServicer(dataplane), AIServicer(dataplane, default_model)
        )
        self._on_failure = on_failure
        self._process: asyncio.subprocess.Process | None = None
        self._protocol: _BackendProtocol | None = None
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self.service_names = [
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            ai_service_pb2.DESCRIPTOR.services_by_name["AIService"].full_name,
        ]

    async def start(self, host: str, port: int) -> int:
        """Start the gateway listening on host:port (0 = any free); returns the bound port."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                str(self._binary),
                "--listen",
                f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "--backend-fd",
                str(theirs.fileno()),
                "--max-recv-bytes",
                str(self._max_message_bytes),
                "--max-concurrent-rpcs",
                str(self._max_concurrent_rpcs),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
            )
        finally:
            theirs.close()
        self._process = process
        loop = asyncio.get_running_loop()
        _, protocol = await loop.connect_accepted_socket(
            lambda: _BackendProtocol(self._methods, self._backend_lost), ours
        )
        self._protocol = protocol
        protocol.send_control(_DESCRIPTORS, _descriptor_set())
        bound = await self._read_bound_port(process, host, port)
        self._watcher = asyncio.create_task(self._watch(process))
        return bound

    async def _read_bound_port(
        self, process: asyncio.subprocess.Process, host: str, port: int
    ) -> int:
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), _STARTUP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            raise GatewayError(
                f"the gRPC gateway did not start within {_STARTUP_TIMEOUT_S:g} s"
            ) from None
        words = line.decode(errors="replace").split()
        if len(words) != 2 or words[0] != "listening":
            code = await process.wait()
            # The gateway says why on its stderr, which is the server's.
            raise OSError(f"cannot bind gRPC to {host}:{port} (gateway exited with {code})")
        return int(words[1].rsplit(":", 1)[1])

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if not self._stopping:
            message = f"the gRPC gateway exited unexpectedly with code {code}"
            logger.error(message)
            if self._on_failure is not None:
                self._on_failure(message)

    def _backend_lost(self) -> None:
        if not self._stopping:
            logger.error("lost the connection to the gRPC gateway")

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
            logger.warning("the gRPC gateway did not exit after its grace period; killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._watcher is not None:
            await self._watcher
