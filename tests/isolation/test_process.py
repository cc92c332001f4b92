"""`isolation: process` through a real server: a native library that segfaults, aborts,
hangs or allocates without bound fails only its own model's requests; the worker restarts
while readiness, the repository index and the metrics say so; a crash loop gives up."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.isolation.support import (
    ABORT,
    ALLOCATE,
    HANG,
    SEGFAULT,
    alive,
    answer,
    build_library,
    grpc_ready,
    identity_model,
    index_entry,
    infer,
    inflight_metric,
    model_state_metric,
    native_model,
    ready,
    wait_for,
    worker_pids,
)
from tests.runtimes.common import grpc_error
from tests.serverproc import ServerProcess, start_server

# A long first backoff leaves time to watch a model while it restarts.
WATCHED = "{mode: process, backoff_initial_s: 3, max_crashes: 10}"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.mktemp("native"))


@pytest.fixture(scope="module")
def server(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("isolation")
    native_model(root, "crashes", library, WATCHED)
    native_model(root, "hangs", library, WATCHED)
    native_model(root, "killed", library, WATCHED)
    native_model(root, "hangs_unbounded", library, "{call_timeout_s: 1, backoff_initial_s: 0.05}")
    native_model(root, "hog", library, "{memory_limit_mb: 1536, backoff_initial_s: 0.05}")
    native_model(
        root, "loops", library, "{max_crashes: 3, crash_window_s: 600, backoff_initial_s: 0.05}"
    )
    native_model(root, "neighbour", library)  # the native default: a worker process
    native_model(root, "unloads", library)
    native_model(root, "reloads", library)
    native_model(root, "inline_native", library, "inline")
    identity_model(root, "identity")
    proc = start_server(root, "--model-control-mode", "explicit", "--load-model", "*")
    yield proc
    proc.stop()


def restarted(server: ServerProcess, model: str) -> None:
    wait_for(lambda: ready(server, model), f"'{model}' is ready again")
    assert answer(infer(server, model, 2.0)) == 4.0


def test_native_runs_in_a_worker_by_default_and_inline_when_configured(
    server: ServerProcess,
) -> None:
    assert answer(infer(server, "neighbour", 1.5)) == 3.0
    assert answer(infer(server, "inline_native", 1.5)) == 3.0
    assert len(worker_pids(server, "neighbour")) == 1
    assert worker_pids(server, "inline_native") == []


def test_a_segfault_fails_its_request_and_the_worker_restarts(server: ServerProcess) -> None:
    response = infer(server, "crashes", SEGFAULT)
    assert response.status_code == 500, response.text
    assert "the model's worker process died: signal 11 (SIGSEGV)" in response.text
    # Not ready while it restarts, and every view of the model says why.
    wait_for(lambda: not ready(server, "crashes"), "'crashes' reports not ready")
    entry = index_entry(server, "crashes")
    assert entry["state"] == "UNAVAILABLE", entry
    assert "restarting" in entry["reason"] and "signal 11" in entry["reason"], entry
    assert model_state_metric(server, "crashes") == "unavailable"
    assert not grpc_ready(server, "crashes")
    refused = infer(server, "crashes", 1.0)
    assert refused.status_code == 503, refused.text
    assert "not ready" in refused.text and "signal 11" in refused.text
    restarted(server, "crashes")
    assert index_entry(server, "crashes")["state"] == "READY"
    assert model_state_metric(server, "crashes") == "ready"
    assert grpc_ready(server, "crashes")


def test_an_abort_is_internal_over_grpc(server: ServerProcess) -> None:
    wait_for(lambda: ready(server, "crashes"), "'crashes' is ready")
    status = grpc_error(server, "crashes", {"x": np.full((1, 1), ABORT, np.float32)}, ["y"])
    assert "INTERNAL" in status, status
    assert "the model's worker process died: signal 6 (SIGABRT)" in status
    restarted(server, "crashes")


def test_other_models_keep_answering_while_one_crashes(server: ServerProcess) -> None:
    wait_for(lambda: ready(server, "crashes"), "'crashes' is ready")
    failures: list[str] = []
    answered = {"neighbour": 0, "identity": 0}
    stop = threading.Event()

    def hammer(model: str) -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            while not stop.is_set():
                body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [3]}]}
                response = client.post(f"/v2/models/{model}/infer", json=body)
                if response.status_code != 200:
                    failures.append(f"{model}: {response.status_code} {response.text}")
                else:
                    answered[model] += 1

    threads = [threading.Thread(target=hammer, args=(m,)) for m in answered]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: min(answered.values()) > 5, "the other models answer")
        before = dict(answered)
        crashed = infer(server, "crashes", SEGFAULT)
        assert crashed.status_code == 500, crashed.text
        # ... and through the whole restart.
        wait_for(lambda: not ready(server, "crashes"), "'crashes' reports not ready")
        wait_for(lambda: ready(server, "crashes"), "'crashes' is ready again")
        wait_for(
            lambda: all(answered[m] > before[m] + 5 for m in answered),
            "the other models answer after the restart",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []


def test_a_worker_killed_like_the_oom_killer_does_fails_its_call(server: ServerProcess) -> None:
    (pid,) = worker_pids(server, "killed")
    hanging: list[httpx.Response] = []
    call = threading.Thread(target=lambda: hanging.append(infer(server, "killed", HANG)))
    call.start()
    wait_for(lambda: inflight_metric(server, "killed") == 1, "the call is in flight")
    os.kill(pid, signal.SIGKILL)
    call.join(60)
    (response,) = hanging
    assert response.status_code == 500, response.text
    assert "signal 9 (SIGKILL, perhaps by the kernel's out-of-memory killer)" in response.text
    restarted(server, "killed")
    # An idle worker's death is noticed too.
    (pid,) = worker_pids(server, "killed")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not ready(server, "killed"), "'killed' reports not ready")
    assert "signal 9" in index_entry(server, "killed")["reason"]
    restarted(server, "killed")


def test_unbounded_allocation_meets_the_memory_cap(server: ServerProcess) -> None:
    response = infer(server, "hog", ALLOCATE)
    assert response.status_code == 500, response.text
    assert "the model's worker process died: signal" in response.text
    restarted(server, "hog")


def test_a_hang_past_the_deadline_is_504_and_the_worker_restarts(server: ServerProcess) -> None:
    response = infer(server, "hangs", HANG, timeout_us=1_000_000)
    assert response.status_code == 504, response.text
    wait_for(lambda: not ready(server, "hangs"), "'hangs' reports not ready")
    reason = index_entry(server, "hangs")["reason"]
    assert "killed" in reason and "deadline" in reason, reason
    restarted(server, "hangs")


def test_a_hang_without_deadline_is_killed_after_call_timeout(server: ServerProcess) -> None:
    response = infer(server, "hangs_unbounded", HANG)
    assert response.status_code == 500, response.text
    assert "call_timeout_s (1 s)" in response.text
    restarted(server, "hangs_unbounded")


def test_a_crash_loop_leaves_the_model_unavailable_with_the_reason(
    server: ServerProcess,
) -> None:
    for _ in range(3):
        wait_for(lambda: ready(server, "loops"), "'loops' is ready")
        response = infer(server, "loops", SEGFAULT)
        assert response.status_code == 500, response.text
    wait_for(lambda: "crash loop" in index_entry(server, "loops")["reason"], "'loops' gives up")
    entry = index_entry(server, "loops")
    assert entry["state"] == "UNAVAILABLE"
    assert "failed 3 times within 600 s" in entry["reason"] and "signal 11" in entry["reason"]
    assert worker_pids(server, "loops") == []
    refused = infer(server, "loops", 1.0)
    assert refused.status_code == 503 and "crash loop" in refused.text, refused.text
    assert not ready(server, "loops")
    # Reloading tries again.
    httpx.post(f"{server.base_url}/v2/repository/models/loops/load", timeout=60).raise_for_status()
    restarted(server, "loops")


def test_unload_stops_the_worker(server: ServerProcess) -> None:
    (pid,) = worker_pids(server, "unloads")
    unloaded = httpx.post(f"{server.base_url}/v2/repository/models/unloads/unload", timeout=60)
    unloaded.raise_for_status()
    wait_for(lambda: not alive(pid), "the unloaded model's worker exits")


def test_a_reload_replaces_the_worker(server: ServerProcess) -> None:
    (old,) = worker_pids(server, "reloads")
    loaded = httpx.post(f"{server.base_url}/v2/repository/models/reloads/load", timeout=60)
    loaded.raise_for_status()
    wait_for(lambda: not alive(old), "the replaced version's worker exits")
    (new,) = worker_pids(server, "reloads")
    assert new != old
    assert answer(infer(server, "reloads", 2.5)) == 5.0


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_workers_die_with_the_server(library: Path, tmp_path: Path, how: int) -> None:
    native_model(tmp_path, "one", library)
    native_model(tmp_path, "two", library, "{mode: process}")
    proc = start_server(tmp_path)
    try:
        pids = worker_pids(proc)
        assert len(pids) == 2
    finally:
        proc.stop(how)
    for pid in pids:
        wait_for(lambda pid=pid: not alive(pid), f"worker {pid} exits with the server")
