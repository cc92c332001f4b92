"""Real processes for the pool gateway's tests: the gateway itself (`inferbridge gateway
--config`), the fault proxy (`python -m benchmarks.faults`), and small repositories of
test models."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

_ROOT = Path(__file__).resolve().parents[2]
ECHO = "runtime: tests.support.runtimes:SleepEcho\nmax_batch_size: 8\n"


def echo_repository(root: Path, models: dict[str, str]) -> Path:
    """A repository of SleepEcho models: name -> extra config lines."""
    for name, extra in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.yaml").write_text(ECHO + extra)
    return root


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    """Poll until condition() is truthy (never a timed assertion: only a generous cap)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Proc:
    """A child process whose stdout lines are collected."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def pump(self) -> None:
        def run() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
            self.process.stdout.close()

        self.reader = threading.Thread(target=run, daemon=True)
        self.reader.start()

    def line(self, prefix: str, timeout: float = 120) -> str:
        def found() -> str | None:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}: {self.lines}")
            return None

        result: str = wait_for(found, timeout, f"{prefix!r} from {self.process.args}")
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.reader is not None:
            self.reader.join(10)


@dataclass
class Gateway(Proc):
    http: str = ""
    grpc: str = ""

    @property
    def base(self) -> str:
        return f"http://{self.http}"

    def upstreams(self) -> dict[str, dict[str, Any]]:
        body = httpx.get(f"{self.base}/v1/gateway/upstreams", timeout=10).json()
        return {u["name"]: u for u in body["upstreams"]}

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels`."""
        total = 0.0
        for line in httpx.get(f"{self.base}/metrics", timeout=10).text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            series, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total


def start_gateway(config: str, directory: Path) -> Gateway:
    """`inferbridge gateway --config` on a config text (listen on ports 0 by default)."""
    path = directory / "gateway.yaml"
    path.write_text(config)
    process = subprocess.Popen(
        [sys.executable, "-m", "inferbridge", "gateway", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=_ROOT,
    )
    gw = Gateway(process)
    gw.pump()
    gw.http = gw.line("listening-http ").split()[1]
    gw.grpc = gw.line("listening ").split()[1]
    return gw


_FAST_HEALTH = "health: {interval: 100ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}\n"


def gateway_config(upstreams: list[dict[str, str]], extra: str = "") -> str:
    """A config listening on ports 0, with fast health checks and discovery."""
    ups = "\n".join(f"  - {json.dumps(u)}" for u in upstreams)
    return (
        "listen: {http: '127.0.0.1:0', grpc: '127.0.0.1:0'}\n"
        f"upstreams:\n{ups}\n"
        "discovery: {interval: 200ms}\n"
        + (
            extra
            or "health: {interval: 100ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}\n"
        )
    )


@dataclass
class Faults(Proc):
    address: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def set(self, **settings: Any) -> None:
        httpx.put(f"{self.url}/_faults", json=settings, timeout=10).raise_for_status()

    def log(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = httpx.get(f"{self.url}/_faults/log", timeout=10).json()
        return entries

    def requests(self, path_part: str = "/infer") -> list[dict[str, Any]]:
        return [e for e in self.log() if "event" not in e and path_part in e["path"]]


def start_faults(upstream: str, *args: str) -> Faults:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.faults", "--upstream", upstream, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=_ROOT,
    )
    proxy = Faults(process)
    proxy.pump()
    proxy.address = proxy.line("faults listening ").split()[2]
    return proxy


def infer_body(value: float = 1.0, timeout_us: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [value, value]}]
    }
    if timeout_us is not None:
        body["parameters"] = {"timeout": timeout_us}
    return body
