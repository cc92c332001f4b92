"""The scheduler's behaviour (not its timing): batches form, results reach the right caller,
failures reach every caller of a batch, bounds, deadlines, cancellation and priorities."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from inferbridge.batching.scheduler import BatchPolicy, ExecutionMode, Scheduler
from inferbridge.errors import CallerGoneError, DeadlineExceeded, InferenceFailed, QueueFull

Arrays = dict[str, np.ndarray[Any, Any]]


class Model:
    """Doubles `x`; records every batch; can be held on a gate to build up a queue."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on: float | None = None
        self.rows_out: int | None = None

    def __call__(self, inputs: Arrays) -> Arrays:
        x = inputs["x"]
        self.batches.append([float(v) for v in x[:, 0]])
        self.entered.set()
        self.gate.wait(10)
        if self.fail_on is not None and self.fail_on in x:
            raise InferenceFailed("boom")
        y = x * 2
        if self.rows_out is not None:
            y = y[: self.rows_out]
        return {"y": y}


def _x(value: float, rows: int = 1, width: int = 2) -> Arrays:
    return {"x": np.full((rows, width), value, dtype=np.float32)}


def _scheduler(
    model: Model, mode: ExecutionMode = ExecutionMode.THREAD, **policy: Any
) -> Scheduler:
    return Scheduler(model, policy=BatchPolicy(**policy), instances=1, mode=mode, name="m")


async def _hold(model: Model, scheduler: Scheduler) -> asyncio.Task[Arrays]:
    """Occupy the single instance until model.gate is set."""
    model.gate.clear()
    model.entered.clear()
    task = asyncio.ensure_future(scheduler.submit(_x(-1)))
    await asyncio.to_thread(model.entered.wait, 5)
    return task


async def test_batches_form_and_results_go_back_to_their_callers() -> None:
    model = Model()
    scheduler = _scheduler(model, max_batch_size=8, max_queue_delay_s=0.5)
    results = await asyncio.gather(*(scheduler.submit(_x(float(i))) for i in range(8)))
    assert model.batches == [[float(i) for i in range(8)]]  # one batch: max_batch_size reached
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1, 2), 2.0 * i))
    scheduler.close()


async def test_rows_are_counted_and_requests_with_other_shapes_are_not_merged() -> None:
    model = Model()
    scheduler = _scheduler(model, max_batch_size=4, max_queue_delay_s=0.05)
    results = await asyncio.gather(
        scheduler.submit(_x(1, rows=3)),
        scheduler.submit(_x(2, rows=1, width=5)),
        scheduler.submit(_x(3, rows=1)),
    )
    assert sorted(model.batches) == [[1.0, 1.0, 1.0, 3.0], [2.0]]
    assert results[0]["y"].shape == (3, 2) and results[1]["y"].shape == (1, 5)
    scheduler.close()


async def test_a_failure_reaches_every_caller_of_its_batch() -> None:
    model = Model()
    model.fail_on = 3.0
    scheduler = _scheduler(model, max_batch_size=4, max_queue_delay_s=0.5)
    results = await asyncio.gather(
        *(scheduler.submit(_x(float(i))) for i in range(4)), return_exceptions=True
    )
    assert all(isinstance(r, InferenceFailed) for r in results)
    assert len(model.batches) == 1
    scheduler.close()


async def test_output_batch_length_is_checked() -> None:
    model = Model()
    model.rows_out = 1
    scheduler = _scheduler(model, max_batch_size=2, max_queue_delay_s=0.5)
    results = await asyncio.gather(
        scheduler.submit(_x(1)), scheduler.submit(_x(2)), return_exceptions=True
    )
    assert all(
        isinstance(r, InferenceFailed) and "1 rows for a batch of 2" in str(r) for r in results
    )
    scheduler.close()


async def test_a_full_queue_refuses_at_once() -> None:
    model = Model()
    scheduler = _scheduler(model, max_queue_size=2)
    running = await _hold(model, scheduler)
    queued = [asyncio.ensure_future(scheduler.submit(_x(float(i)))) for i in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull, match="queue is full"):
        await scheduler.submit(_x(9))
    model.gate.set()
    await asyncio.gather(running, *queued)
    assert [b[0] for b in model.batches] == [-1.0, 0.0, 1.0]
    scheduler.close()


async def test_a_deadline_that_passes_in_the_queue_is_never_executed() -> None:
    model = Model()
    scheduler = _scheduler(model)
    running = await _hold(model, scheduler)
    with pytest.raises(DeadlineExceeded):
        await scheduler.submit(_x(7), deadline=time.monotonic() + 0.05)
    assert scheduler.queued == 0
    model.gate.set()
    await running
    await scheduler.submit(_x(8))
    assert [b[0] for b in model.batches] == [-1.0, 8.0]
    scheduler.close()


async def test_a_deadline_during_execution_answers_before_the_batch_ends() -> None:
    model = Model()
    scheduler = _scheduler(model)
    model.gate.clear()
    with pytest.raises(DeadlineExceeded):
        await scheduler.submit(_x(1), deadline=time.monotonic() + 0.05)
    assert not model.gate.is_set()  # the model is still running: we did not wait for it
    model.gate.set()
    scheduler.close()


async def test_a_deadline_already_past_is_refused() -> None:
    scheduler = _scheduler(Model())
    with pytest.raises(DeadlineExceeded, match="on arrival"):
        await scheduler.submit(_x(1), deadline=time.monotonic() - 1)
    scheduler.close()


async def test_cancelling_removes_queued_work() -> None:
    model = Model()
    scheduler = _scheduler(model)
    running = await _hold(model, scheduler)
    waiting = asyncio.ensure_future(scheduler.submit(_x(5)))
    await asyncio.sleep(0.01)
    assert scheduler.queued == 1
    waiting.cancel()
    await asyncio.sleep(0)
    assert scheduler.queued == 0
    model.gate.set()
    await running
    await scheduler.submit(_x(6))
    assert [b[0] for b in model.batches] == [-1.0, 6.0]
    scheduler.close()


async def test_a_caller_that_goes_away_has_its_queued_work_removed() -> None:
    model = Model()
    scheduler = _scheduler(model)
    running = await _hold(model, scheduler)
    gone = asyncio.Event()
    waiting = asyncio.ensure_future(scheduler.submit(_x(5), caller_gone=gone.wait))
    await asyncio.sleep(0.02)  # long enough for the request to start watching its caller
    assert scheduler.queued == 1
    gone.set()
    with pytest.raises(CallerGoneError):
        await waiting
    assert scheduler.queued == 0
    model.gate.set()
    await running
    await scheduler.submit(_x(6), caller_gone=asyncio.Event().wait)
    assert [b[0] for b in model.batches] == [-1.0, 6.0]
    scheduler.close()


async def test_an_instance_thread_starts_the_next_ready_batch_itself() -> None:
    model = Model()
    scheduler = _scheduler(model)
    running = await _hold(model, scheduler)
    queued = [asyncio.ensure_future(scheduler.submit(_x(v))) for v in (1, 2, 3)]
    await asyncio.sleep(0.01)
    assert scheduler.queued == 3
    model.gate.set()
    # The event loop is blocked from here on: only the instance thread can start batches.
    deadline = time.monotonic() + 5
    while len(model.batches) < 4 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert [b[0] for b in model.batches] == [-1.0, 1.0, 2.0, 3.0]
    assert [(await t)["y"][0, 0] for t in queued] == [2.0, 4.0, 6.0]
    await running
    scheduler.close()


async def test_priorities_order_the_queue() -> None:
    model = Model()
    scheduler = _scheduler(model, priority_levels=3, default_priority=3)
    running = await _hold(model, scheduler)
    low = asyncio.ensure_future(scheduler.submit(_x(3)))  # default: level 3, the lowest
    await asyncio.sleep(0)
    middle = asyncio.ensure_future(scheduler.submit(_x(2), priority=2))
    await asyncio.sleep(0)
    high = asyncio.ensure_future(scheduler.submit(_x(1), priority=1))
    await asyncio.sleep(0)
    model.gate.set()
    await asyncio.gather(running, low, middle, high)
    assert [b[0] for b in model.batches] == [-1.0, 1.0, 2.0, 3.0]
    with pytest.raises(Exception, match="priority 4 is out of range"):
        await scheduler.submit(_x(1), priority=4)
    scheduler.close()


@pytest.mark.parametrize("mode", [ExecutionMode.INLINE, ExecutionMode.AUTO])
async def test_inline_and_auto_execution_give_the_same_answers(mode: ExecutionMode) -> None:
    model = Model()
    scheduler = _scheduler(model, mode, max_batch_size=4, max_queue_delay_s=0.01)
    for _ in range(3):
        results = await asyncio.gather(*(scheduler.submit(_x(float(i))) for i in range(6)))
        assert [float(r["y"][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert max(len(b) for b in model.batches) > 1
    scheduler.close()


@pytest.mark.parametrize("mode", [ExecutionMode.AUTO, ExecutionMode.THREAD])
async def test_an_empty_first_batch_does_not_break_the_scheduler(mode: ExecutionMode) -> None:
    model = Model()
    scheduler = _scheduler(model, mode)
    for _ in range(3):
        result = await scheduler.submit(_x(1, rows=0))
        assert result["y"].shape == (0, 2)
    result = await scheduler.submit(_x(2, rows=5))
    assert result["y"].shape == (5, 2)
    scheduler.close()


async def test_a_lone_request_is_sent_once_arrivals_go_quiet() -> None:
    # The default: waiting longer could not fill the batch, so it leaves well before the
    # 1 s window closes.
    model = Model()
    scheduler = _scheduler(model, max_batch_size=8, max_queue_delay_s=1.0)
    start = time.monotonic()
    await scheduler.submit(_x(1))
    assert time.monotonic() - start < 0.5
    scheduler.close()


async def test_hold_for_delay_waits_the_whole_window_for_a_preferred_size() -> None:
    # Triton's rule: a batch that is neither full nor a preferred size waits the window.
    model = Model()
    scheduler = _scheduler(
        model,
        max_batch_size=8,
        max_queue_delay_s=0.3,
        preferred_batch_sizes=(4,),
        hold_for_delay=True,
    )
    start = time.monotonic()
    await asyncio.gather(*(scheduler.submit(_x(float(i))) for i in range(2)))
    assert time.monotonic() - start >= 0.29
    assert model.batches == [[0.0, 1.0]]
    # A preferred size is sent at once.
    start = time.monotonic()
    await asyncio.gather(*(scheduler.submit(_x(float(i))) for i in range(4)))
    assert time.monotonic() - start < 0.2
    assert model.batches[-1] == [0.0, 1.0, 2.0, 3.0]
    scheduler.close()


async def test_hold_for_delay_with_a_queue_of_one_refuses_a_spaced_second_request() -> None:
    # Triton's QA (L0_http test_descriptive_status_code): max_queue_size 1, a 1 s delay,
    # preferred size 8; a second request 0.2 s after the first finds the queue full.
    model = Model()
    scheduler = _scheduler(
        model,
        max_batch_size=8,
        max_queue_delay_s=1.0,
        preferred_batch_sizes=(8,),
        max_queue_size=1,
        hold_for_delay=True,
    )
    first = asyncio.ensure_future(scheduler.submit(_x(1)))
    await asyncio.sleep(0.2)
    with pytest.raises(QueueFull):
        await scheduler.submit(_x(2))
    await first
    assert model.batches == [[1.0]]
    # Without it the first request is long gone by then, and the second is served.
    model = Model()
    eager = _scheduler(model, max_batch_size=8, max_queue_delay_s=1.0, max_queue_size=1)
    first = asyncio.ensure_future(eager.submit(_x(1)))
    await asyncio.sleep(0.2)
    assert first.done()
    await eager.submit(_x(2))
    assert model.batches == [[1.0], [2.0]]
    scheduler.close()
    eager.close()


async def test_hold_for_delay_serves_a_later_head_on_its_own_window() -> None:
    # The head's window timer follows the head: a request that is withdrawn leaves the
    # next one to wait for its own window, not the withdrawn one's.
    model = Model()
    scheduler = _scheduler(model, max_batch_size=8, max_queue_delay_s=0.2, hold_for_delay=True)
    gone = asyncio.ensure_future(scheduler.submit(_x(1)))
    await asyncio.sleep(0.05)
    gone.cancel()
    start = time.monotonic()
    await scheduler.submit(_x(2))
    assert 0.15 <= time.monotonic() - start < 0.5
    assert model.batches == [[2.0]]
    scheduler.close()


def test_hold_for_delay_never_strands_a_batch_on_uvloop() -> None:
    # uvloop's timers may fire a little before time.monotonic() reaches the window's end;
    # the dispatcher must then wait again, not leave the batch until the next arrival.
    import uvloop

    async def run() -> int:
        model = Model()
        scheduler = _scheduler(
            model, max_batch_size=8, max_queue_delay_s=0.0015, hold_for_delay=True
        )
        answered = 0
        for i in range(150):
            await asyncio.wait_for(scheduler.submit(_x(float(i))), timeout=5)
            answered += 1
        scheduler.close()
        return answered

    assert uvloop.run(run()) == 150
