"""Domain errors -> HTTP status codes (OIP.md's error table)."""

from __future__ import annotations

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

__all__ = ["http_status"]

_STATUS: dict[type[InferBridgeError], int] = {
    ModelBusy: 409,
    StateConflict: 409,
    RepositoryNotModifiable: 403,
    ConfigError: 400,
    ModelLoadError: 400,
    InvalidInput: 400,
    CallerGoneError: 499,
    ModelNotFound: 404,
    PayloadTooLarge: 413,
    QueueFull: 429,
    InferenceFailed: 500,
    ModelNotReady: 503,
    ServerNotReady: 503,
    DeadlineExceeded: 504,
}


def http_status(error: InferBridgeError) -> int:
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400
