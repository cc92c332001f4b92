"""The isolation pieces without a server: shared memory transport, config, factory,
supervisor calls and errors, the deadline hook."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbridge.errors import ConfigError, InferenceFailed, InvalidInput, ModelLoadError
from inferbridge.isolation.runtime import IsolatedRuntime, make_runtime
from inferbridge.isolation.supervisor import describe_exit
from inferbridge.isolation.transport import Region
from inferbridge.repository.config import ModelConfig, load_config
from inferbridge.runtimes.deadline import CallDeadline, current_deadline
from inferbridge.runtimes.native import NativeRuntime
from tests.isolation.support import assert_a_group_of_its_own_at_the_lowest_weight

ECHO = "tests.isolation.runtimes:Echo"


def config(**fields: Any) -> ModelConfig:
    document: dict[str, Any] = {
        "runtime": ECHO,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [
            {"name": "out", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "pid", "datatype": "INT64", "shape": [-1]},
        ],
        **fields,
    }
    return ModelConfig.model_validate(document)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(10, dtype=np.int64)[::2],  # not contiguous
        np.array([[True, False]]),
        np.zeros((0, 3), np.float16),
        np.array(7, np.uint8),
        np.array([b"abc", b""], dtype=object),
    ],
)
def test_region_round_trips_arrays(array: np.ndarray[Any, Any]) -> None:
    writer = Region.create("test", 4096)
    reader = Region(os.dup(writer.fd), 4096)
    try:
        slots, _ = writer.write({"a": array}, start=100)
        reader.follow(writer.size)
        got = reader.read(slots, copy=True)["a"]
        assert got.dtype == array.dtype and got.shape == array.shape
        assert got.tolist() == array.tolist()
    finally:
        writer.close()
        reader.close()


def test_region_grows_for_large_tensors_and_the_other_side_follows() -> None:
    writer = Region.create("test", 4096)
    reader = Region(os.dup(writer.fd), 4096)
    try:
        big = np.random.default_rng(0).random((512, 1024))  # 4 MiB
        slots, end = writer.write({"big": big, "small": np.ones(3)})
        assert writer.size >= end > big.nbytes
        reader.follow(writer.size)
        got = reader.read(slots, copy=False)
        np.testing.assert_array_equal(got["big"], big)
        np.testing.assert_array_equal(got["small"], np.ones(3))
    finally:
        writer.close()
        reader.close()


def test_isolation_shorthand_and_errors(tmp_path: Path) -> None:
    assert config(isolation="process").isolation.mode == "process"  # type: ignore[union-attr]
    assert config().isolation is None
    path = tmp_path / "config.yaml"
    path.write_text("runtime: native\nisolation: sideways\n")
    with pytest.raises(ConfigError, match=r"isolation\.mode"):
        load_config(path)
    path.write_text("runtime: native\nisolation: {max_crashes: 0}\n")
    with pytest.raises(ConfigError, match=r"isolation\.max_crashes"):
        load_config(path)


def test_native_defaults_to_a_worker_process_and_others_to_inline() -> None:
    native = config(runtime="native")
    assert isinstance(make_runtime(native), IsolatedRuntime)
    assert make_runtime(native).platform == "native"
    assert type(make_runtime(config(runtime="native", isolation="inline"))) is NativeRuntime
    assert not isinstance(make_runtime(config()), IsolatedRuntime)
    assert isinstance(make_runtime(config(isolation={"mode": "process"})), IsolatedRuntime)


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[IsolatedRuntime]:
    (tmp_path / "echo" / "1").mkdir(parents=True)
    cfg = config(isolation={"mode": "process", "backoff_initial_s": 0.01})
    runtime = make_runtime(cfg)
    assert isinstance(runtime, IsolatedRuntime)
    runtime.load(tmp_path / "echo" / "1", cfg, "cpu")
    yield runtime
    runtime.unload()


def test_calls_cross_to_the_worker_and_errors_keep_their_kind(echo: IsolatedRuntime) -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    got = echo.infer({"x": x})
    np.testing.assert_array_equal(got["out"], x)
    assert int(got["pid"][0]) != os.getpid()
    assert [s.name for s in echo.metadata().outputs] == ["out", "pid"]
    with pytest.raises(InvalidInput, match="negative one is not welcome"):
        echo.infer({"x": np.full((1, 2), -1, np.float32)})
    with pytest.raises(InferenceFailed, match=r"version 1 failed: ValueError: minus two breaks me"):
        echo.infer({"x": np.full((1, 2), -2, np.float32)})
    # The worker survives its runtime's exceptions.
    assert int(echo.infer({"x": x})["pid"][0]) == int(got["pid"][0])


def test_a_worker_that_exits_is_reported_and_replaced(echo: IsolatedRuntime) -> None:
    with pytest.raises(InferenceFailed, match="worker process exited with status 3"):
        echo.infer({"x": np.full((1, 2), -3, np.float32)})
    deadline = time.monotonic() + 60
    while echo.unavailable_reason() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert echo.unavailable_reason() == ""
    assert echo.supervisor is not None and echo.supervisor.restarts == 1
    np.testing.assert_array_equal(echo.infer({"x": np.ones((1, 2), np.float32)})["out"], 1)


def test_a_load_failure_in_the_worker_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    cfg = config(isolation="process", parameters={"fail_load": True})
    with pytest.raises(ModelLoadError, match="ValueError: this model does not load"):
        make_runtime(cfg).load(tmp_path / "m" / "1", cfg, "cpu")


def test_call_deadline_is_per_thread_and_nests() -> None:
    assert current_deadline() is None
    with CallDeadline(5.0):
        assert current_deadline() == 5.0
        with CallDeadline(None):
            assert current_deadline() is None
        assert current_deadline() == 5.0
    assert current_deadline() is None


def test_exits_are_described() -> None:
    assert describe_exit(-signal.SIGSEGV) == "the model's worker process died: signal 11 (SIGSEGV)"
    assert "out-of-memory" in describe_exit(-signal.SIGKILL)
    assert describe_exit(2) == "the model's worker process exited with status 2"
    assert describe_exit(-9, "it hung") == "the model's worker process was killed: it hung"


def test_an_array_already_in_the_region_is_sent_where_it_lies() -> None:
    region = Region.create("test", 4096)
    try:
        slots, _ = region.write({"a": np.arange(8, dtype=np.int32)}, start=64)
        view = region.read(slots, copy=False)["a"]
        assert region.slot_of("out", view) == ("out", view.dtype.str, (8,), 64, 32)
        assert region.slot_of("out", view[::2]) is None  # not contiguous
        assert region.slot_of("out", np.arange(8, dtype=np.int32)) is None
    finally:
        region.close()


def test_nice_lowers_the_workers_priority(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    cfg = config(isolation={"mode": "process", "nice": 7})
    runtime = make_runtime(cfg)
    assert isinstance(runtime, IsolatedRuntime)
    runtime.load(tmp_path / "m" / "1", cfg, "cpu")
    try:
        assert runtime.supervisor is not None and runtime.supervisor.pid is not None
        fields = Path(f"/proc/{runtime.supervisor.pid}/stat").read_text().rsplit(")", 1)[1]
        assert int(fields.split()[16]) - os.nice(0) == 7  # field 19 of stat: nice
    finally:
        runtime.unload()


def test_priority_idle_implies_a_worker_and_refuses_what_it_would_void(tmp_path: Path) -> None:
    assert isinstance(make_runtime(config(isolation={"priority": "idle"})), IsolatedRuntime)
    path = tmp_path / "config.yaml"
    path.write_text(f"runtime: {ECHO}\nisolation: {{mode: inline, priority: idle}}\n")
    with pytest.raises(ConfigError, match=r"priority: idle schedules a worker process"):
        load_config(path)
    path.write_text(f"runtime: {ECHO}\nisolation: {{priority: idle, nice: 5}}\n")
    with pytest.raises(ConfigError, match=r"nice 5 has no effect with priority: idle"):
        load_config(path)
    path.write_text(f"runtime: {ECHO}\nisolation: {{priority: lowest}}\n")
    with pytest.raises(ConfigError, match=r"isolation\.priority"):
        load_config(path)


def test_priority_idle_runs_every_thread_of_the_worker_under_sched_idle(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    cfg = config(isolation={"priority": "idle"}, instance_group=[{"count": 3}])
    runtime = make_runtime(cfg)
    assert isinstance(runtime, IsolatedRuntime)
    runtime.load(tmp_path / "m" / "1", cfg, "cpu")
    try:
        assert runtime.supervisor is not None and runtime.supervisor.pid is not None
        pid = runtime.supervisor.pid
        threads = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
        assert len(threads) >= 3  # the channels' threads, which inherit the main thread's
        assert {os.sched_getscheduler(tid) for tid in threads} == {os.SCHED_IDLE}
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the server's own is unchanged
        assert_a_group_of_its_own_at_the_lowest_weight(pid)
        x = np.ones((2, 2), np.float32)
        np.testing.assert_array_equal(runtime.infer({"x": x})["out"], x)
    finally:
        runtime.unload()


def test_a_worker_shares_the_servers_session_but_not_its_process_group(
    echo: IsolatedRuntime,
) -> None:
    # Linux's autogroup gives each session an equal CPU share: a worker in a session of its
    # own would void nice. Its own process group keeps a terminal's Ctrl-C off it.
    assert echo.supervisor is not None and echo.supervisor.pid is not None
    pid = echo.supervisor.pid
    assert os.getsid(pid) == os.getsid(0)
    assert os.getpgid(pid) == pid != os.getpgid(0)
