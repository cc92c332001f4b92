"""uvicorn's httptools protocol, strict about how a request's body ends.

uvicorn closes a connection as soon as the client half-closes it (`shutdown(SHUT_WR)`), so
a client that sends a whole request and then half-closes gets no answer, and one whose body
stops short of its Content-Length (or its last chunk) gets no answer either: it cannot tell
a refused request from a lost one. This protocol answers the first once the app has run,
and the second with 400 and the reason, before closing. (A malformed chunked encoding is
answered 400 by httptools itself.)"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["TRUNCATED_BODY", "StrictHttpToolsProtocol"]

TRUNCATED_BODY = (
    "the request body ended before its Content-Length or its last chunk: "
    "the client closed its side of the connection early"
)


def _answer(status: bytes, message: str) -> bytes:
    body = b'{"error":"' + message.encode() + b'"}'
    head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        status,
        len(body),
    )
    return head + b"connection: close\r\n\r\n" + body


_TRUNCATED_ANSWER = _answer(b"400 Bad Request", TRUNCATED_BODY)


class StrictHttpToolsProtocol(HttpToolsProtocol):
    """The protocol class for uvicorn's `http` setting."""

    def eof_received(self) -> bool | None:  # type: ignore[override] # asyncio allows True
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return None  # between requests: close
        if cycle.more_body and not cycle.response_started:
            self.transport.write(_TRUNCATED_ANSWER)  # flushed before the close
            return None
        # A whole request, then a half-close (HTTP/1.1 allows it): keep the write side open
        # for the answer, then close.
        cycle.keep_alive = False
        return True
