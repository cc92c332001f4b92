"""Rollout events POSTed as JSON to configured URLs: in order per URL, retried, never
blocking anything."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

__all__ = ["Webhooks"]

logger = logging.getLogger(__name__)


class Webhooks:
    """One delivery queue per URL, drained by one task, so a receiver sees a rollout's
    events in the order they happened (a receiver reacting to `approved` before the `step`
    that preceded it would be misled). Each event gets at most `attempts` tries with
    doubling back-off; one that fails every time is logged and dropped, and the queue moves
    on. A queue holds at most `backlog` events: past that the oldest is dropped, so a dead
    receiver costs bounded memory. The rollout never waits for any of it."""

    def __init__(
        self,
        *,
        attempts: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        backlog: int = 1000,
    ):
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.backlog = backlog
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._queues: dict[str, deque[dict[str, Any]]] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}
        self._client: Any = None

    def send(self, urls: Sequence[str], event: dict[str, Any]) -> None:
        for url in urls:
            queue = self._queues.setdefault(url, deque())
            if len(queue) >= self.backlog:
                queue.popleft()
                self.dropped += 1
                logger.warning(
                    "rollout webhook %s is %d events behind; dropped the oldest", url, self.backlog
                )
            queue.append(event)
            if url not in self._drainers:
                task = asyncio.ensure_future(self._drain(url, queue))
                self._drainers[url] = task

    async def _drain(self, url: str, queue: deque[dict[str, Any]]) -> None:
        try:
            while queue:
                event = queue[0]
                await self._deliver(url, event)
                if queue and queue[0] is event:  # not already dropped for backlog
                    queue.popleft()
        finally:
            self._drainers.pop(url, None)
            if not queue:
                self._queues.pop(url, None)

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
        if self._drainers:
            _, pending = await asyncio.wait(list(self._drainers.values()), timeout=2.0)
            for task in pending:
                task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
