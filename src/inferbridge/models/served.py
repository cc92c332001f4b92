"""What the model manager serves: a version with its scheduler, and a model's snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inferbridge.batching.scheduler import Scheduler
from inferbridge.observability.stats import VersionStats
from inferbridge.repository.config import ModelConfig
from inferbridge.repository.repository import LoadedVersion

__all__ = ["ModelView", "ServingVersion"]


@dataclass(eq=False, slots=True)
class ServingVersion:
    """A loaded, ready version: its scheduler, statistics and requests in flight.

    `inflight` counts requests between resolving this version and their answer; a retired
    version is unloaded only once it is zero, so no request ever loses its model."""

    loaded: LoadedVersion
    scheduler: Scheduler
    stats: VersionStats
    fingerprint: str
    inflight: int = 0
    draining: bool = False
    drained: asyncio.Event | None = None

    @property
    def number(self) -> int:
        return self.loaded.version

    @property
    def unavailable_reason(self) -> str:
        """Why the loaded runtime cannot serve now (its worker process restarting, or given
        up after a crash loop: inferbridge.isolation), or "" when it can."""
        runtime = self.loaded.runtime
        return runtime.unavailable_reason() if runtime is not None else ""

    def leave(self) -> None:
        """One request is done with this version (called on the event loop)."""
        self.inflight -= 1
        if self.draining and self.inflight == 0 and self.drained is not None:
            self.drained.set()


@dataclass(frozen=True, slots=True)
class ModelView:
    """An immutable snapshot of one model: a change builds a new view and swaps it in with
    one assignment, so a request sees either the old model or the new one, never a mix."""

    name: str
    path: Path
    config: ModelConfig | None
    versions: Mapping[int, ServingVersion] = field(default_factory=dict)
    failed: Mapping[int, LoadedVersion] = field(default_factory=dict)
    error: str = ""  # why nothing serves (bad config, no version), or why a reload failed
    draining: bool = False
    fingerprint: str = ""  # of the files serving now
    attempted: str = ""  # of the files a failed change tried to load
    override_dir: Path | None = None  # the directory a load's `file:` parameters made
    pinned: int | None = None  # a rollout's baseline (or promoted candidate)

    @property
    def default(self) -> ServingVersion | None:
        """The version unversioned requests resolve to: the one a rollout pinned, else the
        highest ready version."""
        if self.pinned is not None:
            pinned = self.versions.get(self.pinned)
            if pinned is not None:
                return pinned
        return self.versions[max(self.versions)] if self.versions else None

    @property
    def dependencies(self) -> set[str]:
        """Models that this model's pipeline steps load."""
        if self.config is None:
            return set()
        steps = self.config.parameters.get("steps")
        if not isinstance(steps, list):
            return set()
        return {str(s["model"]) for s in steps if isinstance(s, dict) and "model" in s}
