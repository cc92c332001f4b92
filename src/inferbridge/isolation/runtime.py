"""The isolated runtime: any Runtime, run in a supervised worker process.

`make_runtime(config)` is the runtime factory the repository loads versions with: it
returns the configured runtime itself (`isolation: inline`), or a wrapper of the same name
and platform whose `load` starts a worker process that loads the real one, whose `infer`
sends each batch through shared memory, and whose `unavailable_reason` tells readiness
whether the worker is restarting or has given up.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from inferbridge.errors import ModelLoadError
from inferbridge.isolation.supervisor import Supervisor, WorkerSpec, WorkerStartError
from inferbridge.repository.config import Isolation, ModelConfig
from inferbridge.runtimes.base import Arrays, Runtime, Signature
from inferbridge.runtimes.deadline import current_deadline
from inferbridge.runtimes.registry import runtime_class

__all__ = ["IsolatedRuntime", "isolated_class", "isolation_mode", "make_runtime"]


def isolation_mode(config: ModelConfig, cls: type[Runtime]) -> str:
    """`process` or `inline`: config.yaml's `isolation.mode`, else `process` when
    `priority: idle` asks for a worker to schedule, else the runtime's default."""
    if config.isolation is not None and config.isolation.mode is not None:
        return config.isolation.mode
    if config.isolation is not None and config.isolation.priority == "idle":
        return "process"
    return cls.isolation


def make_runtime(config: ModelConfig) -> Runtime:
    """A new, unloaded runtime for `config`, isolated in a worker process when it says so."""
    cls = runtime_class(config.runtime)
    if isolation_mode(config, cls) == "process":
        return isolated_class(cls)()
    return cls()


class IsolatedRuntime(Runtime):
    """Runs `inner` (a Runtime class) in a supervised worker process."""

    name = "isolated"
    platform = ""
    default_model_file = ""
    releases_gil = True
    out_of_process = True
    inner: ClassVar[type[Runtime]]

    def __init__(self) -> None:
        self._supervisor: Supervisor | None = None
        self._signature = Signature()

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        if self.inner.decoupled:
            raise ModelLoadError(
                f"runtime '{self.inner.name}' is decoupled, which isolation: process does not "
                "serve; set isolation: inline"
            )
        label = f"model '{model_dir.parent.name}' version {model_dir.name}"
        spec = WorkerSpec(
            label=label,
            config_json=config.model_dump_json(),
            model_dir=model_dir.resolve(),
            device=device,
            instances=sum(group.count for group in config.instance_group),
            options=config.isolation or Isolation(mode="process"),
        )
        supervisor = Supervisor(spec)
        try:
            self._signature = supervisor.start()
        except WorkerStartError as exc:
            raise ModelLoadError(str(exc)) from None
        self._supervisor = supervisor

    def metadata(self) -> Signature:
        return self._signature

    def infer(self, inputs: Arrays) -> Arrays:
        if self._supervisor is None:
            raise RuntimeError("the isolated runtime is not loaded")
        return self._supervisor.call(inputs, current_deadline())

    def unavailable_reason(self) -> str:
        if self._supervisor is None:
            return "not loaded"
        return self._supervisor.unavailable_reason()

    def unload(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()

    @property
    def supervisor(self) -> Supervisor | None:
        """The supervisor of the worker (for tests and diagnostics)."""
        return self._supervisor


_CLASSES: dict[type[Runtime], type[IsolatedRuntime]] = {}


def isolated_class(cls: type[Runtime]) -> type[IsolatedRuntime]:
    """The IsolatedRuntime subclass that runs `cls`: it has `cls`'s name and platform."""
    found = _CLASSES.get(cls)
    if found is None:
        found = type(
            f"Isolated{cls.__name__}",
            (IsolatedRuntime,),
            {
                "name": cls.name,
                "platform": cls.platform,
                "default_model_file": cls.default_model_file,
                "inner": cls,
                "__module__": __name__,
            },
        )
        _CLASSES[cls] = found
    return found
