"""The Runtime interface: the one seam every framework plugs into.

A runtime loads one model version's artefact and runs whole batches of named numpy arrays.
It never sees wire formats, HTTP or gRPC, queues or deadlines; the layers above own those.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from inferbridge.errors import ModelLoadError
from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig

__all__ = ["Arrays", "Runtime", "Signature"]

Arrays = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True, slots=True)
class Signature:
    """What a runtime can tell about its inputs and outputs from the artefact itself."""

    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)


class Runtime(abc.ABC):
    """Lifecycle of one loaded model version: load, metadata, infer (a whole batch), unload."""

    #: The name used in config.yaml (`runtime: onnx`).
    name: ClassVar[str]
    #: Model metadata's `platform` string (Triton's where one exists).
    platform: ClassVar[str]
    #: The artefact looked for in the version directory when config omits `model_file`.
    default_model_file: ClassVar[str]
    #: Whether `infer` releases the GIL; decides whether threads can run instances in parallel.
    releases_gil: ClassVar[bool] = True
    #: Triton's decoupled transaction policy: the model answers a request with any number
    #: of responses, from `infer_stream`. Served over gRPC ModelStreamInfer only, one
    #: request at a time per call, never batched; ModelInfer and REST infer refuse it.
    decoupled: ClassVar[bool] = False
    #: Where the runtime runs when config.yaml does not say (`isolation`): `inline` in the
    #: server, or `process` in a supervised worker process (inferbridge.isolation).
    isolation: ClassVar[str] = "inline"
    #: Whether `infer` waits on another process; the scheduler then never runs it on the
    #: event loop, so that a hung worker cannot stall other models.
    out_of_process: ClassVar[bool] = False

    @abc.abstractmethod
    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        """Load the artefact from a version directory; raise ModelLoadError on failure."""

    @abc.abstractmethod
    def infer(self, inputs: Arrays) -> Arrays:
        """Run one batch. Inputs are validated against metadata; return every output."""

    def infer_stream(self, inputs: Arrays) -> Iterator[Arrays]:
        """A decoupled model's responses to one request (a batch of one), each a full set of
        outputs, yielded as they are ready; run on a worker thread. The default yields
        `infer`'s one answer."""
        yield self.infer(inputs)

    def metadata(self) -> Signature:
        """Inputs and outputs derived from the artefact; empty when it cannot say."""
        return Signature()

    def unavailable_reason(self) -> str:
        """Why this loaded runtime cannot serve right now (a worker process restarting, or
        given up after a crash loop), or "" when it can; readiness and the repository index
        report it."""
        return ""

    def unload(self) -> None:  # noqa: B027 - optional hook; most runtimes just drop references
        """Release the model's resources."""

    @classmethod
    def model_path(cls, model_dir: Path, config: ModelConfig) -> Path:
        """The artefact's path; raises ModelLoadError when it does not exist."""
        path = model_dir / (config.model_file or cls.default_model_file)
        if not path.exists():
            raise ModelLoadError(f"model file {path} does not exist")
        return path
