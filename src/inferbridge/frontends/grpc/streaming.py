"""Triton's ModelStreamInfer: many inference requests on one bidirectional stream.

Shared by both gRPC front ends (grpc.aio here, the Go gateway through its backend). Each
request on the stream is answered on its own task, up to MAX_INFLIGHT at once, so answers
may come back out of order; each carries the request's id. A request that fails is
answered with `error_message` (prefixed "[request id: ID] " when it has an id, as Triton
does) and the stream goes on. A decoupled model's request gets one response per item its
runtime yields. Each request is admitted as a unary one is: a model whose queue is full
refuses it (QueueFull, in `error_message`) before its tensors are decoded.

Triton's final-response flag: a request with the parameter
`triton_enable_empty_final_response: true` gets `triton_final_response` on each of its
responses: false on a decoupled model's responses, followed by an empty response (no
outputs; the request's id, model and version) with true; true on an ordinary model's one
response. Without the parameter no response carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from google.protobuf.message import DecodeError

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.errors import InferBridgeError
from inferbridge.protocol.generated import grpc_service_pb2 as pb
from inferbridge.protocol.grpc_codec import decode_model_infer_request, encode_model_infer_response

__all__ = [
    "MAX_INFLIGHT",
    "STREAM_INFER",
    "StreamHandler",
    "StreamTable",
    "stream_deadline",
    "stream_infer",
    "stream_table",
]

logger = logging.getLogger(__name__)

#: The full method name of Triton's streaming inference RPC.
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
#: Requests of one stream answered at once; the stream's next request is read only when
#: one of them is done, so a fast client is held back by gRPC flow control.
MAX_INFLIGHT = 32

_ENABLE_FINAL = "triton_enable_empty_final_response"
_FINAL = "triton_final_response"

#: A stream's handler: its request messages (or their wire bytes) in, responses out; the
#: float is the stream's deadline (time.monotonic() seconds) or None.
StreamHandler = Callable[
    [AsyncIterator[pb.ModelInferRequest | bytes], float | None],
    AsyncGenerator[pb.ModelStreamInferResponse, None],
]
#: Full method name -> handler, for the streaming RPCs.
StreamTable = dict[str, StreamHandler]


def stream_table(dataplane: DataPlane) -> StreamTable:
    """The streaming RPCs served, by full method name."""

    def handler(
        requests: AsyncIterator[pb.ModelInferRequest | bytes], deadline: float | None
    ) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
        return stream_infer(dataplane, requests, deadline)

    return {STREAM_INFER: handler}


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


async def stream_infer(
    dataplane: DataPlane,
    requests: AsyncIterator[pb.ModelInferRequest | bytes],
    deadline: float | None = None,
) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
    """Answer every request of one stream. Ends once the client has half-closed and every
    request read has been answered; an error reading the requests (the client went away)
    is raised after the work in flight is cancelled. Closing the generator early cancels
    the work in flight."""
    out: asyncio.Queue[pb.ModelStreamInferResponse | _End] = asyncio.Queue(MAX_INFLIGHT)
    slots = asyncio.Semaphore(MAX_INFLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def answer(item: pb.ModelInferRequest | bytes) -> None:
        try:
            # aclosing: a cancelled answer closes its generators at once (the runtime's
            # iterator included), not whenever the garbage collector finds them.
            async with contextlib.aclosing(_responses(dataplane, item, deadline)) as responses:
                async for response in responses:
                    await out.put(response)
        finally:
            slots.release()

    async def read() -> None:
        error: BaseException | None = None
        try:
            async for item in requests:
                await slots.acquire()
                task = loop.create_task(answer(item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.wait(set(tasks))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the request stream failed: the client is gone
            error = exc
            for task in list(tasks):
                task.cancel()
        await out.put(_End(error))

    reader = loop.create_task(read())
    try:
        while True:
            item = await out.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()


async def _responses(
    dataplane: DataPlane, item: pb.ModelInferRequest | bytes, deadline: float | None
) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
    """The stream responses answering one request: its responses, or one error."""
    message: pb.ModelInferRequest | None = None
    try:
        if isinstance(item, pb.ModelInferRequest):
            message = item
        else:
            try:
                message = pb.ModelInferRequest.FromString(item)
            except DecodeError as exc:
                yield _error(None, f"request is not a valid inference.ModelInferRequest: {exc}")
                return
        # Refused before its tensors are decoded, as REST refuses a unary request: the
        # gateway's LIMITS count unary calls only (a stream's requests reach this process).
        dataplane.check_admission(message.model_name, message.model_version or None)
        request = decode_model_infer_request(message)
        if deadline is not None:
            request.deadline = (
                deadline if request.deadline is None else min(deadline, request.deadline)
            )
        flagged = request.parameters.get(_ENABLE_FINAL) is True
        decoupled = dataplane.decoupled(request.model_name, request.model_version)
        version = request.model_version or ""
        async with contextlib.aclosing(dataplane.infer_stream(request)) as answers:
            async for response in answers:
                encoded = encode_model_infer_response(response)
                version = encoded.model_version
                if flagged:
                    encoded.parameters[_FINAL].bool_param = not decoupled
                yield pb.ModelStreamInferResponse(infer_response=encoded)
        if flagged and decoupled:
            final = pb.ModelInferResponse(
                model_name=message.model_name, model_version=version, id=message.id
            )
            final.parameters[_FINAL].bool_param = True
            yield pb.ModelStreamInferResponse(infer_response=final)
    except InferBridgeError as error:
        yield _error(message, error.message)
    except Exception:  # the dataplane maps its own errors; this is a bug
        logger.exception("unhandled error answering a ModelStreamInfer request")
        yield _error(message, "internal server error; see the server log")


def _error(message: pb.ModelInferRequest | None, text: str) -> pb.ModelStreamInferResponse:
    if message is None:
        return pb.ModelStreamInferResponse(error_message=text)
    if message.id:
        text = f"[request id: {message.id}] {text}"
    return pb.ModelStreamInferResponse(
        error_message=text,
        infer_response=pb.ModelInferResponse(
            model_name=message.model_name, model_version=message.model_version, id=message.id
        ),
    )


def stream_deadline(time_remaining: float | None) -> float | None:
    """A stream's absolute deadline from the seconds its context has left."""
    return None if time_remaining is None else time.monotonic() + time_remaining
