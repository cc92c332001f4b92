"""Helpers of the fault isolation tests: the misbehaving native library, models, polling."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from inferbridge.examples.builders.native import SOURCES
from inferbridge.repository.config import ModelConfig
from tests.serverproc import ServerProcess

HERE = Path(__file__).resolve().parent
SEGFAULT, ABORT, HANG, ALLOCATE = 666.0, 667.0, 888.0, 999.0
IO = (
    "inputs: [{name: x, datatype: FP32, shape: [-1, 1]}]\n"
    "outputs: [{name: y, datatype: FP32, shape: [-1, 1]}]\n"
)
# Safe model loading requires a native library to be trusted or pinned (when it is there).
TRUST = "trust_pickle: true\n" if "trust_pickle" in ModelConfig.model_fields else ""


def build_library(target: Path) -> Path:
    """Compile faulty.c with the system gcc into `target`/faulty.so."""
    gcc = shutil.which("gcc")
    if gcc is None:
        import pytest

        pytest.skip("the fault isolation tests build a native library with gcc")
    target.mkdir(parents=True, exist_ok=True)
    library = target / "faulty.so"
    subprocess.run(
        [gcc, "-O0", "-shared", "-fPIC", f"-I{SOURCES}", "-o", str(library), HERE / "faulty.c"],
        check=True,
        capture_output=True,
    )
    return library


def native_model(root: Path, name: str, library: Path, isolation: str = "") -> None:
    """A model `name` serving `library`, with config.yaml's `isolation` line (or none)."""
    (root / name / "1").mkdir(parents=True)
    shutil.copy(library, root / name / "1" / "model.so")
    line = f"isolation: {isolation}\n" if isolation else ""
    (root / name / "config.yaml").write_text(f"runtime: native\n{TRUST}{line}{IO}")


def identity_model(root: Path, name: str) -> None:
    """An inline model (no worker process) beside the isolated ones."""
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.yaml").write_text(f"runtime: tests.support.runtimes:Identity\n{IO}")


def infer(
    server: ServerProcess, model: str, value: float, *, timeout_us: int = 0
) -> httpx.Response:
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [value]}]
    }
    if timeout_us:
        body["parameters"] = {"timeout": timeout_us}
    return httpx.post(f"{server.base_url}/v2/models/{model}/infer", json=body, timeout=60)


def answer(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text
    return float(response.json()["outputs"][0]["data"][0])


def ready(server: ServerProcess, model: str) -> bool:
    response = httpx.get(f"{server.base_url}/v2/models/{model}/ready", timeout=10)
    return response.status_code == 200


def grpc_ready(server: ServerProcess, model: str) -> bool:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        return bool(client.is_model_ready(model))
    finally:
        client.close()


def index_entry(server: ServerProcess, model: str) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}/v2/repository/index", json={}, timeout=10)
    response.raise_for_status()
    entries = [e for e in response.json() if e["name"] == model]
    assert len(entries) == 1, entries
    entry: dict[str, Any] = entries[0]
    return entry


def model_state_metric(server: ServerProcess, model: str) -> str:
    """The state whose inferbridge_model_state sample is 1 for `model` version 1."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if (
            line.startswith("inferbridge_model_state{")
            and f'model="{model}"' in line
            and 'version="1"' in line
            and line.endswith(" 1.0")
        ):
            return line.split('state="')[1].split('"')[0]
    return ""


def inflight_metric(server: ServerProcess, model: str) -> float:
    """inferbridge_inflight_requests of `model` version 1."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if (
            line.startswith("inferbridge_inflight_requests{")
            and f'model="{model}"' in line
            and 'version="1"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    """Poll `condition` until it holds; a loaded machine gets generous time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


def worker_pids(server: ServerProcess, model: str = "") -> list[int]:
    """The server's worker processes (of `model`, when given), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if (
            parent == server.process.pid
            and "inferbridge.isolation.worker" in command
            and (not model or _serves(int(entry.name), model))
        ):
            pids.append(int(entry.name))
    return pids


def _serves(pid: int, model: str) -> bool:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return f"/{model}/1/model.so" in maps


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_a_group_of_its_own_at_the_lowest_weight(pid: int) -> None:
    """An idle worker leads a session of its own; where the kernel has autogroup, that
    session's group is at nice 19, so its CPU is not taken from the server's group."""
    assert os.getsid(pid) == pid
    autogroup = Path(f"/proc/{pid}/autogroup")
    if autogroup.exists():
        assert autogroup.read_text().split()[-1] == "19", autogroup.read_text()
        assert autogroup.read_text() != Path("/proc/self/autogroup").read_text()
