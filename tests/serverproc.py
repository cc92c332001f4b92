"""Start a real `inferbridge serve` subprocess on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_REST = re.compile(r"REST listening on (https?)://([^:]+):(\d+)")
_GRPC = re.compile(r"gRPC listening on ([^\s]+):(\d+)")


@dataclass
class ServerProcess:
    """A running server; `output` collects every line it printed."""

    process: subprocess.Popen[str]
    http_port: int
    grpc_port: int
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.reader is not None:
            self.reader.join(timeout=10)
        return self.process.returncode


def start_server(
    repository: Path | None = None,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = 120,
) -> ServerProcess:
    """Run `python -m inferbridge serve` with ports 0 and wait until it reports serving."""
    command = [sys.executable, "-m", "inferbridge", "serve", "--http-port", "0", "--grpc-port", "0"]
    if repository is not None:
        command.insert(4, str(repository))
    command.extend(args)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    output: list[str] = []
    serving = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            if "inferbridge: serving" in line:
                serving.set()
        process.stdout.close()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    http_port = grpc_port = None
    tls = False
    while time.monotonic() < deadline and (http_port is None or grpc_port is None):
        if process.poll() is not None:
            time.sleep(0.2)
            raise RuntimeError("inferbridge exited early:\n" + "\n".join(output))
        for line in list(output):
            if (m := _REST.search(line)) is not None:
                tls, http_port = m.group(1) == "https", int(m.group(3))
            if (m := _GRPC.search(line)) is not None:
                grpc_port = int(m.group(2))
        time.sleep(0.05)
    if http_port is None or grpc_port is None:
        process.kill()
        raise RuntimeError("inferbridge did not report its ports:\n" + "\n".join(output))
    server = ServerProcess(process, http_port, grpc_port, output, reader)
    if wait_ready and not serving.wait(max(0.0, deadline - time.monotonic())):
        server.stop(signal.SIGKILL)
        raise RuntimeError("inferbridge did not start serving:\n" + "\n".join(output))
    if wait_ready and not tls:  # a TLS server's clients bring their own CA (tests/security)
        httpx.get(f"{server.base_url}/v2/health/live", timeout=5).raise_for_status()
    return server
