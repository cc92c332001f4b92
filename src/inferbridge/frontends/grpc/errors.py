"""Domain errors -> gRPC status codes (OIP.md's error table), and the decorator that
applies them to a servicer method."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from inferbridge.errors import (
    CallerGoneError,
    ConfigError,
    DeadlineExceeded,
    InferBridgeError,
    InferenceFailed,
    InvalidInput,
    ModelBusy,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    QueueFull,
    RepositoryNotModifiable,
    ServerNotReady,
    StateConflict,
)

__all__ = ["QUEUE_FULL_CODES", "grpc_status", "mapped_errors"]

logger = logging.getLogger(__name__)

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]

#: What a full queue answers over gRPC (Settings.grpc_queue_full_code): RESOURCE_EXHAUSTED
#: says what happened; UNAVAILABLE is Triton's, and what KServe's gRPC client retries.
QUEUE_FULL_CODES = {
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}

_CODES: dict[type[InferBridgeError], grpc.StatusCode] = {
    ModelBusy: grpc.StatusCode.ABORTED,
    StateConflict: grpc.StatusCode.FAILED_PRECONDITION,
    RepositoryNotModifiable: grpc.StatusCode.FAILED_PRECONDITION,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelLoadError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    CallerGoneError: grpc.StatusCode.CANCELLED,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    InferenceFailed: grpc.StatusCode.INTERNAL,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    ServerNotReady: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_status(
    error: InferBridgeError, *, queue_full: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED
) -> grpc.StatusCode:
    if isinstance(error, QueueFull):
        return queue_full
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INVALID_ARGUMENT


def mapped_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turn domain errors into gRPC statuses (a full queue as the servicer's
    `queue_full_code`); anything else becomes INTERNAL, logged."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await method(self, request, context)
        except InferBridgeError as error:
            code = grpc_status(error, queue_full=self.queue_full_code)
            await context.abort(code, error.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            logger.exception("unhandled error in %s", method.__name__)
            await context.abort(
                grpc.StatusCode.INTERNAL, "internal server error; see the server log"
            )
        raise AssertionError("unreachable: abort raises")

    return wrapper
