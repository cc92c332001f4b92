"""Domain errors -> gRPC status codes (OIP.md's error table)."""

from __future__ import annotations

import grpc

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
)

__all__ = ["QUEUE_FULL_CODES", "grpc_status"]

#: What a full queue answers over gRPC (Settings.grpc_queue_full_code): RESOURCE_EXHAUSTED
#: says what happened; UNAVAILABLE is Triton's, and what KServe's gRPC client retries.
QUEUE_FULL_CODES = {
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}

_CODES: dict[type[InferBridgeError], grpc.StatusCode] = {
    ModelBusy: grpc.StatusCode.ABORTED,
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
