"""Servers under test: started in their own process group on free loopback ports, measured
through /proc, stopped by process group (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Server",
    "free_port",
    "http_ok",
    "launch",
    "process_group_cpu",
    "running",
]

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port that was free a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command (None when the process is gone):
    state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ..."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()


def live_stats() -> Iterator[tuple[int, list[bytes]]]:
    """Every process's pid and stat fields (as stat_fields), those that exit meanwhile left out."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := stat_fields(entry.name)) is not None:
            yield int(entry.name), fields


def process_group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every live process of a process group."""
    total = 0
    for _, fields in live_stats():
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Server:
    """A running server process group."""

    name: str
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int | None
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        if self.grpc_port is None:
            raise ValueError(f"{self.name} has no gRPC port")
        return f"127.0.0.1:{self.grpc_port}"

    def cpu_seconds(self) -> float:
        return process_group_cpu(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the whole group, wait `grace` seconds, then SIGKILL whatever is left."""
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        # Children that outlived the leader (a worker pool, tritonserver) share the group.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies count as alive to killpg; look for a live member.
    return any(int(fields[2]) == pgid and fields[0] != b"Z" for _, fields in live_stats())


_REST = re.compile(r"REST listening on http://[^:\s]+:(\d+)")
_GRPC = re.compile(r"gRPC listening on [^\s]+:(\d+)")


def launch(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    ready: Callable[[Server], bool],
    http_port: int | None = None,
    grpc_port: int | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 180.0,
    ports_from_log: bool = False,
) -> Server:
    """Start `argv` in a new session (its own process group) and wait until `ready(server)`.

    With `ports_from_log` the ports are read from inferbridge's start-up lines instead.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    process = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    log.close()
    server = Server(name, process, http_port or 0, grpc_port, log_path)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{server.log_tail()}")
            if ports_from_log and (server.http_port == 0 or server.grpc_port is None):
                text = log_path.read_text(errors="replace")
                if (m := _REST.search(text)) is not None:
                    server.http_port = int(m.group(1))
                if (m := _GRPC.search(text)) is not None:
                    server.grpc_port = int(m.group(1))
            elif ready(server):
                return server
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{server.log_tail()}")
    except BaseException:
        server.stop(grace=2)
        raise


@contextlib.contextmanager
def running(server_factory: Callable[[], Server]) -> Iterator[Server]:
    """Start a server for the duration of a block; always stop it."""
    server = server_factory()
    try:
        yield server
    finally:
        server.stop()
