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

__all__ = ["grpc_status"]

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


def grpc_status(error: InferBridgeError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INVALID_ARGUMENT
