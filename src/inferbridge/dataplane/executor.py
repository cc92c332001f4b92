"""Runs a model version's runtime off the event loop, on as many threads as it has instances."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from inferbridge.errors import InferenceFailed
from inferbridge.repository.repository import LoadedVersion
from inferbridge.runtimes.base import Arrays

__all__ = ["VersionExecutor"]


class VersionExecutor:
    """Owns the worker threads of one loaded version and checks what the runtime returns."""

    def __init__(self, version: LoadedVersion) -> None:
        assert version.runtime is not None and version.config is not None
        self.version = version
        self._runtime = version.runtime
        instances = sum(group.count for group in version.config.instance_group)
        self._pool = ThreadPoolExecutor(
            max_workers=instances, thread_name_prefix=f"{version.model}-v{version.version}"
        )

    async def run(self, inputs: Arrays) -> Arrays:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.run_sync, inputs)

    def run_sync(self, inputs: Arrays) -> Arrays:
        try:
            outputs = self._runtime.infer(inputs)
        except Exception as exc:  # the model's own failure, reported to the caller as such
            raise InferenceFailed(
                f"model '{self.version.model}' version {self.version.version} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        missing = [s.name for s in self.version.outputs if s.name not in outputs]
        if missing:
            raise InferenceFailed(f"model '{self.version.model}' returned no output {missing}")
        return {name: _as_array(value) for name, value in outputs.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _as_array(value: Any) -> np.ndarray[Any, Any]:
    return value if isinstance(value, np.ndarray) else np.asarray(value)
