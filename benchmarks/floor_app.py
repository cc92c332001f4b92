"""The HTTP floor: a bare ASGI app that reads the whole request body and answers a constant
OIP response. Served by uvicorn with uvloop + httptools and one worker, like inferbridge."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["RESPONSE", "app"]

#: What inferbridge answers for one iris row (same size, same content type).
RESPONSE = (
    b'{"model_name":"iris_onnx","model_version":"1","outputs":[{"name":"label",'
    b'"datatype":"INT64","shape":[1],"data":[0]},{"name":"probabilities","datatype":"FP32",'
    b'"shape":[1,3],"data":[0.9657,0.0343,0.0000]}]}'
)
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(RESPONSE)).encode()),
]

Message = MutableMapping[str, Any]


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = bool(message.get("more_body", False))
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": RESPONSE})
