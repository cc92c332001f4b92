"""Rollout events POSTed as JSON to configured URLs: retried, never blocking anything."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

__all__ = ["Webhooks"]

logger = logging.getLogger(__name__)


class Webhooks:
    """One task per delivery; at most `attempts` tries with doubling back-off. A hook that
    fails every time is logged and forgotten: the rollout does not wait for it."""

    def __init__(self, *, attempts: int = 3, backoff_s: float = 0.5, timeout_s: float = 5.0):
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: Any = None

    def send(self, urls: Sequence[str], event: dict[str, Any]) -> None:
        for url in urls:
            task = asyncio.ensure_future(self._deliver(url, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, event: dict[str, Any]) -> None:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._client.post(url, json=event)
                if response.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.failed += 1
        logger.warning(
            "rollout webhook %s failed %d times (%s); event %s of model '%s' not delivered",
            url,
            self.attempts,
            problem,
            event.get("event"),
            event.get("model"),
        )

    async def close(self) -> None:
        """Give pending deliveries a moment, then drop them."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=2.0)
            for task in pending:
                task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
