"""Run a decoupled runtime's response iterator off the event loop, one item at a time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from inferbridge.runtimes.base import Arrays

__all__ = ["iterate_on_thread"]

_DONE = object()
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="decoupled")
        return _pool


async def iterate_on_thread(iterator: Iterator[Arrays]) -> AsyncGenerator[Arrays, None]:
    """The items of `iterator`, each computed on a worker thread. The next item is computed
    only when asked for, so a slow consumer holds the runtime back instead of buffering.
    When the consumer stops early (cancelled, or an error), the iterator is closed once the
    item being computed, if any, is done: its `finally` blocks run, and no thread keeps
    producing."""
    pending: Future[object] | None = None
    try:
        while True:
            pending = _executor().submit(next, iterator, _DONE)
            item = await asyncio.wrap_future(pending)
            pending = None
            if item is _DONE:
                return
            assert isinstance(item, dict)
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            if pending is None:
                close()
            else:  # still running next(): a generator cannot be closed while it executes
                pending.add_done_callback(lambda _: close())
