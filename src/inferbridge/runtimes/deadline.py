"""The deadline of the batch a runtime is running, for runtimes that can act on it.

The scheduler sets it around each batch it executes (the latest deadline of the batch's
requests: once it passes, nobody waits for the answer; None when any request has none). A
runtime reads it on the same thread; an isolated runtime kills a worker process that is
still running the batch then.
"""

from __future__ import annotations

import threading
from types import TracebackType

__all__ = ["CallDeadline", "current_deadline"]

_local = threading.local()


def current_deadline() -> float | None:
    """The running batch's deadline (`time.monotonic()` seconds), or None."""
    deadline: float | None = getattr(_local, "deadline", None)
    return deadline


class CallDeadline:
    """`with CallDeadline(deadline):` makes `deadline` current on this thread."""

    __slots__ = ("_deadline", "_previous")

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline
        self._previous: float | None = None

    def __enter__(self) -> None:
        self._previous = getattr(_local, "deadline", None)
        _local.deadline = self._deadline

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _local.deadline = self._previous
