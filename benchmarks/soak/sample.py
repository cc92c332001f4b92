"""What the soak watches: every process of the server (the Python process, the Go front-end
process, isolation workers) read from /proc, and the server's TCP connections.

Isolation workers run in sessions of their own (a terminal's Ctrl-C reaches the server
alone), so the process tree is walked by parent id, not by process group.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from benchmarks.procs import live_stats, stat_fields

__all__ = [
    "GO",
    "PYTHON",
    "ROLES",
    "WORKER",
    "ProcessSample",
    "Sample",
    "Sampler",
    "take_sample",
]

_TICKS = os.sysconf("SC_CLK_TCK")
PYTHON, GO, WORKER, OTHER = "Python server", "Go front end", "isolation workers", "other children"
#: The roles in the order the report lists them.
ROLES = (PYTHON, GO, WORKER, OTHER)
#: /proc/net/tcp states (include/net/tcp_states.h).
_ESTABLISHED, _CLOSE_WAIT, _LISTEN = "01", "08", "0A"


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    role: str
    rss_bytes: int
    fds: int
    threads: int
    cpu_s: float  # user + system seconds since the process started
    client_sockets: int = 0  # of the fds: sockets that are neither listeners nor Unix sockets


@dataclass
class Sample:
    """One look at the server, `t` seconds after the soak's load began (negative: before)."""

    t: float
    processes: list[ProcessSample]
    connections: int  # ESTABLISHED TCP sockets on the server's ports (the server's side)
    close_wait: int  # CLOSE_WAIT ones: the client closed and the server did not (a leak)
    load_1min: float
    machine_busy_s: float  # CPU seconds all cores have been busy since boot
    phase: str = "load"  # "before", "load" or "after"

    def total(self, role: str, what: str) -> float:
        return float(sum(getattr(p, what) for p in self.processes if p.role == role))

    def count(self, role: str) -> int:
        return sum(1 for p in self.processes if p.role == role)

    def as_dict(self) -> dict[str, object]:
        return {
            "t": round(self.t, 3),
            "phase": self.phase,
            "connections": self.connections,
            "close_wait": self.close_wait,
            "load_1min": self.load_1min,
            "machine_busy_s": self.machine_busy_s,
            "processes": [p.__dict__ for p in self.processes],
        }


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for pid, fields in live_stats():
        tree.setdefault(int(fields[1]), []).append(pid)
    return tree


def _descendants(root: int) -> list[int]:
    tree = _children()
    found, todo = [root], [root]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _role(pid: int, root: int) -> str:
    if pid == root:
        return PYTHON
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return OTHER
    if argv and os.path.basename(argv[0]) == b"inferbridge-gateway":
        return GO
    if b"inferbridge.isolation.worker" in argv:
        return WORKER
    return OTHER


def _process(pid: int, role: str, not_clients: set[str]) -> ProcessSample | None:
    """None when the process ended while it was being read (a worker being replaced)."""
    try:
        rss = threads = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        # Only the fds still open once read: with thousands of connections coming and
        # going, one closed between the listing and its readlink would count as the
        # process's own (neither a client socket nor gone).
        fds = client_sockets = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                fds += 1
                if target.startswith("socket:[") and target[8:-1] not in not_clients:
                    client_sockets += 1
    except (OSError, ValueError):
        return None
    fields = stat_fields(pid)
    if fields is None or fields[0] == b"Z":
        return None
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    return ProcessSample(pid, role, rss, fds, threads, cpu, client_sockets)


def _tcp_states(ports: Iterable[int]) -> tuple[int, int, set[str]]:
    """ESTABLISHED and CLOSE_WAIT sockets on the server's ports, and the inodes of the
    sockets that are not client connections: the listeners and every Unix socket (the Go
    front end's channel to Python). Any other socket a process holds is a client's, even
    one a reset already took out of the kernel's tables."""
    wanted = {f"{port:04X}" for port in ports}
    established = close_wait = 0
    not_clients: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
                    parts = line.split()
                    if parts[3] == _LISTEN:
                        not_clients.add(parts[9])
                    elif parts[1].rsplit(":", 1)[1] not in wanted:
                        continue
                    elif parts[3] == _ESTABLISHED:
                        established += 1
                    elif parts[3] == _CLOSE_WAIT:
                        close_wait += 1
        except OSError:
            continue
    try:
        with open("/proc/net/unix") as f:
            next(f)
            # Num RefCount Protocol Flags Type St Inode [Path]
            not_clients.update(parts[6] for line in f if len(parts := line.split()) > 6)
    except OSError:
        pass
    return established, close_wait, not_clients


def machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS


def take_sample(root: int, ports: Iterable[int], t: float, phase: str = "load") -> Sample:
    established, close_wait, not_clients = _tcp_states(ports)
    processes = [
        sample
        for pid in _descendants(root)
        if (sample := _process(pid, _role(pid, root), not_clients)) is not None
    ]
    return Sample(
        t=t,
        processes=processes,
        connections=established,
        close_wait=close_wait,
        load_1min=os.getloadavg()[0],
        machine_busy_s=machine_busy(),
        phase=phase,
    )


@dataclass
class Sampler:
    """Samples the server every `every` seconds on a thread, from `started` (monotonic)."""

    root: int
    ports: tuple[int, ...]
    every: float
    started: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = 0
        while True:
            self.samples.append(take_sample(self.root, self.ports, time.monotonic() - self.started))
            tick += 1
            # On a schedule from the start, so that a slow read does not shift later ones.
            if self._stop.wait(max(0.0, self.started + tick * self.every - time.monotonic())):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
