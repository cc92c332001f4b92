"""The per-version scheduler: a bounded priority queue, a dynamic batcher and an instance pool.

One future per request and one dispatcher task per model version (woken by events and timers,
never by polling). The batching window starts at the oldest queued request; a batch is sent
when it reaches `max_batch_size` or a preferred size, or when the window closes, or (unless
`hold_for_delay`) as soon as no new request has arrived for two turns of the event loop:
waiting longer could not fill it. With `hold_for_delay`, Triton's rule, a batch that is
neither full nor a preferred size waits for the whole window (a timer wakes it). Requests
whose future is done (deadline passed, client gone) are skipped and never executed. One
failure is delivered to every request of its batch, and the output batch length is checked
before results are split back.

Execution is inline on the event loop or on a thread per instance. `auto` measures: batches
that take well under a millisecond (small ONNX or scikit-learn models) run inline, where a
thread hand-off would cost more than the model; slower ones go to the instance threads so
the loop keeps serving. An instance thread that finishes a batch starts the next one that is
ready (full, or its window closed) itself, so that a busy event loop does not leave the
instance idle; the queue is shared with the loop under a lock, and results are always
delivered on the loop.

An optional observer is told about every executed batch (`BatchTiming`: its requests' queue
waits and trace contexts, and when it was joined, run and split), always on the event loop,
so statistics and tracing need no lock of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from inferbridge.errors import (
    CallerGoneError,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    QueueFull,
)
from inferbridge.runtimes.deadline import CallDeadline

__all__ = ["BatchObserver", "BatchPolicy", "BatchTiming", "ExecutionMode", "Scheduler"]

Arrays = dict[str, np.ndarray[Any, Any]]
RunBatch = Callable[[Arrays], Arrays]
CallerGone = Callable[[], Awaitable[object]]

# Batches faster than this run inline on the event loop in `auto` mode.
_INLINE_BELOW_S = 0.0008
# Loop turns without a new arrival after which a batching window closes early.
_QUIET_TURNS = 2
# A request starts watching for its caller's disconnect once it has waited this long. A
# watch is a task per request (about 10 us of loop time, as much as the rest of the
# scheduler); most requests are answered sooner, and work that would start within this
# time gains little from being withdrawn.
_WATCH_AFTER_S = 0.01


@dataclass(frozen=True, slots=True)
class BatchTiming:
    """One executed batch, as reported to the observer (`time.monotonic()` seconds)."""

    rows: int
    queue_waits: list[float]  # per request: from its arrival to the batch's start
    traces: list[object]  # per request: the trace context it was submitted with, or None
    started: float
    joined: float  # inputs concatenated
    ran: float  # the runtime returned
    ended: float  # outputs split and delivered
    failed: bool


BatchObserver = Callable[[BatchTiming], None]


class ExecutionMode(StrEnum):
    AUTO = "auto"
    INLINE = "inline"
    THREAD = "thread"


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How requests are queued and merged. `max_batch_size` 0 or 1 disables merging."""

    max_batch_size: int = 0
    max_queue_delay_s: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 0
    priority_levels: int = 1
    default_priority: int = 0
    hold_for_delay: bool = False
    """Triton's rule: never close a window early because arrivals went quiet."""

    @property
    def merges(self) -> bool:
        return self.max_batch_size > 1


@dataclass(eq=False, slots=True)
class _Item:
    inputs: Arrays
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[Arrays]
    arrival: float
    deadline: float | None
    queued: bool = True
    trace: object = None


class Scheduler:
    """Admits, queues, batches and executes the requests of one model version."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        policy: BatchPolicy,
        instances: int = 1,
        mode: ExecutionMode = ExecutionMode.AUTO,
        name: str = "model",
        observer: BatchObserver | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._observer = observer
        self.policy = policy
        self.name = name
        self._instances = max(1, instances)
        self._mode = mode
        self._pool = ThreadPoolExecutor(max_workers=self._instances, thread_name_prefix=name)
        self._free = self._instances
        # Guards the queue, the queue count and `_free`, which instance threads change too.
        self._lock = threading.Lock()
        self._levels: list[deque[_Item]] = [deque() for _ in range(max(1, policy.priority_levels))]
        self._queued = 0
        self._ewma_s: float | None = None
        self._ewma_rows = 1.0
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._arrivals = 0
        self._arrivals_seen = 0
        self._quiet_turns = 0
        self._window_timer: asyncio.TimerHandle | None = None
        self._window_due = 0.0
        self._closed = False

    # -- public ----------------------------------------------------------------------------

    async def submit(
        self,
        inputs: Arrays,
        *,
        deadline: float | None = None,
        priority: int = 0,
        caller_gone: CallerGone | None = None,
        trace: object = None,
    ) -> Arrays:
        """Run `inputs` (a validated request) and return its outputs.

        `deadline` is absolute, in `time.monotonic()` seconds; `priority` follows Triton:
        1 is the highest level, 0 means the configured default. `caller_gone`, when given,
        is awaited alongside a request that has waited 10 ms: if it completes first, the
        request is withdrawn (never executed if still queued) and CallerGone is raised.
        `trace` is handed back to the observer with the batch that ran the request.
        """
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded(f"model '{self.name}': the request's deadline passed on arrival")
        level = self._level(priority)
        if self._free and not self._queued and not self._waits_for_batch():
            return await self._run_now(inputs, deadline, caller_gone, trace)
        self.check_admission()
        item = _Item(
            inputs, _rows(inputs), _key(inputs), loop.create_future(), now, deadline, True, trace
        )
        with self._lock:
            self._levels[level].append(item)
            self._queued += 1
        self._arrivals += 1
        self._wake()
        try:
            return await self._wait(item.future, deadline, caller_gone)
        finally:
            if item.queued:  # withdrawn (deadline, caller gone, cancelled) before it ran
                self._forget(item)

    @property
    def instances(self) -> int:
        """How many batches this version runs at once."""
        return self._instances

    def check_admission(self) -> None:
        """Raise QueueFull when a new request would be refused; cheap enough to call before
        decoding a request, so that shedding load costs less than serving it."""
        if self.policy.max_queue_size and self._queued >= self.policy.max_queue_size:
            raise QueueFull(
                f"model '{self.name}': queue is full ({self._queued} requests waiting, "
                f"max_queue_size {self.policy.max_queue_size}); retry later",
                retry_after_s=self._retry_after(),
            )

    def close(self) -> None:
        self._closed = True
        if self._window_timer is not None:
            self._window_timer.cancel()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        for level in self._levels:
            for item in level:
                if not item.future.done():
                    item.future.set_exception(ModelNotReady(f"model '{self.name}' is unloading"))
            level.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def queued(self) -> int:
        return self._queued

    # -- admission and waiting -------------------------------------------------------------

    def _level(self, priority: int) -> int:
        levels = len(self._levels)
        if levels == 1:
            return 0
        if priority == 0:
            priority = self.policy.default_priority or levels
        if not 1 <= priority <= levels:
            raise InvalidInput(
                f"priority {priority} is out of range; model '{self.name}' has priority levels "
                f"1 (highest) to {levels}"
            )
        return priority - 1

    async def _wait(
        self, future: asyncio.Future[Arrays], deadline: float | None, caller_gone: CallerGone | None
    ) -> Arrays:
        if caller_gone is None and deadline is None:
            return await future
        # Timer callbacks rather than asyncio.wait()/wait_for(): this runs for every queued
        # request, and those cost several microseconds more per call.
        loop = future.get_loop()
        stopper = _Stopper(future, caller_gone)
        watch = timer = None
        if caller_gone is not None:
            watch = loop.call_later(_WATCH_AFTER_S, stopper.watch)
        if deadline is not None:
            timer = loop.call_later(max(0.0, deadline - time.monotonic()), stopper.stop, False)
        try:
            return await future
        except asyncio.CancelledError:
            if stopper.caller_went is None:
                raise
            if stopper.caller_went:
                raise CallerGoneError(f"model '{self.name}': the caller went away") from None
            raise self._deadline_error() from None
        finally:
            if watch is not None:
                watch.cancel()
            if timer is not None:
                timer.cancel()
            if stopper.watcher is not None:
                stopper.watcher.cancel()

    def _deadline_error(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"model '{self.name}': deadline exceeded before the answer was ready"
        )

    def _forget(self, item: _Item) -> None:
        # A withdrawn request leaves the queue count at once; the item itself is dropped
        # lazily when the dispatcher meets it.
        with self._lock:
            if item.queued:
                item.queued = False
                self._queued -= 1

    def _retry_after(self) -> float:
        per_batch = self._ewma_s or 0.001
        return max(1.0, self._queued * per_batch / self._instances)

    # -- fast path -------------------------------------------------------------------------

    def _waits_for_batch(self) -> bool:
        return self.policy.merges and self.policy.max_queue_delay_s > 0

    async def _run_now(
        self,
        inputs: Arrays,
        deadline: float | None,
        caller_gone: CallerGone | None,
        trace: object,
    ) -> Arrays:
        rows = _rows(inputs)
        with self._lock:
            self._free -= 1
        if self._inline(rows):
            started = time.monotonic()
            failed = True
            try:
                outputs = self._timed(inputs, rows)
                failed = False
                return outputs
            finally:
                self._release()
                if self._observer is not None:
                    ran = time.monotonic()
                    timing = BatchTiming(rows, [0.0], [trace], started, started, ran, ran, failed)
                    self._observer(timing)
        loop = asyncio.get_running_loop()
        item = _Item(
            inputs, rows, (), loop.create_future(), time.monotonic(), deadline, False, trace
        )
        # The instance is free when the thread is done, not when the caller stops waiting.
        self._pool.submit(self._work, loop, [item])
        return await self._wait(item.future, deadline, caller_gone)

    def _release(self) -> None:
        with self._lock:
            self._free += 1
        if self._queued:
            self._wake()

    def _inline(self, rows: int) -> bool:
        if self._mode is ExecutionMode.INLINE:
            return True
        if self._mode is ExecutionMode.THREAD or self._ewma_s is None:
            return False
        # Scale the typical call by this batch's size, so that one unusually large request
        # to a fast model goes to a thread instead of stalling the event loop.
        predicted = self._ewma_s * max(1.0, rows / max(self._ewma_rows, 1.0))
        return predicted < _INLINE_BELOW_S

    def _timed(self, inputs: Arrays, rows: int) -> Arrays:
        start = time.perf_counter()
        try:
            return self._run_batch(inputs)
        finally:
            elapsed = time.perf_counter() - start
            if self._ewma_s is None:
                self._ewma_s, self._ewma_rows = elapsed, float(rows)
            else:
                self._ewma_s = 0.8 * self._ewma_s + 0.2 * elapsed
                self._ewma_rows = 0.8 * self._ewma_rows + 0.2 * rows

    # -- dispatcher ------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is None:
            # asyncio objects are created inside the running loop, on first use.
            self._wakeup = asyncio.Event()
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
        self._wakeup.set()

    async def _dispatch(self) -> None:
        assert self._wakeup is not None
        while not self._closed:
            await self._wakeup.wait()
            self._wakeup.clear()
            while True:
                with self._lock:
                    if not (self._free and self._queued):
                        break
                    head = self._head()
                    if head is None or not self._ready_to_send(head):
                        break
                    batch = self._take_batch(head)
                    if batch:
                        self._free -= 1  # reserved for this batch
                self._quiet_turns = 0
                if batch:
                    self._start(batch)

    def _head(self) -> _Item | None:
        """The oldest queued request of the highest level (lock held). Requests whose
        deadline has passed leave the queue unexecuted; their own timer answers them."""
        now = time.monotonic()
        for level in self._levels:
            while level and _withdrawn(level[0], now):
                item = level.popleft()
                if item.queued:
                    item.queued = False
                    self._queued -= 1
            if level:
                return level[0]
        return None

    def _ready_to_send(self, head: _Item) -> bool:
        if not self._waits_for_batch() or self._full_or_due(head):
            return True
        if self.policy.hold_for_delay:
            self._wake_when_due(head.arrival + self.policy.max_queue_delay_s)
            return False
        # Close the window early once nothing new has arrived for a few turns of the event
        # loop: waiting longer cannot fill the batch (a lone client, or every caller already
        # queued), it only adds latency. Under load, arrivals keep the window open.
        if self._arrivals != self._arrivals_seen:
            self._arrivals_seen = self._arrivals
            self._quiet_turns = 0
        else:
            self._quiet_turns += 1
            if self._quiet_turns >= _QUIET_TURNS:
                return True
        assert self._wakeup is not None
        asyncio.get_running_loop().call_soon(self._wakeup.set)
        return False

    def _wake_when_due(self, due: float) -> None:
        """One timer for the window of the current head (arrivals wake the dispatcher
        sooner); a head that changed gets a new one."""
        if self._window_timer is not None and self._window_due == due:
            return
        if self._window_timer is not None:
            self._window_timer.cancel()
        self._window_due = due
        self._window_timer = asyncio.get_running_loop().call_later(
            max(0.0, due - time.monotonic()), self._window_closed
        )

    def _window_closed(self) -> None:
        # The loop's timers may fire a little before time.monotonic() reaches `due` (uvloop
        # rounds to milliseconds): forget this timer, so that a head not yet due when the
        # dispatcher looks gets a new one instead of waiting for the next arrival.
        self._window_timer = None
        assert self._wakeup is not None
        self._wakeup.set()

    def _full_or_due(self, head: _Item) -> bool:
        """Whether the batch `head` starts is full or a preferred size, or its window has
        closed (lock held)."""
        policy = self.policy
        rows = sum(it.rows for lv in self._levels for it in lv if it.queued and it.key == head.key)
        if rows >= policy.max_batch_size or rows in policy.preferred_batch_sizes:
            return True
        return head.arrival + policy.max_queue_delay_s <= time.monotonic()

    def _take_ready(self) -> list[_Item]:
        """The next batch if it is ready now, else [] (lock held; any thread). Only the
        event loop's dispatcher closes a quiet window early."""
        if self._closed:
            return []
        head = self._head()
        if head is None or (self._waits_for_batch() and not self._full_or_due(head)):
            return []
        return self._take_batch(head)

    def _take_batch(self, head: _Item) -> list[_Item]:
        limit = self.policy.max_batch_size if self.policy.merges else head.rows
        batch: list[_Item] = []
        rows = 0
        now = time.monotonic()
        for level in self._levels:
            for item in level:
                if item.key != head.key or _withdrawn(item, now):
                    continue
                if batch and rows + item.rows > limit:
                    continue
                item.queued = False
                self._queued -= 1
                batch.append(item)
                rows += item.rows
                if rows >= limit:
                    break
            if rows >= limit:
                break
        return batch

    def _start(self, batch: list[_Item]) -> None:
        """Run `batch` on the instance slot reserved for it: inline, or on an instance thread."""
        if not self._inline(sum(it.rows for it in batch)):
            self._pool.submit(self._work, asyncio.get_running_loop(), batch)
            return
        answer, args = self._execute(batch)
        answer(*args)
        self._release()

    def _work(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        """An instance thread: run `batch`, then each batch that is ready by the time the
        previous one ends, until none is; then give the slot back and wake the dispatcher."""
        waiting = False
        while batch:
            answer, args = self._execute(batch)
            _to_loop(loop, answer, *args)
            with self._lock:
                batch = self._take_ready()
                if not batch:
                    self._free += 1
                    waiting = self._queued > 0
        if waiting:
            _to_loop(loop, self._wake)

    def _execute(self, batch: list[_Item]) -> tuple[Callable[..., None], tuple[Any, ...]]:
        """Join and run one batch; returns how to answer its callers (on the event loop).
        Never raises, so that no instance slot is lost and no caller is left waiting."""
        rows = [it.rows for it in batch]
        started = time.monotonic()
        try:
            inputs = _concat([it.inputs for it in batch])
        except Exception as exc:
            return self._fail, (batch, self._batch_error(exc), (started, started, started))
        joined = time.monotonic()
        try:
            with CallDeadline(_batch_deadline(batch)):
                outputs = self._timed(inputs, sum(rows))
        except Exception as exc:
            return self._fail, (batch, exc, (started, joined, time.monotonic()))
        return self._deliver, (batch, rows, outputs, (started, joined, time.monotonic()))

    def _batch_error(self, exc: Exception) -> InferenceFailed:
        return InferenceFailed(f"model '{self.name}': cannot form a batch: {exc}")

    def _deliver(
        self,
        batch: list[_Item],
        rows: list[int],
        outputs: Arrays,
        times: tuple[float, float, float] | None = None,
    ) -> None:
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            self._observe(batch, times, failed=False)
            return
        total = sum(rows)
        for name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != total:
                self._fail(
                    batch,
                    InferenceFailed(
                        f"model '{self.name}' returned output '{name}' with "
                        f"{array.shape[0] if array.ndim else 0} rows for a batch of {total}"
                    ),
                    times,
                )
                return
        offsets = list(itertools.accumulate(rows, initial=0))
        for item, start, stop in zip(batch, offsets, offsets[1:], strict=False):
            if not item.future.done():
                item.future.set_result({n: a[start:stop] for n, a in outputs.items()})
        self._observe(batch, times, failed=False)

    def _fail(
        self,
        batch: list[_Item],
        exc: BaseException,
        times: tuple[float, float, float] | None = None,
    ) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)
        self._observe(batch, times, failed=True)

    def _observe(
        self, batch: list[_Item], times: tuple[float, float, float] | None, *, failed: bool
    ) -> None:
        if self._observer is None or times is None:
            return
        started, joined, ran = times
        self._observer(
            BatchTiming(
                rows=sum(it.rows for it in batch),
                queue_waits=[max(0.0, started - it.arrival) for it in batch],
                traces=[it.trace for it in batch],
                started=started,
                joined=joined,
                ran=ran,
                ended=time.monotonic(),
                failed=failed,
            )
        )


def _withdrawn(item: _Item, now: float) -> bool:
    """Taken already, or answered without running (cancelled), or past its deadline."""
    return (
        not item.queued
        or item.future.done()
        or (item.deadline is not None and item.deadline <= now)
    )


class _Stopper:
    """Ends a request's wait early: its deadline passed, or its caller went away."""

    __slots__ = ("caller_gone", "caller_went", "future", "watcher")

    def __init__(self, future: asyncio.Future[Arrays], caller_gone: CallerGone | None) -> None:
        self.future = future
        self.caller_gone = caller_gone
        self.caller_went: bool | None = None  # why the wait ended early, once it has
        self.watcher: asyncio.Future[object] | None = None

    def stop(self, caller_went: bool) -> None:
        if not self.future.done():
            self.caller_went = caller_went
            self.future.cancel()

    def watch(self) -> None:
        assert self.caller_gone is not None
        self.watcher = asyncio.ensure_future(self.caller_gone())
        self.watcher.add_done_callback(self._watched)

    def _watched(self, watcher: asyncio.Future[object]) -> None:
        if not watcher.cancelled():
            watcher.exception()  # a failed watch also means nobody is listening
            self.stop(True)


def _to_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any) -> None:
    """Run `callback` on the event loop, from an instance thread."""
    # A closed loop raises RuntimeError: nobody is waiting for the answer any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _batch_deadline(batch: list[_Item]) -> float | None:
    """When nobody waits for the batch any more: its latest deadline (None if any has none)."""
    deadlines = [it.deadline for it in batch]
    return None if None in deadlines else max(d for d in deadlines if d is not None)


def _rows(inputs: Arrays) -> int:
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.ndim else 1


def _key(inputs: Arrays) -> tuple[Any, ...]:
    # Requests merge only when every non-batch dimension and dtype agree.
    return tuple([(name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()])


def _concat(parts: list[Arrays]) -> Arrays:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
