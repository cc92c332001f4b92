"""The WASM sandbox under attack: 100 concurrent hostile calls (infinite loops, memory
bombs) each fail alone, and the server's other model answers correctly all the while,
whether the hostile models run in the server or in worker processes under SCHED_IDLE
(`isolation: {priority: idle}`). How much the other model's latency suffers is measured
by benchmarks/isolation.py, not asserted here."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from inferbridge.examples.build import iris_split
from tests.isolation.support import assert_a_group_of_its_own_at_the_lowest_weight, worker_pids
from tests.runtimes.common import infer_http
from tests.runtimes.test_wasm import GRAB, IO, LOOP, in_process
from tests.serverproc import ServerProcess, start_server

pytest.importorskip("wasmtime")

HOSTILE_CALLS = 100
ROW = [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]


def hostile_model(root: Path, name: str, wat: str, parameters: str, isolation: str = "") -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "1" / "model.wat").write_text(wat)
    (root / name / "config.yaml").write_text(
        f"runtime: wasm\nmodel_file: model.wat\nparameters: {parameters}\n"
        "instance_group: [{count: 2}]\n" + (f"isolation: {isolation}\n" if isolation else "") + IO
    )


@pytest.fixture(scope="module")
def sandbox(examples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not (examples_dir / "iris_wasm").exists():
        pytest.skip("wasm example not built")
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(examples_dir / "iris_wasm", root / "iris_wasm")
    hostile_model(root, "loops", LOOP, "{fuel: 1000000000000000, timeout_ms: 100}")
    hostile_model(root, "bombs", GRAB, "{memory_limit_mb: 32}")
    niced = "{mode: process, nice: 19}"
    hostile_model(root, "loops_apart", LOOP, "{fuel: 1000000000000000, timeout_ms: 100}", niced)
    idle = "{priority: idle}"
    hostile_model(root, "loops_idle", LOOP, "{fuel: 1000000000000000, timeout_ms: 100}", idle)
    hostile_model(root, "bombs_idle", GRAB, "{memory_limit_mb: 32}", idle)
    yield root


@pytest.fixture(scope="module")
def server(sandbox: Path) -> Iterator[ServerProcess]:
    proc = start_server(sandbox)
    yield proc
    proc.stop()


@pytest.mark.parametrize("placement", ["", "_idle"], ids=["in the server", "priority idle"])
def test_hostile_calls_fail_alone_and_the_other_model_answers(
    sandbox: Path, server: ServerProcess, placement: str
) -> None:
    X = iris_split()[1][:3]
    want = in_process(sandbox / "iris_wasm", {"input": X})

    def attack(number: int) -> httpx.Response:
        model = ("loops" if number % 2 else "bombs") + placement
        return httpx.post(
            f"{server.base_url}/v2/models/{model}/infer", json={"inputs": ROW}, timeout=120
        )

    answered_during = 0
    with ThreadPoolExecutor(max_workers=HOSTILE_CALLS) as pool:
        attacks = [pool.submit(attack, n) for n in range(HOSTILE_CALLS)]
        while not all(a.done() for a in attacks):
            got = infer_http(server, "iris_wasm", {"input": X}, ["scores", "label"])
            np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6, atol=1e-5)
            np.testing.assert_array_equal(got["label"], want["label"])
            answered_during += 1
        responses = [a.result() for a in attacks]
    assert answered_during >= 1
    for number, response in enumerate(responses):
        assert response.status_code == 500, response.text
        fragment = "wall-clock limit" if number % 2 else "memory reached the cap"
        assert fragment in response.text, response.text
    assert server.alive()


def test_a_sandbox_in_a_niced_worker_process_keeps_its_limits(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/v2/models/loops_apart/infer", json={"inputs": ROW}, timeout=120
    )
    assert response.status_code == 500, response.text
    assert "exceeded its wall-clock limit of 100 ms" in response.text


def serving(pid: int, model: str) -> bool:
    """Whether worker `pid` serves `model`: its channels' memfd regions carry the label."""
    try:
        return f"model '{model}' version 1" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_priority_idle_puts_the_sandboxs_workers_under_sched_idle(server: ServerProcess) -> None:
    workers = worker_pids(server)
    for model, policy in [
        ("loops_idle", os.SCHED_IDLE),
        ("bombs_idle", os.SCHED_IDLE),
        ("loops_apart", os.SCHED_OTHER),
    ]:
        serving_it = [pid for pid in workers if serving(pid, model)]
        assert len(serving_it) == 1, (model, workers)
        pid = serving_it[0]
        threads = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
        # Every thread: the two channels' and the wasm epoch ticker among them.
        assert len(threads) >= 3
        assert {os.sched_getscheduler(tid) for tid in threads} == {policy}, model
        if policy == os.SCHED_IDLE:
            assert_a_group_of_its_own_at_the_lowest_weight(pid)
        else:  # nice only ranks it against the server within one session (autogroup)
            assert os.getsid(pid) == os.getsid(server.process.pid)
    assert os.sched_getscheduler(server.process.pid) == os.SCHED_OTHER


@pytest.mark.parametrize("timeout_ms", [30, 200])
def test_the_wall_clock_limit_holds_whatever_the_tick(tmp_path: Path, timeout_ms: int) -> None:
    from inferbridge.repository.config import load_config
    from inferbridge.runtimes.wasm import WasmModelError, WasmRuntime

    hostile_model(tmp_path, "loops", LOOP, f"{{fuel: 1000000000000000, timeout_ms: {timeout_ms}}}")
    runtime = WasmRuntime()
    runtime.load(tmp_path / "loops" / "1", load_config(tmp_path / "loops" / "config.yaml"), "cpu")
    try:
        began = time.monotonic()
        with pytest.raises(WasmModelError, match=f"wall-clock limit of {timeout_ms} ms"):
            runtime.infer({"input": np.ones((1, 4), np.float32)})
        assert time.monotonic() - began >= timeout_ms / 1000
    finally:
        runtime.unload()
