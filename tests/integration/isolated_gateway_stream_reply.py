"""The gateway backend's streamed REST replies (REPLY-HTTP-START, -CHUNK, -END) with a
fake transport: the window of 32 unacknowledged parts, STREAM-ACK, an app failing
mid-body, CANCEL while waiting for credit, and a one-body reply left whole.

Run by test_gateway_stream_reply.py in a pytest process of its own (the backend imports
inferbridge's gRPC stubs; see tests/isolated.py)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from inferbridge.frontends.gateway.backend import BackendProtocol

HTTP, CANCEL, REPLY_HTTP, STREAM_ACK, START, CHUNK, END = 7, 2, 8, 16, 17, 18, 19


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def _frame(kind: int, call_id: int, body: bytes) -> bytes:
    return struct.pack("<IBQ", 9 + len(body), kind, call_id) + body


def _http_frame(call_id: int, path: str) -> bytes:
    parts = [struct.pack("<H", len(s)) + s.encode() for s in ("POST", path, path, "")]
    return _frame(HTTP, call_id, b"".join([*parts, struct.pack("<H", 0), struct.pack("<q", 0)]))


def _frames(written: list[bytes]) -> list[tuple[int, int, bytes]]:
    data, out, at = b"".join(written), [], 0
    while at < len(data):
        length, kind, call_id = struct.unpack_from("<IBQ", data, at)
        out.append((kind, call_id, data[at + 13 : at + 4 + length]))
        at += 4 + length
    return out


App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _parts_app(count: int, fail: bool = False) -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]})
        for n in range(count):
            await send({"type": "http.response.body", "body": b"%d;" % n, "more_body": True})
        if fail:
            raise RuntimeError("the model broke")
        await send({"type": "http.response.body", "body": b"end"})

    return app


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _start(app: App) -> tuple[BackendProtocol, _Transport]:
    protocol = BackendProtocol({}, app, lambda: None)
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(_http_frame(5, "/v2/models/m/generate_stream"))
    await _settle()
    return protocol, transport


def test_parts_wait_for_the_window() -> None:
    async def scenario() -> tuple[list[Any], list[Any]]:
        protocol, transport = await _start(_parts_app(40))
        before = _frames(transport.written)
        protocol.data_received(_frame(STREAM_ACK, 5, struct.pack("<I", 8)))
        await _settle()
        return before, _frames(transport.written)

    before, after = asyncio.run(scenario())
    assert [kind for kind, _, _ in before] == [START] + [CHUNK] * 31
    status, count = struct.unpack_from("<HH", before[0][2])
    assert (status, count) == (200, 1) and before[0][2].endswith(b"0;")
    assert [kind for kind, _, _ in after[32:]] == [CHUNK] * 8 + [END]
    assert after[-1][2] == b"\x00end"
    assert b"".join(body for kind, _, body in after[1:-1]) == b"".join(
        b"%d;" % n for n in range(1, 40)
    )


def test_an_app_failing_mid_body_breaks_the_reply() -> None:
    async def scenario() -> list[Any]:
        _, transport = await _start(_parts_app(2, fail=True))
        return _frames(transport.written)

    frames = asyncio.run(scenario())
    assert [(kind, body) for kind, _, body in frames[1:]] == [(CHUNK, b"1;"), (END, b"\x01")]


def test_cancel_while_waiting_for_credit_stops_the_app() -> None:
    async def scenario() -> tuple[int, list[Any]]:
        protocol, transport = await _start(_parts_app(40))
        waiting = len(_frames(transport.written))
        protocol.data_received(_frame(CANCEL, 5, b""))
        await _settle()
        protocol.data_received(_frame(STREAM_ACK, 5, struct.pack("<I", 32)))
        await _settle()
        return waiting, _frames(transport.written)

    waiting, frames = asyncio.run(scenario())
    assert waiting == 32 and len(frames) == 32  # nothing after the CANCEL


def test_a_one_body_reply_leaves_whole() -> None:
    async def scenario() -> list[Any]:
        _, transport = await _start(_parts_app(0))
        return _frames(transport.written)

    frames = asyncio.run(scenario())
    assert [kind for kind, _, _ in frames] == [REPLY_HTTP]
    assert frames[0][2].endswith(b"end")
