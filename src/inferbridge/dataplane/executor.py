"""Wraps a loaded version's runtime: runs one batch and checks what the runtime returned."""

from __future__ import annotations

from typing import Any

import numpy as np

from inferbridge.batching.scheduler import BatchObserver, BatchPolicy, ExecutionMode, Scheduler
from inferbridge.errors import InferBridgeError, InferenceFailed
from inferbridge.repository.config import DEFAULT_MAX_QUEUE_SIZE
from inferbridge.repository.repository import LoadedVersion
from inferbridge.runtimes.base import Arrays

__all__ = ["VersionRunner", "build_scheduler"]


class VersionRunner:
    """Calls the runtime; a runtime's own exception becomes InferenceFailed for the caller."""

    def __init__(self, version: LoadedVersion) -> None:
        assert version.runtime is not None
        self.version = version
        self._runtime = version.runtime

    def run_sync(self, inputs: Arrays) -> Arrays:
        try:
            outputs = self._runtime.infer(inputs)
        except InferBridgeError:
            raise  # a runtime that checks its input says what was wrong, as is
        except Exception as exc:  # the model's own failure, reported to the caller as such
            raise InferenceFailed(
                f"model '{self.version.model}' version {self.version.version} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        missing = [s.name for s in self.version.outputs if s.name not in outputs]
        if missing:
            raise InferenceFailed(f"model '{self.version.model}' returned no output {missing}")
        return {name: _as_array(value) for name, value in outputs.items()}


def build_scheduler(version: LoadedVersion, observer: BatchObserver | None = None) -> Scheduler:
    """The scheduler for one version, from its config's batching and instance settings."""
    config = version.config
    assert config is not None
    batching = config.dynamic_batching
    if batching is None:
        policy = BatchPolicy(max_batch_size=0, max_queue_size=DEFAULT_MAX_QUEUE_SIZE)
    else:
        policy = BatchPolicy(
            max_batch_size=config.max_batch_size,
            max_queue_delay_s=batching.max_queue_delay_ms / 1000.0,
            preferred_batch_sizes=tuple(batching.preferred_batch_sizes),
            max_queue_size=batching.max_queue_size,
            priority_levels=batching.priority_levels,
            default_priority=batching.default_priority_level,
            hold_for_delay=batching.hold_for_delay,
        )
    instances = sum(group.count for group in config.instance_group)
    mode = ExecutionMode(config.execution)
    if version.runtime is not None and version.runtime.out_of_process:
        mode = ExecutionMode.THREAD  # it waits on a worker process: never on the event loop
    return Scheduler(
        VersionRunner(version).run_sync,
        policy=policy,
        instances=instances,
        mode=mode,
        name=version.model,
        observer=observer,
    )


def _as_array(value: Any) -> np.ndarray[Any, Any]:
    return value if isinstance(value, np.ndarray) else np.asarray(value)
