"""Front-end metrics and the access log for REST on uvicorn.

Only on the fallback path: through the gateway, Go counts HTTP itself and the gateway
backend writes the access log. The wrapper costs two closures and a few integer updates
per request; without counters and access log it is not installed at all.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from inferbridge.frontends.rest.app import Message, Receive, Scope, Send
from inferbridge.observability.frontend import (
    ProtocolCounters,
    http_route,
    infer_model,
)
from inferbridge.observability.logs import AccessLog
from inferbridge.security.authority import REFUSAL

__all__ = ["ObservedApp", "counting_http_protocol"]

ASGIApp = Any

#: The gateway's `reason` for a refusal, by the status the REST app answered.
_REFUSALS = {429: "queue_full", 413: "too_large"}


class _Exchange:
    __slots__ = ("request_bytes", "response_bytes", "status")

    def __init__(self) -> None:
        self.status = 0
        self.request_bytes = 0
        self.response_bytes = 0


class ObservedApp:
    """Wraps the REST ASGI app: counts each request into `counters` (labels as the
    gateway's) and writes its access-log line."""

    def __init__(
        self, app: ASGIApp, counters: ProtocolCounters | None, access: AccessLog | None
    ) -> None:
        self.app = app
        self.counters = counters
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        exchange = _Exchange()

        async def counted_receive() -> Message:
            message = await receive()
            exchange.request_bytes += len(message.get("body", b""))
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                exchange.response_bytes += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                exchange.status = message["status"]
            await send(message)

        counters = self.counters
        if counters is not None:
            counters.inflight += 1
        failed = False
        try:
            await self.app(scope, counted_receive, counted_send)
        except asyncio.CancelledError:
            raise
        except BaseException:
            failed = True  # uvicorn answers 500
            raise
        finally:
            status = exchange.status or (500 if failed else 499)
            if counters is not None:
                self._count(counters, scope["path"], status, exchange, start)
            if self.access is not None:
                self._log(self.access, scope, status, exchange, start)

    @staticmethod
    def _count(
        counters: ProtocolCounters, path: str, status: int, exchange: _Exchange, start: float
    ) -> None:
        counters.inflight -= 1
        counters.request_bytes += exchange.request_bytes
        counters.response_bytes += exchange.response_bytes
        counters.done(http_route(path), str(status), time.perf_counter() - start)
        reason = REFUSAL.get() or _REFUSALS.get(status)
        if reason is not None:
            counters.reject(infer_model(path), reason)

    @staticmethod
    def _log(
        access: AccessLog, scope: Scope, status: int, exchange: _Exchange, start: float
    ) -> None:
        access.http(
            scope,
            status=status,
            duration_s=time.perf_counter() - start,
            request_bytes=exchange.request_bytes,
            response_bytes=exchange.response_bytes,
        )


def counting_http_protocol(counters: ProtocolCounters) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (StrictHttpToolsProtocol), counting connections into
    `counters`."""
    from inferbridge.frontends.rest.protocol import StrictHttpToolsProtocol

    counters.connections = 0

    class CountingHttpToolsProtocol(StrictHttpToolsProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert counters.connections is not None
            counters.connections += 1
            counters.connections_total += 1
            super().connection_made(transport)  # type: ignore[arg-type]

        def connection_lost(self, exc: Exception | None) -> None:
            assert counters.connections is not None
            counters.connections -= 1
            super().connection_lost(exc)

    return CountingHttpToolsProtocol
