"""The server's side of one worker process: its channels, its life pipe, how it ended.

A channel carries one call at a time (a request, then its answer); a worker has one per
instance of the model. The life pipe's write end is the server's only: closing it (or the
server dying) makes the worker exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading

from inferbridge.isolation.transport import (
    ChannelClosed,
    Message,
    Region,
    recv_message,
    send_message,
)
from inferbridge.runtimes.base import Arrays

__all__ = ["Channel", "WorkerProcess", "describe_exit"]

_STOP_TIMEOUT_S = 5.0


def describe_exit(code: int | None, killed_for: str = "") -> str:
    """How a worker process ended, in the words its requests' errors use."""
    if killed_for:
        return f"the model's worker process was killed: {killed_for}"
    if code is None:
        return "the model's worker process stopped answering"
    if code < 0:
        number = -code
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        if number == signal.SIGKILL:
            name += ", perhaps by the kernel's out-of-memory killer"
        return f"the model's worker process died: signal {number} ({name})"
    return f"the model's worker process exited with status {code}"


class Channel:
    """The server's end of one channel: at most one call at a time."""

    def __init__(self, sock: socket.socket, region: Region) -> None:
        self.sock = sock
        self.region = region

    def request(self, message: Message, timeout: float | None) -> Message:
        send_message(self.sock, message)
        return recv_message(self.sock, timeout)

    def infer(self, inputs: Arrays, timeout: float | None) -> Message:
        slots, _ = self.region.write(inputs)
        reply = self.request(("infer", slots, self.region.size), timeout)
        if reply[0] == "ok":
            self.region.follow(reply[2])
            return ("ok", self.region.read(reply[1], copy=True))
        return reply

    def close(self) -> None:
        self.sock.close()
        self.region.close()


class WorkerProcess:
    """One worker process and the server's ends of its channels."""

    def __init__(self, process: subprocess.Popen[bytes], life_fd: int, channels: list[Channel]):
        self.process = process
        self.channels = channels
        self.killed_for = ""
        self._life_fd: int | None = life_fd
        self._free = list(channels)
        self._ready = threading.Condition()
        self._gone = False

    def take(self) -> Channel:
        with self._ready:
            while not self._free and not self._gone:
                self._ready.wait()
            if self._gone:
                raise ChannelClosed("the worker process is gone")
            return self._free.pop()

    def give(self, channel: Channel, *, reusable: bool = True) -> None:
        """A call is done with `channel`; one that may hold an unread answer is closed."""
        with self._ready:
            if self._gone or not reusable:
                channel.close()
            else:
                self._free.append(channel)
                self._ready.notify()

    def retire(self) -> None:
        """The process has exited (or is being stopped): close what it leaves behind;
        channels still in a call are closed when their callers give them back."""
        with self._ready:
            if self._gone:
                return
            self._gone = True
            for channel in self._free:
                channel.close()
            self._free.clear()
            if self._life_fd is not None:
                os.close(self._life_fd)
                self._life_fd = None
            self._ready.notify_all()

    def kill(self, why: str) -> None:
        self.killed_for = why
        self.process.kill()  # Popen does nothing once it has reaped the process

    def stop(self) -> None:
        """End of file on the life pipe makes the worker exit; kill it if it does not."""
        self.retire()
        try:
            self.process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
