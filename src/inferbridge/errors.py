"""Domain errors. Each front end maps these to its own status codes, in one table."""

from __future__ import annotations

__all__ = [
    "CallerGoneError",
    "ConfigError",
    "DeadlineExceeded",
    "InferBridgeError",
    "InferenceFailed",
    "InvalidInput",
    "ModelBusy",
    "ModelLoadError",
    "ModelNotFound",
    "ModelNotReady",
    "PayloadTooLarge",
    "QueueFull",
    "RepositoryNotModifiable",
    "ServerNotReady",
    "StateConflict",
]


class InferBridgeError(Exception):
    """Base of every error the server reports to a client; `message` is shown as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(InferBridgeError):
    """The request is malformed or does not match the model: REST 400, INVALID_ARGUMENT."""


class ModelNotFound(InferBridgeError):
    """Unknown model or version: REST 404, NOT_FOUND."""


class ModelNotReady(InferBridgeError):
    """The model exists but cannot serve (failed to load, unloading): 503, UNAVAILABLE."""


class ServerNotReady(InferBridgeError):
    """The server is draining: 503, UNAVAILABLE."""


class QueueFull(InferBridgeError):
    """Admission refused because the queue is full: 429 with Retry-After, RESOURCE_EXHAUSTED."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(InferBridgeError):
    """The request's deadline passed before it was answered: 504, DEADLINE_EXCEEDED."""


class CallerGoneError(InferBridgeError):
    """The client disconnected or cancelled; nobody is left to answer (HTTP 499 in logs)."""


class PayloadTooLarge(InferBridgeError):
    """The request body is over the configured limit: 413, RESOURCE_EXHAUSTED."""


class InferenceFailed(InferBridgeError):
    """The model itself raised while running valid input: 500, INTERNAL."""


class ConfigError(InferBridgeError):
    """A model's config.yaml is invalid; the message names the file and the field."""


class ModelLoadError(InferBridgeError):
    """A model version could not be loaded; the message names the model, file and cause."""


class ModelBusy(InferBridgeError):
    """The model is being loaded already; a second load is refused: 409, ABORTED."""


class RepositoryNotModifiable(InferBridgeError):
    """The model control mode does not allow loading or unloading through the API:
    403, FAILED_PRECONDITION."""


class StateConflict(InferBridgeError):
    """The action does not fit the current state (a second rollout of a model, approving a
    gate that is not waiting): REST 409, FAILED_PRECONDITION."""
