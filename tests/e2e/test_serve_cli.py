"""`inferbridge serve` as a user runs it: a subprocess, no arguments, stopped by a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.serverproc import start_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_with_no_arguments(sig: int) -> None:
    # Ports come from the environment so that the test never collides with a real 8000/8001.
    server = start_server(env={"INFERBRIDGE_HTTP_PORT": "0", "INFERBRIDGE_GRPC_PORT": "0"})
    try:
        [ready_line] = [line for line in server.output if "models ready:" in line]
        for model in ("digits (v1)", "iris (v1)", "iris_onnx (v1)"):
            assert model in ready_line
        response = httpx.post(f"{server.base_url}/predict", json=[5.1, 3.5, 1.4, 0.2])
        assert response.json() == {"class": 0}
    finally:
        code = server.stop(sig)
    assert code == 0
    assert "inferbridge: stopped" in server.output


@pytest.mark.slow
def test_shutdown_finishes_requests_in_flight(tmp_path: Path) -> None:
    (tmp_path / "slow" / "1").mkdir(parents=True)
    (tmp_path / "slow" / "config.yaml").write_text(
        "runtime: tests.support.runtimes:SleepEcho\nparameters: {sleep_s: 1.5}\n"
    )
    server = start_server(tmp_path, env={"PYTHONPATH": str(ROOT)})
    results: list[int] = []
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}

    def call() -> None:
        results.append(
            httpx.post(f"{server.base_url}/v2/models/slow/infer", json=body, timeout=30).status_code
        )

    caller = threading.Thread(target=call)
    caller.start()
    threading.Event().wait(0.5)
    code = server.stop(signal.SIGTERM)
    caller.join()
    assert results == [200]
    assert code == 0


def test_cli_rejects_a_missing_repository(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inferbridge", "serve", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert result.returncode == 2
    assert "is not a directory" in result.stderr
