"""Supervises the worker process of one isolated model version.

It starts the worker (which loads the model), hands each call a free channel, and turns a
worker's death into that call's error. A thread per worker waits for it to exit: a worker
that dies (a signal, an out-of-memory kill, or killed here for running past a deadline)
is restarted after an exponential backoff, and the model is not ready meanwhile. When
`max_crashes` failures fall within `crash_window_s`, it is a crash loop: the model stays
unavailable, with the reason, until it is reloaded. Stopping closes the pipe whose end
of file tells the worker to exit (the same pipe tells it when the server dies).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from inferbridge import errors
from inferbridge.errors import DeadlineExceeded, InferBridgeError, InferenceFailed, ModelNotReady
from inferbridge.isolation.process import Channel, WorkerProcess, describe_exit
from inferbridge.isolation.transport import ChannelClosed, Message, Region
from inferbridge.repository.config import Isolation
from inferbridge.runtimes.base import Arrays, Signature

__all__ = ["Supervisor", "WorkerSpec", "WorkerStartError", "WorkerState", "describe_exit"]

logger = logging.getLogger(__name__)

_LOAD_TIMEOUT_S = 600.0
_EXIT_WAIT_S = 10.0


class WorkerState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"  # a crash loop: not restarted
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker loads, and how it is supervised."""

    label: str  # "model 'm' version 1": the start of every message about it
    config_json: str
    model_dir: Path
    device: str
    instances: int
    options: Isolation


class WorkerStartError(Exception):
    """The worker did not start or did not load the model; the message says why."""


class Supervisor:
    """Runs one model version in a supervised worker process."""

    def __init__(self, spec: WorkerSpec) -> None:
        self._spec = spec
        self._options = spec.options
        self._lock = threading.Lock()
        self._state = WorkerState.STARTING
        self._reason = "the model's worker process is starting"
        self._worker: WorkerProcess | None = None
        self._failures: deque[float] = deque()
        self._stopping = threading.Event()
        self.restarts = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Signature:
        """Start the first worker and load the model in it; WorkerStartError says why not."""
        worker, signature = self._spawn()
        self._publish(worker)
        return signature

    def stop(self) -> None:
        """Stop the worker (unload, reload, shutdown); no restart follows."""
        self._stopping.set()
        with self._lock:
            worker, self._worker = self._worker, None
            self._state, self._reason = WorkerState.STOPPED, "unloaded"
        if worker is not None:
            worker.stop()

    @property
    def state(self) -> WorkerState:
        return self._state

    def unavailable_reason(self) -> str:
        with self._lock:
            return "" if self._state is WorkerState.READY else self._reason

    @property
    def pid(self) -> int | None:
        worker = self._worker
        return worker.process.pid if worker is not None else None

    # -- calls -----------------------------------------------------------------------------

    def call(self, inputs: Arrays, deadline: float | None) -> Arrays:
        """Run one batch in the worker. Its death fails the call with InferenceFailed; a
        call still running at `deadline` (or after call_timeout_s without one) kills it."""
        label = self._spec.label
        with self._lock:
            worker = self._worker
            if worker is None or self._state is not WorkerState.READY:
                raise ModelNotReady(f"{label} is not ready: {self._reason}")
        try:
            channel = worker.take()
        except ChannelClosed:
            raise InferenceFailed(f"{label}: {self._death(worker)}") from None
        reusable = True
        try:
            timeout, why, by_deadline = self._timeout(deadline)
            try:
                reply = channel.infer(inputs, timeout)
            except TimeoutError:
                # The answer may still come before the kill lands: nobody may read it.
                reusable = False
                worker.kill(why)
                if by_deadline:
                    raise DeadlineExceeded(
                        f"{label}: the deadline passed while the model's worker process ran "
                        "the request; the worker was killed and restarts"
                    ) from None
                raise InferenceFailed(f"{label}: {describe_exit(None, why)}") from None
            except ChannelClosed:
                raise InferenceFailed(f"{label}: {self._death(worker)}") from None
        finally:
            worker.give(channel, reusable=reusable)
        if reply[0] == "ok":
            outputs: Arrays = reply[1]
            return outputs
        raise self._remote_error(reply)

    def _timeout(self, deadline: float | None) -> tuple[float | None, str, bool]:
        """How long a call may run, why the worker is killed after that, and whether it is
        the requests' deadline (else call_timeout_s)."""
        limit = self._options.call_timeout_s
        if deadline is not None:
            left = max(0.001, deadline - time.monotonic())
            if not limit or left <= limit:
                return left, "a call ran past its requests' deadline", True
        if not limit:
            return None, "", False
        return limit, f"a call ran longer than call_timeout_s ({limit:g} s)", False

    def _death(self, worker: WorkerProcess) -> str:
        try:
            code: int | None = worker.process.wait(_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            code = None
        return describe_exit(code, worker.killed_for)

    def _remote_error(self, reply: Message) -> InferBridgeError:
        _, kind, type_name, text = reply
        if kind == "domain":
            cls: Any = getattr(errors, type_name, None)
            if isinstance(cls, type) and issubclass(cls, InferBridgeError):
                error: InferBridgeError = cls(text)
                return error
        # The words an inline runtime's exception gets (dataplane.executor.VersionRunner).
        return InferenceFailed(f"{self._spec.label} failed: {type_name}: {text}")

    # -- workers ---------------------------------------------------------------------------

    def _spawn(self) -> tuple[WorkerProcess, Signature]:
        spec = self._spec
        life_read, life_write = os.pipe()
        channels: list[Channel] = []
        theirs: list[socket.socket] = []
        try:
            command = [sys.executable, "-m", "inferbridge.isolation.worker"]
            command += ["--life-fd", str(life_read)]
            for index in range(spec.instances):
                ours, their_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                theirs.append(their_end)
                region = Region.create(f"inferbridge {spec.label} #{index}")
                channels.append(Channel(ours, region))
                command += ["--channel", f"{their_end.fileno()}:{region.fd}"]
            if spec.options.memory_limit_mb:
                command += ["--memory-limit-mb", str(spec.options.memory_limit_mb)]
            if spec.options.nice:
                command += ["--nice", str(spec.options.nice)]
            if spec.options.priority != "normal":
                command += ["--priority", spec.options.priority]
            idle = spec.options.priority == "idle"
            passed = (life_read, *(s.fileno() for s in theirs), *(c.region.fd for c in channels))
            process = subprocess.Popen(
                command,
                pass_fds=passed,
                # A terminal's Ctrl-C must reach the server alone: a process group of its
                # own at least. Linux's autogroup makes each session a group with an equal
                # CPU share whatever the niceness inside it: a `nice` worker stays in the
                # server's session, to yield to the server; an idle one leaves it, to be
                # a group of its own at the lowest weight (worker.py), so that the CPU it
                # uses is not taken from the server's group's share.
                process_group=None if idle else 0,
                start_new_session=idle,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            )
        except OSError as exc:
            os.close(life_write)
            for channel in channels:
                channel.close()
            raise WorkerStartError(f"cannot start the model's worker process: {exc}") from None
        finally:
            os.close(life_read)
            for sock in theirs:
                sock.close()
        worker = WorkerProcess(process, life_write, channels)
        load = ("load", spec.config_json, str(spec.model_dir), spec.device)
        try:
            reply = channels[0].request(load, _LOAD_TIMEOUT_S)
        except ChannelClosed:
            message = f"{self._death(worker)} while loading the model"
            worker.stop()
            raise WorkerStartError(message) from None
        except TimeoutError:
            worker.stop()
            raise WorkerStartError(
                f"the model's worker process did not load the model in {_LOAD_TIMEOUT_S:g} s"
            ) from None
        if reply[0] != "loaded":
            worker.stop()
            _, kind, type_name, text = reply
            raise WorkerStartError(text if kind == "domain" else f"{type_name}: {text}")
        signature: Signature = reply[1]
        return worker, signature

    def _publish(self, worker: WorkerProcess) -> None:
        with self._lock:
            if self._stopping.is_set():
                published = False
            else:
                self._worker, published = worker, True
                self._state, self._reason = WorkerState.READY, ""
        if not published:
            worker.stop()
            return
        threading.Thread(
            target=self._watch, args=(worker,), name=f"{self._spec.label} worker", daemon=True
        ).start()

    def _watch(self, worker: WorkerProcess) -> None:
        code = worker.process.wait()
        worker.retire()
        with self._lock:
            if self._worker is not worker:
                return  # stopped, or replaced already
            self._worker = None
            self._failed(describe_exit(code, worker.killed_for))

    def _failed(self, cause: str) -> None:
        """Record a failure (lock held): restart after a backoff, or give up on a loop."""
        now = time.monotonic()
        options = self._options
        self._failures.append(now)
        while self._failures and self._failures[0] < now - options.crash_window_s:
            self._failures.popleft()
        count = len(self._failures)
        label = self._spec.label
        if count >= options.max_crashes:
            self._state = WorkerState.FAILED
            self._reason = (
                f"crash loop: the model's worker process failed {count} times within "
                f"{options.crash_window_s:g} s (last: {cause}); it is not restarted: "
                "reload the model to try again"
            )
            logger.error("%s: %s", label, self._reason, extra={"event": "crash_loop"})
            return
        delay = min(options.backoff_max_s, options.backoff_initial_s * 2 ** (count - 1))
        self._state = WorkerState.RESTARTING
        self._reason = f"restarting the model's worker process (after: {cause})"
        logger.warning(
            "%s: %s; restart in %.3g s", label, cause, delay, extra={"event": "worker_died"}
        )
        threading.Thread(
            target=self._restart, args=(delay,), name=f"{label} restart", daemon=True
        ).start()

    def _restart(self, delay: float) -> None:
        if self._stopping.wait(delay):
            return
        try:
            worker, _ = self._spawn()
        except WorkerStartError as exc:
            with self._lock:
                if not self._stopping.is_set():
                    self._failed(f"the restart failed: {exc}")
            return
        self.restarts += 1
        self._publish(worker)
        logger.info(
            "%s: the model's worker process restarted (pid %d)",
            self._spec.label,
            worker.process.pid,
            extra={"event": "worker_restarted"},
        )
