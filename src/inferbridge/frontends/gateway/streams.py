"""The backend's half of the gateway's streaming calls (STREAM-* frames; see backend.py).

One `GatewayStream` per STREAM-OPEN: its requests arrive as STREAM-MSG frames into a
queue (never more than the window: the gateway waits for our STREAM-ACK before sending
more), the stream's handler answers them, and each response leaves as STREAM-MSG once
the gateway has acknowledged enough of the earlier ones; STREAM-END carries the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Callable

import grpc

from inferbridge.frontends.grpc.streaming import StreamHandler

__all__ = ["STREAM_WINDOW", "GatewayStream"]

logger = logging.getLogger(__name__)

#: The most STREAM-MSG frames of one stream either side sends before an acknowledgement
#: (the gateway's streamWindow).
STREAM_WINDOW = 32

STREAM_OPEN, STREAM_MSG, STREAM_CLOSE, STREAM_END, STREAM_ACK = range(12, 17)
_ONE = struct.pack("<I", 1)

#: Sends one frame: kind, stream id, body parts.
Send = Callable[..., None]


class GatewayStream:
    """One forwarded streaming call."""

    __slots__ = ("_credit", "_has_credit", "_id", "_requests", "_send", "code")

    def __init__(self, stream_id: int, send: Send) -> None:
        self._id = stream_id
        self._send = send
        self._requests: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._credit = STREAM_WINDOW
        self._has_credit = asyncio.Event()
        self._has_credit.set()
        #: The status the stream ended with (for the access log).
        self.code = "CANCELLED"

    # --- frames from the gateway ------------------------------------------------------
    def message(self, payload: bytes) -> None:
        self._requests.put_nowait(payload)

    def half_close(self) -> None:
        self._requests.put_nowait(None)

    def ack(self, count: int) -> None:
        self._credit += count
        self._has_credit.set()

    # --- answering -------------------------------------------------------------------------
    async def _incoming(self) -> AsyncIterator[bytes]:
        while True:
            payload = await self._requests.get()
            if payload is None:
                return
            self._send(STREAM_ACK, self._id, _ONE)  # taken in: the gateway may send one more
            yield payload

    async def serve(self, handler: StreamHandler | None, deadline: float | None) -> None:
        """Answer the stream until its handler ends; CancelledError (CANCEL, or the
        gateway gone) ends it silently: the gateway has already answered the client."""
        if handler is None:
            self._end(grpc.StatusCode.UNIMPLEMENTED, "unknown streaming method")
            return
        try:
            async with contextlib.aclosing(handler(self._incoming(), deadline)) as responses:
                async for response in responses:
                    while self._credit <= 0:
                        self._has_credit.clear()
                        await self._has_credit.wait()
                    self._credit -= 1
                    self._send(STREAM_MSG, self._id, response.SerializeToString())
        except asyncio.CancelledError:
            return
        except Exception:  # the handler maps its own errors; this is a bug
            logger.exception("unhandled error answering a stream")
            self._end(grpc.StatusCode.INTERNAL, "internal server error; see the server log")
            return
        self._end(grpc.StatusCode.OK, "")

    def _end(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code.name
        number: int = code.value[0]
        self._send(STREAM_END, self._id, bytes((number,)), message.encode())
