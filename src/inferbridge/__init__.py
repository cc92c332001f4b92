"""inferbridge: a model server and inference gateway speaking the Open Inference Protocol."""

__version__ = "0.1.0"

from inferbridge.errors import (
    CallerGoneError,
    ConfigError,
    DeadlineExceeded,
    InferBridgeError,
    InferenceFailed,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    QueueFull,
    ServerNotReady,
)
from inferbridge.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    OutputTensor,
    RequestedOutput,
    TensorSpec,
)
from inferbridge.runtimes.base import Runtime, Signature

__all__ = [
    "CallerGoneError",
    "ConfigError",
    "DeadlineExceeded",
    "InferBridgeError",
    "InferenceFailed",
    "InferenceRequest",
    "InferenceResponse",
    "InvalidInput",
    "ModelLoadError",
    "ModelNotFound",
    "ModelNotReady",
    "OutputTensor",
    "PayloadTooLarge",
    "QueueFull",
    "RequestedOutput",
    "Runtime",
    "ServerNotReady",
    "Signature",
    "TensorSpec",
    "__version__",
]
