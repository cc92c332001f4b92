"""The worker process of an isolated model: `python -m inferbridge.isolation.worker`.

The supervisor starts it with `--life-fd` (the read end of a pipe whose write end only the
server holds: end of file means the server is gone, and the worker exits at once, even in
the middle of a call), one `--channel SOCKET:MEMFD` per instance of the model, and
optionally `--memory-limit-mb` (an address-space cap, set before the model loads),
`--nice` (a lower CPU priority, so that a busy model yields the CPU to the server) and
`--priority idle` (SCHED_IDLE: it runs only when no other task wants the CPU). The
first message on the first channel names the model to load; then each channel serves
infer calls on a thread of its own until the server closes it.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
import resource
import socket
import sys
import threading
from pathlib import Path

import numpy as np

from inferbridge.errors import InferBridgeError, ModelLoadError
from inferbridge.isolation.transport import (
    ChannelClosed,
    Message,
    Region,
    Slot,
    recv_message,
    send_message,
)
from inferbridge.repository.config import ModelConfig
from inferbridge.runtimes.base import Runtime
from inferbridge.runtimes.registry import runtime_class

__all__ = ["error_reply", "main"]

_MESSAGE_CHARS = 8000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferbridge.isolation.worker")
    parser.add_argument("--life-fd", type=int, required=True)
    parser.add_argument("--channel", action="append", required=True, metavar="SOCKET:MEMFD")
    parser.add_argument("--memory-limit-mb", type=float, default=0.0)
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--priority", choices=("normal", "idle"), default="normal")
    options = parser.parse_args(argv)
    faulthandler.enable()  # a crash prints the Python stack to the server's log first
    refused: Exception | None = None
    if options.priority == "idle":
        try:
            _idle_priority()
        except OSError as exc:  # a seccomp profile may forbid it: the load says so
            refused = ModelLoadError(f"isolation: priority: idle could not be set: {exc}")
    if options.nice:
        os.nice(options.nice)
    threading.Thread(target=_exit_with_server, args=(options.life_fd,), daemon=True).start()
    if options.memory_limit_mb > 0:
        cap = int(options.memory_limit_mb * (1 << 20))
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    channels = [_open(text) for text in options.channel]
    runtime = _load(*channels[0], refused)
    if runtime is None:
        return 1
    for sock, region in channels[1:]:
        threading.Thread(target=_serve, args=(runtime, sock, region), daemon=True).start()
    _serve(runtime, *channels[0])
    return 0


def error_reply(exc: BaseException) -> Message:
    """An exception as the message that reports it: the server raises the same domain
    error, or reports the runtime's own exception by its type and text."""
    kind = "domain" if isinstance(exc, InferBridgeError) else "raised"
    text = exc.message if isinstance(exc, InferBridgeError) else str(exc)
    return ("error", kind, type(exc).__name__, text[:_MESSAGE_CHARS])


def _idle_priority() -> None:
    """SCHED_IDLE for every thread: those already running (numpy's BLAS pool starts at
    import) one by one; those started later (the channels', a runtime's own such as the
    wasm epoch ticker) inherit it from the thread that starts them. Where the kernel's
    autogroup is on, the worker's session (its own: the supervisor starts it so) is also a
    scheduling group, competing with the server's and every other session's: it gets the
    lowest weight (autogroup nice 19), since SCHED_IDLE only ranks threads within a group."""
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setscheduler(int(task.name), os.SCHED_IDLE, os.sched_param(0))
    autogroup = Path("/proc/self/autogroup")
    if autogroup.exists():  # a kernel built with it; inert when off or inside a cgroup
        autogroup.write_text("19")


def _exit_with_server(fd: int) -> None:
    try:
        while os.read(fd, 1):
            pass
    finally:
        os._exit(0)


def _open(text: str) -> tuple[socket.socket, Region]:
    sock_fd, memfd = (int(part) for part in text.split(":"))
    sock = socket.socket(fileno=sock_fd)
    return sock, Region(memfd, os.fstat(memfd).st_size)


def _load(sock: socket.socket, region: Region, refused: Exception | None) -> Runtime | None:
    try:
        _, config_json, model_dir, device = recv_message(sock)
    except ChannelClosed:
        os._exit(0)
    try:
        if refused is not None:
            raise refused
        config = ModelConfig.model_validate_json(config_json)
        runtime = runtime_class(config.runtime)()
        runtime.load(Path(model_dir), config, device)
        signature = runtime.metadata()
    except Exception as exc:
        send_message(sock, error_reply(exc))
        return None
    send_message(sock, ("loaded", signature))
    return runtime


def _serve(runtime: Runtime, sock: socket.socket, region: Region) -> None:
    while True:
        try:
            _, slots, size = recv_message(sock)
        except ChannelClosed:
            os._exit(0)  # the server closed the channel: unload, shutdown or restart
        region.follow(size)
        reply = _infer(runtime, region, slots)
        try:
            send_message(sock, reply)
        except ChannelClosed:
            os._exit(0)


def _infer(runtime: Runtime, region: Region, slots: list[Slot]) -> Message:
    try:
        inputs = region.read(slots, copy=False)
        outputs = {name: np.asarray(value) for name, value in runtime.infer(inputs).items()}
        # An output that is an input view (an identity model) is sent where it lies; the
        # others are written after the inputs, so none overwrites another.
        found: list[Slot] = []
        copied = {}
        for name, array in outputs.items():
            slot = region.slot_of(name, array)
            if slot is None:
                copied[name] = array
            else:
                found.append(slot)
        end = max((at + nbytes for _, _, _, at, nbytes in slots), default=0)
        written, _ = region.write(copied, start=end)
    except Exception as exc:
        return error_reply(exc)
    return ("ok", found + written, region.size)


if __name__ == "__main__":
    sys.exit(main())
