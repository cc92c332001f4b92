"""The gateway backend's side of the frames this work added: CALL metadata (handed to the
servicers as invocation_metadata) and METRICS-PULL / METRICS, with a fake transport.

Run by test_gateway_frames.py in a pytest process of its own: the backend imports
inferbridge's gRPC stubs, which register the same protobuf file names as tritonclient's,
and one process cannot hold both."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from inferbridge.frontends.gateway import process
from inferbridge.frontends.gateway.backend import BackendProtocol
from inferbridge.frontends.gateway.process import GatewayFrontend


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class _Request:
    model_name = "m"
    model_version = ""

    @classmethod
    def FromString(cls, data: bytes) -> _Request:
        return cls()


class _Response:
    def SerializeToString(self) -> bytes:
        return b"ok"


def _frame(kind: int, call_id: int, body: bytes) -> bytes:
    return struct.pack("<IBQ", 9 + len(body), kind, call_id) + body


def _call_body(method: str, meta: list[tuple[str, str]], payload: bytes) -> bytes:
    parts = [struct.pack("<H", len(method)), method.encode(), struct.pack("<q", -1)]
    parts.append(struct.pack("<H", len(meta)))
    for name, value in meta:
        parts += [struct.pack("<H", len(name)), name.encode()]
        parts += [struct.pack("<I", len(value)), value.encode()]
    return b"".join([*parts, payload])


def _frames(written: list[bytes]) -> list[tuple[int, int, bytes]]:
    data, out, at = b"".join(written), [], 0
    while at < len(data):
        length, kind, call_id = struct.unpack_from("<IBQ", data, at)
        out.append((kind, call_id, data[at + 13 : at + 4 + length]))
        at += 4 + length
    return out


def test_call_metadata_reaches_the_servicer() -> None:
    seen: list[Any] = []

    async def handler(request: Any, context: Any) -> _Response:
        seen.append(context.invocation_metadata())
        return _Response()

    async def scenario() -> list[tuple[int, int, bytes]]:
        methods: Any = {"/p.S/M": (handler, _Request)}
        protocol = BackendProtocol(methods, None, lambda: None)
        transport = _Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        meta = [("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"), ("baggage", "k=v")]
        protocol.data_received(_frame(1, 7, _call_body("/p.S/M", meta, b"x")))
        protocol.data_received(_frame(1, 8, _call_body("/p.S/M", [], b"")))
        for _ in range(5):
            await asyncio.sleep(0)
        return _frames(transport.written)

    frames = asyncio.run(scenario())
    assert seen[0] == (
        ("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
        ("baggage", "k=v"),
    )
    assert seen[1] == ()
    assert sorted(f[1] for f in frames) == [7, 8]
    assert all(f[0] == 3 and f[2] == b"\x00ok" for f in frames)  # REPLY, code OK


def test_a_metrics_pull_is_answered_by_its_id() -> None:
    async def scenario() -> tuple[bytes, list[tuple[int, int, bytes]]]:
        protocol = BackendProtocol({}, None, lambda: None)
        transport = _Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        pull = asyncio.create_task(protocol.pull_metrics(5.0))
        await asyncio.sleep(0.01)
        frames = _frames(transport.written)
        (kind, pull_id, body) = frames[0]
        assert (kind, body) == (10, b"") and pull_id != 0
        protocol.data_received(_frame(11, pull_id, b"go_goroutines 3\n"))
        return await pull, frames

    text, _ = asyncio.run(scenario())
    assert text == b"go_goroutines 3\n"


def test_a_pull_that_times_out_gives_nothing_and_logs_once(monkeypatch: Any) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(process, "_METRICS_TIMEOUT_S", 0.01)
    monkeypatch.setattr(process.logger, "warning", lambda *a: warnings.append(str(a[0])))

    async def scenario() -> list[bytes]:
        frontend = GatewayFrontend.__new__(GatewayFrontend)
        protocol = BackendProtocol({}, None, lambda: None)
        protocol.connection_made(_Transport())  # type: ignore[arg-type]
        frontend._protocol = protocol
        frontend._stopping = False
        frontend._pull_failed = False
        return [await frontend.pull_metrics(), await frontend.pull_metrics()]

    assert asyncio.run(scenario()) == [b"", b""]
    assert len(warnings) == 1 and "metrics pull" in warnings[0]
