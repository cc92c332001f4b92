"""A fault-injecting proxy in front of one upstream (an OIP server), for the gateway's
tests and benchmarks: delay, error rate, connection reset and blackhole, changed at run
time, with a record of what reached it.

Usage::

    python -m benchmarks.faults --upstream 127.0.0.1:8000 [--listen 127.0.0.1:0]
        [--mode http|tcp] [--delay 100ms] [--error-rate 0.5] [--error-status 503]
        [--retry-after 1] [--reset-rate 0.1] [--blackhole-rate 0.01] [--record FILE]

It prints ``faults listening HOST:PORT`` on stdout once it accepts connections, and runs
until SIGTERM or SIGINT.

``--mode http`` (default): HTTP/1.1 with keep-alive. Each request, in this order: waits
``delay``; then with probability ``blackhole-rate`` it is held and never answered
(until the client goes away); with ``reset-rate`` the connection is reset (RST) without
an answer; with ``error-rate`` it is answered ``error-status`` (with ``Retry-After:
retry-after`` when given) without reaching the upstream; otherwise it is forwarded and
the upstream's response is passed back unchanged.

``--mode tcp``: bytes are relayed untouched (use it for gRPC / HTTP/2). A new
connection is held (blackhole-rate) or reset at once (reset-rate); every chunk from the
upstream waits ``delay`` before it is relayed. ``error-rate`` does not apply.

Control (http mode): the proxy answers these paths itself, never forwarding them:
``GET /_faults`` (the settings as JSON), ``PUT /_faults`` with a JSON object of settings
to change (``delay_s``, ``error_rate``, ``error_status``, ``retry_after``,
``reset_rate``, ``blackhole_rate``), and ``GET /_faults/log`` (the record, below).

Record (http mode): one JSON object per request that reached the proxy, written when it
arrives, kept in memory (``GET /_faults/log``) and appended to ``--record FILE`` when
given: ``path``, ``method``, ``fault`` (``none``, ``error``, ``reset``, ``blackhole``),
the ``traceparent`` and ``inference-header-content-length`` headers and the OIP
``timeout`` parameter (microseconds) of the JSON part of the body. When the client goes
away before its answer (while delayed or blackholed: a cancellation reaching the
upstream) a second object follows: ``{"event": "closed", "path": ..., "client_closed":
true}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import socket
import struct
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FaultProxy", "Faults", "main"]


@dataclass
class Faults:
    """The fault settings; every rate is a probability per request (or connection)."""

    delay_s: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    retry_after: int | None = None
    reset_rate: float = 0.0
    blackhole_rate: float = 0.0

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown fault setting {key!r}")
            setattr(self, key, value)


def _duration(text: str) -> float:
    for suffix, scale in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    if (_header(headers, "transfer-encoding") or "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                # Trailers are not expected; the final CRLF was read with the chunk.
                break
            chunks.append(data[:-2])
        return b"".join(chunks)
    length = int(_header(headers, "content-length") or 0)
    return await reader.readexactly(length) if length else b""


def _timeout_param(body: bytes, headers: list[tuple[str, str]]) -> int | None:
    json_len = _header(headers, "inference-header-content-length")
    part = body[: int(json_len)] if json_len else body
    try:
        parsed = json.loads(part)
    except ValueError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("parameters"), dict):
        value = parsed["parameters"].get("timeout")
        return int(value) if isinstance(value, int) else None
    return None


@dataclass
class FaultProxy:
    """The proxy; `start` binds and returns the bound (host, port)."""

    upstream: tuple[str, int]
    faults: Faults = field(default_factory=Faults)
    mode: str = "http"
    record_file: Path | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        handler = self._http_client if self.mode == "http" else self._tcp_client
        self._server = await asyncio.start_server(handler, host, port, limit=1 << 26)
        address = self._server.sockets[0].getsockname()
        return address[0], address[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _record(self, entry: dict[str, Any]) -> None:
        self.log.append(entry)
        if self.record_file is not None:
            with self.record_file.open("a") as out:
                out.write(json.dumps(entry) + "\n")

    # HTTP mode ------------------------------------------------------------------------
    async def _http_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                request_line, headers = head
                method, path, _ = [*request_line.split(" ", 2), "", ""][:3]
                body = await _read_body(reader, headers)
                if path.startswith("/_faults"):
                    await self._control(writer, method, path, body)
                    continue
                entry: dict[str, Any] = {
                    "method": method,
                    "path": path,
                    "traceparent": _header(headers, "traceparent"),
                    "inference-header-content-length": _header(
                        headers, "inference-header-content-length"
                    ),
                    "timeout": _timeout_param(body, headers),
                    "fault": "none",
                }
                f = self.faults
                roll = random.random()
                fault = "none"
                if roll < f.blackhole_rate:
                    fault = "blackhole"
                elif random.random() < f.reset_rate:
                    fault = "reset"
                elif random.random() < f.error_rate:
                    fault = "error"
                entry["fault"] = fault
                self._record(entry)
                closed = {"event": "closed", "path": path, "client_closed": True}
                if f.delay_s > 0:
                    gone = asyncio.ensure_future(reader.read(1))
                    done, _ = await asyncio.wait({gone}, timeout=f.delay_s)
                    if done:  # the client went away (pipelining is not supported)
                        self._record(closed)
                        return
                    gone.cancel()
                if fault == "blackhole":
                    await reader.read()  # until the client goes away
                    self._record(closed)
                    return
                if fault == "reset":
                    _reset(writer)
                    return
                if fault == "error":
                    await self._error(writer, f.error_status, f.retry_after)
                    continue
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.upstream, limit=1 << 26)
                up_reader, up_writer = upstream
                up_writer.write(self._request_bytes(request_line, headers, body))
                await up_writer.drain()
                response = await _read_head(up_reader)
                if response is None:
                    _reset(writer)
                    return
                status_line, response_headers = response
                response_body = await _read_body(up_reader, response_headers)
                out = [status_line]
                for name, value in response_headers:
                    if name.lower() not in ("transfer-encoding", "content-length"):
                        out.append(f"{name}: {value}")
                out.append(f"content-length: {len(response_body)}")
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + response_body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if upstream is not None:
                upstream[1].close()
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    def _request_bytes(request_line: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
        lines = [request_line]
        for name, value in headers:
            if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                lines.append(f"{name}: {value}")
        lines.append(f"content-length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    @staticmethod
    async def _error(writer: asyncio.StreamWriter, status: int, retry_after: int | None) -> None:
        body = json.dumps({"error": f"fault injected: {status}"}).encode()
        lines = [
            f"HTTP/1.1 {status} Fault",
            "content-type: application/json",
            f"content-length: {len(body)}",
        ]
        if retry_after is not None:
            lines.append(f"retry-after: {retry_after}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def _control(
        self, writer: asyncio.StreamWriter, method: str, path: str, body: bytes
    ) -> None:
        status, answer = 200, b""
        if path.startswith("/_faults/log"):
            answer = json.dumps(self.log).encode()
        elif method == "PUT":
            try:
                self.faults.update(json.loads(body or b"{}"))
                answer = json.dumps(asdict(self.faults)).encode()
            except (ValueError, TypeError) as exc:
                status, answer = 400, json.dumps({"error": str(exc)}).encode()
        else:
            answer = json.dumps(asdict(self.faults)).encode()
        head = (
            f"HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\n"
            f"content-length: {len(answer)}\r\n\r\n"
        )
        writer.write(head.encode() + answer)
        await writer.drain()

    # TCP mode -------------------------------------------------------------------------
    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        f = self.faults
        if random.random() < f.blackhole_rate:
            await reader.read()
            writer.close()
            return
        if random.random() < f.reset_rate:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delayed: bool) -> None:
            try:
                while data := await src.read(65536):
                    if delayed and self.faults.delay_s > 0:
                        await asyncio.sleep(self.faults.delay_s)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _serve(options: argparse.Namespace) -> None:
    faults = Faults(
        delay_s=_duration(options.delay),
        error_rate=options.error_rate,
        error_status=options.error_status,
        retry_after=options.retry_after,
        reset_rate=options.reset_rate,
        blackhole_rate=options.blackhole_rate,
    )
    proxy = FaultProxy(
        _address(options.upstream),
        faults,
        options.mode,
        Path(options.record) if options.record else None,
    )
    host, port = await proxy.start(*_address(options.listen))
    print(f"faults listening {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    parser.add_argument("--mode", choices=("http", "tcp"), default="http")
    parser.add_argument("--delay", default="0", help="per request (http) or chunk (tcp): 100ms, 1s")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--error-status", type=int, default=503)
    parser.add_argument("--retry-after", type=int, default=None, help="Retry-After of errors")
    parser.add_argument("--reset-rate", type=float, default=0.0)
    parser.add_argument("--blackhole-rate", type=float, default=0.0)
    parser.add_argument("--record", help="append one JSON line per request to this file")
    options = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
