"""Triton's generate extension over REST: `POST v2/models/{m}[/versions/{v}]/generate` and
`/generate_stream` (Server-Sent Events), on the dataplane's `infer` / `infer_stream`.

The request is one flat JSON object, converted as Triton's server converts it: `id` is the
request id, `parameters` an object of request parameters, a key that names one of the
model's inputs is that input (a JSON scalar is one element, a list its elements, shaped
into the model's dims), and any other key is a request parameter. The response carries
`model_name`, `model_version`, `id` (when the request had one) and each output by name: a
one-element output as that value, a larger one as a flat list, BYTES as text.

`generate` wants exactly one response; `generate_stream` sends each response as an SSE
`data:` event as the model yields it (a decoupled model's several, any other model's one).
An error before the first response is an ordinary JSON error; one the model raises while
answering is an event `{"error": ...}`, the response's status set by the first event, as
Triton does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.errors import InferBridgeError, InferenceFailed, InvalidInput
from inferbridge.frontends.rest.errors import http_status
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.tensors import duplicate_input
from inferbridge.protocol.types import InferenceRequest, InferenceResponse, TensorSpec

__all__ = ["EventStream", "decode_generate_request", "generate", "generate_stream"]

logger = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]

_SSE_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")
_NOTHING = object()
#: Deepest nesting of an input's JSON list (Triton's limit for tensor data).
_MAX_DEPTH = 100


class _Object(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs in order, duplicates kept."""


def _parse(body: bytes) -> _Object:
    try:
        document = json.loads(body, object_pairs_hook=_Object)
    except RecursionError:
        raise InvalidInput("malformed JSON in request body: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and bad UTF-8
        raise InvalidInput(f"malformed JSON in request body: {exc}") from None
    if not isinstance(document, _Object):
        raise InvalidInput("the generate request must be a JSON object")
    return document


def _parameter(name: str, value: Any, keyword: str | None = None) -> str | int | float | bool:
    if isinstance(value, (str, bool, int, float)):
        return value
    where = f"Converting keyword: '{keyword}': " if keyword else ""
    raise InvalidInput(
        f"{where}parameter '{name}' has invalid type. A generate parameter is a string, "
        "number or boolean"
    )


def _elements(name: str, value: Any) -> list[Any]:
    """A JSON scalar or (nested) list as its elements, in order."""
    out: list[Any] = []
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list) and not isinstance(item, _Object):
            if depth >= _MAX_DEPTH:
                raise InvalidInput(
                    f"input '{name}': JSON nesting depth exceeds maximum allowed limit "
                    f"({_MAX_DEPTH})"
                )
            stack.extend((element, depth + 1) for element in reversed(item))
        else:
            out.append(item)
    return out


def _check_elements(name: str, datatype: str, elements: list[Any]) -> None:
    """Triton's phrases for a JSON value of the wrong kind."""
    if datatype == "BYTES":
        wrong, what = (e for e in elements if not isinstance(e, str)), "string as string"
    elif datatype == "BOOL":
        wrong, what = (e for e in elements if not isinstance(e, bool)), "boolean as boolean"
    elif datatype.startswith(("INT", "UINT")):
        wrong = (e for e in elements if isinstance(e, bool) or not isinstance(e, int))
        what = "integer as integer"
    else:
        wrong = (e for e in elements if isinstance(e, bool) or not isinstance(e, (int, float)))
        what = "number as number"
    bad = next(wrong, _NOTHING)
    if bad is not _NOTHING:
        raise InvalidInput(
            f"Unable to parse input '{name}': attempt to access JSON non-{what} (got "
            f"{json.dumps(bad) if not isinstance(bad, _Object) else 'an object'})"
        )


def _shape(spec: TensorSpec, count: int, batching: bool) -> tuple[int, ...]:
    """The model's dims for `count` elements: a batching model's batch is 1, and one
    variable dimension takes what the fixed ones leave."""
    dims = list(spec.shape)
    if batching and dims:
        dims[0] = 1
    variable = [i for i, d in enumerate(dims) if d == -1]
    for i in variable[:-1]:
        dims[i] = 1
    fixed = int(np.prod([d for d in dims if d != -1], dtype=np.int64)) if dims else 1
    if variable:
        if fixed == 0 or count % fixed:
            raise _count_error(spec, count)
        dims[variable[-1]] = count // fixed
    elif fixed != count:
        raise _count_error(spec, count)
    return tuple(dims)


def _count_error(spec: TensorSpec, count: int) -> InvalidInput:
    return InvalidInput(
        f"input '{spec.name}': {count} element(s) do not fit its shape {list(spec.shape)}"
    )


def _tensor(spec: TensorSpec, value: Any, batching: bool) -> np.ndarray[Any, Any]:
    elements = _elements(spec.name, value)
    _check_elements(spec.name, spec.datatype, elements)
    shape = _shape(spec, len(elements), batching)
    if spec.datatype == "BYTES":
        array = np.empty(len(elements), dtype=object)
        array[:] = [e.encode() for e in elements]
        return array.reshape(shape)
    dtype = dtype_of(spec.datatype)
    try:
        return np.array(elements, dtype=dtype).reshape(shape)
    except OverflowError:
        raise InvalidInput(
            f"input '{spec.name}': a value is out of range for {spec.datatype}"
        ) from None


def decode_generate_request(
    body: bytes,
    model_name: str,
    model_version: str | None,
    inputs: list[TensorSpec],
    max_batch_size: int,
) -> InferenceRequest:
    """A generate body as an inference request for a model with these inputs."""
    specs = {spec.name: spec for spec in inputs}
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    parameters: dict[str, Any] = {}
    request_id: str | None = None
    for key, value in _parse(body):
        if key in specs:
            if key in tensors:
                raise duplicate_input(key)
            tensors[key] = _tensor(specs[key], value, max_batch_size > 0)
        elif key == "id":
            if not isinstance(value, str):
                raise InvalidInput("'id' must be a string")
            request_id = value or None
        elif key == "parameters":
            if not isinstance(value, _Object):
                raise InvalidInput("Expected JSON object for keyword: 'parameters'")
            for name, item in value:
                parameters[name] = _parameter(name, item, "parameters")
        else:
            parameters[key] = _parameter(key, value)
    return InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=tensors,
        input_datatypes={name: specs[name].datatype for name in tensors},
        id=request_id,
        parameters=parameters,
    )


def _value(array: np.ndarray[Any, Any], datatype: str) -> Any:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        items: list[Any] = [
            e.decode("utf-8", errors="replace") if isinstance(e, bytes) else str(e) for e in flat
        ]
    else:
        items = flat.tolist()
    return items[0] if len(items) == 1 else items


def encode_generate_response(response: InferenceResponse) -> bytes:
    document: dict[str, Any] = {}
    if response.id:
        document["id"] = response.id
    document["model_name"] = response.model_name
    document["model_version"] = response.model_version
    for output in response.outputs:
        document[output.name] = _value(output.data, output.datatype)
    return json.dumps(document, ensure_ascii=False).encode()


def _request(dataplane: DataPlane, name: str, version: str | None, body: bytes) -> InferenceRequest:
    dataplane.check_admission(name, version)  # shed load before decoding it
    metadata = dataplane.model_metadata(name, version)
    batch = int(dataplane.model_settings(name, version).get("max_batch_size", 0))
    return decode_generate_request(body, name, version, metadata.inputs, batch)


async def generate(
    dataplane: DataPlane,
    name: str,
    version: str | None,
    body: bytes,
    caller_gone: Callable[[], Awaitable[object]] | None = None,
) -> bytes:
    """The one response of `generate`, as its JSON body."""
    request = _request(dataplane, name, version, body)
    request.caller_gone = caller_gone
    if not dataplane.decoupled(name, version):
        return encode_generate_response(await dataplane.infer(request))
    responses: list[InferenceResponse] = []
    async with contextlib.aclosing(dataplane.infer_stream(request)) as stream:
        async for response in stream:
            responses.append(response)
            if len(responses) > 1:
                break  # no need to run the model further
    if len(responses) != 1:
        raise InvalidInput(
            f"generate expects model to produce exactly 1 response, model '{name}' produced "
            f"{'none' if not responses else 'more'}; use generate_stream"
        )
    return encode_generate_response(responses[0])


def _event(document: bytes) -> bytes:
    return b"data: " + document + b"\n\n"


def _error_event(error: InferBridgeError) -> bytes:
    return _event(json.dumps({"error": error.message}).encode())


class EventStream:
    """A `generate_stream` answer: its status and first event are known before anything
    is sent; the rest is written as the model yields it."""

    def __init__(
        self,
        status: int,
        first: bytes,
        rest: AsyncGenerator[InferenceResponse, None] | None,
    ) -> None:
        self.status = status
        self.first = first
        self.rest = rest

    async def write(self, send: Send, receive: Receive, *, watch_disconnect: bool) -> None:
        """Send the events; when the server does not cancel a gone client's handler
        itself, watch for the disconnect and stop the model then."""
        await send(
            {"type": "http.response.start", "status": self.status, "headers": [_SSE_TYPE]}
        )
        if self.rest is None:
            await send({"type": "http.response.body", "body": self.first})
            return
        await send({"type": "http.response.body", "body": self.first, "more_body": True})
        writing = asyncio.ensure_future(self._write_rest(self.rest, send))
        watcher = asyncio.ensure_future(_disconnect(receive)) if watch_disconnect else None
        try:
            if watcher is None:
                await writing
                return
            await asyncio.wait({writing, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not writing.done():
                writing.cancel()  # the client is gone: close the model's iterator
                with contextlib.suppress(asyncio.CancelledError):
                    await writing
                return
            writing.result()
        finally:
            if watcher is not None:
                watcher.cancel()
            if not writing.done():
                writing.cancel()

    @staticmethod
    async def _write_rest(rest: AsyncGenerator[InferenceResponse, None], send: Send) -> None:
        async with contextlib.aclosing(rest):
            try:
                async for response in rest:
                    event = _event(encode_generate_response(response))
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            except InferBridgeError as error:  # the model failed, a deadline passed...
                await send(
                    {"type": "http.response.body", "body": _error_event(error), "more_body": True}
                )
            except Exception:  # the status is sent: the error can only be an event now
                logger.exception("unhandled error streaming a generate_stream answer")
                failed = InferenceFailed("internal server error; see the server log")
                await send(
                    {"type": "http.response.body", "body": _error_event(failed), "more_body": True}
                )
        await send({"type": "http.response.body", "body": b""})


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def generate_stream(
    dataplane: DataPlane, name: str, version: str | None, body: bytes
) -> EventStream:
    """The `generate_stream` answer, its first response already taken: errors before it
    propagate (an ordinary JSON error), one the model raises is the first event."""
    request = _request(dataplane, name, version, body)
    stream = dataplane.infer_stream(request)
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        return EventStream(200, b"", None)  # a decoupled model may answer with no response
    except InferenceFailed as error:
        await stream.aclose()
        return EventStream(http_status(error), _error_event(error), None)
    except BaseException:
        await stream.aclose()
        raise
    return EventStream(200, _event(encode_generate_response(first)), stream)
