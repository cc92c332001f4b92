"""The poll mode's trigger: filesystem events when the platform gives them, a timer always.

Each wake-up runs the manager's level-triggered `reconcile`, so an event only says "look
again": a missed, repeated or early event (a model still being copied in) does no harm,
and the timer catches whatever the events missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from inferbridge.models.manager import ModelManager

__all__ = ["watch_repository"]

logger = logging.getLogger(__name__)


async def watch_repository(manager: ModelManager, poll_s: float, stop: asyncio.Event) -> None:
    """Reconcile the served models with the repository until `stop` is set."""
    try:
        await _watch_events(manager, poll_s, stop)
    except Exception as exc:  # no inotify (limits, some filesystems): poll on a timer
        if stop.is_set():
            return
        logger.warning(
            "no filesystem events for the repository (%s); polling every %g s", exc, poll_s
        )
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)
        if not stop.is_set():
            await _reconcile(manager)


async def _watch_events(manager: ModelManager, poll_s: float, stop: asyncio.Event) -> None:
    from watchfiles import awatch  # imported here: only the poll mode needs it

    if manager.root is None:
        raise ValueError("no repository directory to watch")
    async for _ in awatch(
        manager.root,
        stop_event=stop,
        debounce=500,
        rust_timeout=max(1, int(poll_s * 1000)),
        yield_on_timeout=True,
        recursive=True,
    ):
        await _reconcile(manager)


async def _reconcile(manager: ModelManager) -> None:
    try:
        await manager.reconcile()
    except Exception:  # the next wake-up tries again; the served set is untouched
        logger.exception("repository poll failed")
