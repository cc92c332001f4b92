"""The model manager in-process: swaps, drains, failures that keep the old version,
serialised changes, the poll mode's reconcile, and the dataplane over it."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import orjson
import pytest

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.errors import (
    ConfigError,
    InvalidInput,
    ModelBusy,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    RepositoryNotModifiable,
)
from inferbridge.models.manager import ControlMode, ModelManager
from inferbridge.protocol.types import InferenceRequest

RUNTIME = "tests.support.runtimes:VersionedEcho"


def write_model(root: Path, name: str, versions: dict[int, str], extra: str = "") -> Path:
    model = root / name
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.yaml").write_text(
        f"runtime: {RUNTIME}\nmax_batch_size: 8\nversion_policy: {{all: {{}}}}\n{extra}"
    )
    for number, value in versions.items():
        (model / str(number)).mkdir(exist_ok=True)
        (model / str(number) / "value.txt").write_text(value)
    return model


def request(name: str, x: float = 1.0, version: str | None = None) -> InferenceRequest:
    return InferenceRequest(
        model_name=name,
        model_version=version,
        inputs={"x": np.array([[x]], dtype=np.float32)},
        input_datatypes={"x": "FP32"},
    )


async def answer(dataplane: DataPlane, name: str, version: str | None = None) -> tuple[str, float]:
    response = await dataplane.infer(request(name, 1.0, version))
    return response.model_version, float(response.outputs[0].data[0, 0])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


def plane(repo: Path, mode: ControlMode = ControlMode.EXPLICIT) -> tuple[ModelManager, DataPlane]:
    manager = ModelManager(repo, drain_timeout_s=5)
    return manager, DataPlane(manager, control_mode=mode)


async def test_load_new_version_becomes_default_and_old_unloads(repo: Path) -> None:
    write_model(repo, "m", {1: "10"})
    manager, dp = plane(repo)
    await dp.load_model("m", {}, base64_files=False)
    assert await answer(dp, "m") == ("1", 11.0)
    old = manager.views["m"].versions[1]
    write_model(repo, "m", {2: "20"})
    await dp.load_model("m", {}, base64_files=False)
    assert await answer(dp, "m") == ("2", 21.0)
    assert await answer(dp, "m", "1") == ("1", 11.0)  # policy `all` keeps serving v1
    assert old.loaded.runtime is None  # the explicit load reloaded v1 beside the old one
    assert [e.state for e in dp.repository_index()] == ["READY", "READY"]
    await manager.shutdown()


async def test_swap_waits_for_requests_in_flight(repo: Path) -> None:
    write_model(repo, "m", {1: "1"}, "parameters: {sleep_s: 0.3}\n")
    manager, dp = plane(repo)
    await dp.load_model("m", {}, base64_files=False)
    in_flight = asyncio.ensure_future(answer(dp, "m"))
    await asyncio.sleep(0.05)
    assert manager.views["m"].versions[1].inflight == 1
    (repo / "m" / "1" / "value.txt").write_text("2")
    await dp.load_model("m", {}, base64_files=False)  # returns after the old one drained
    assert in_flight.done()
    assert in_flight.result() == ("1", 2.0)  # answered by the old instance
    assert await answer(dp, "m") == ("1", 3.0)
    await manager.shutdown()


async def test_broken_new_version_leaves_the_old_serving(repo: Path) -> None:
    write_model(repo, "m", {1: "5"})
    manager, dp = plane(repo)
    await dp.load_model("m", {}, base64_files=False)
    write_model(repo, "m", {2: "not a number"})
    with pytest.raises(ModelLoadError, match="not a number"):
        await dp.load_model("m", {}, base64_files=False)
    assert await answer(dp, "m") == ("1", 6.0)
    index = {(e.version, e.state) for e in dp.repository_index()}
    assert index == {("1", "READY"), ("2", "UNAVAILABLE")}
    with pytest.raises(ModelNotReady, match="not a number"):
        await answer(dp, "m", "2")
    await manager.shutdown()


async def test_config_override_and_files_from_the_request(repo: Path) -> None:
    manager, dp = plane(repo)
    config = orjson.dumps({"runtime": RUNTIME, "max_batch_size": 4}).decode()
    files = {"file:3/value.txt": base64.b64encode(b"100").decode()}
    await dp.load_model("sent", {"config": config, **files}, base64_files=True)
    assert await answer(dp, "sent") == ("3", 101.0)
    assert dp.model_settings("sent")["max_batch_size"] == 4
    override_dir = manager.views["sent"].override_dir
    assert override_dir is not None and override_dir.exists()
    await dp.unload_model("sent", {})
    assert not override_dir.exists()
    with pytest.raises(ModelNotFound):
        await answer(dp, "sent")
    await manager.shutdown()


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"config": "{not json"}, "not valid JSON"),
        ({"config": '{"runtime": "x", "bogus": 1}'}, "field 'bogus'"),
        ({"config": "[1]"}, "must be a JSON object"),
        ({"file:1/value.txt": "AAAA"}, "need a 'config' parameter"),
        ({"config": '{"runtime": "x"}', "file:../escape.txt": "AAAA"}, "relative to the model"),
        ({"config": '{"runtime": "x"}', "file:/etc/passwd": "AAAA"}, "relative to the model"),
        ({"config": '{"runtime": "x"}', "file:1/value.txt": "not base64!"}, "not valid base64"),
        ({"colour": "blue"}, "unknown load parameter 'colour'"),
    ],
)
async def test_bad_load_parameters_are_invalid_input(
    repo: Path, parameters: dict[str, str], message: str
) -> None:
    write_model(repo, "m", {1: "1"})
    _, dp = plane(repo)
    with pytest.raises(InvalidInput, match=message):
        await dp.load_model("m", parameters, base64_files=True)
    assert dp.model_names() == []  # nothing was half-applied


async def test_config_as_a_json_object_is_taken_as_meant(repo: Path) -> None:
    write_model(repo, "m", {1: "1"})
    manager, dp = plane(repo)
    config = {"runtime": RUNTIME, "max_batch_size": 2}
    await dp.load_model("m", {"config": config}, base64_files=True)
    assert dp.model_settings("m")["max_batch_size"] == 2
    with pytest.raises(InvalidInput, match="must be a JSON string, got int"):
        await dp.load_model("m", {"config": 7}, base64_files=True)
    await manager.shutdown()


async def test_unknown_directory_bad_name_and_bad_config(repo: Path) -> None:
    _, dp = plane(repo)
    with pytest.raises(ModelNotFound, match="no model directory 'ghost'"):
        await dp.load_model("ghost", {}, base64_files=True)
    with pytest.raises(InvalidInput, match="invalid model name"):
        await dp.load_model("../etc", {}, base64_files=True)
    (repo / "bad").mkdir()
    (repo / "bad" / "config.yaml").write_text("runtime: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read YAML"):
        await dp.load_model("bad", {}, base64_files=True)
    with pytest.raises(ModelNotFound, match="not loaded and not in the repository"):
        await dp.unload_model("ghost", {})


async def test_second_load_while_loading_is_refused_and_unload_waits(repo: Path) -> None:
    write_model(repo, "m", {1: "1"}, "parameters: {load_sleep_s: 0.4}\n")
    manager, dp = plane(repo)
    first = asyncio.ensure_future(dp.load_model("m", {}, base64_files=False))
    await asyncio.sleep(0.05)
    assert [e.state for e in dp.repository_index()] == ["LOADING"]
    with pytest.raises(ModelBusy, match="being loaded already"):
        await dp.load_model("m", {}, base64_files=False)
    unload = asyncio.ensure_future(dp.unload_model("m", {}))
    await first
    await unload  # ran after the load, never interleaved with it
    assert dp.model_names() == []
    await manager.shutdown()


async def test_slow_load_does_not_stall_other_models(repo: Path) -> None:
    write_model(repo, "fast", {1: "1"})
    write_model(repo, "slow", {1: "1"}, "parameters: {load_sleep_s: 1.0}\n")
    manager, dp = plane(repo)
    await dp.load_model("fast", {}, base64_files=False)
    loading = asyncio.ensure_future(dp.load_model("slow", {}, base64_files=False))
    answered = 0
    while not loading.done():
        await answer(dp, "fast")
        answered += 1
        await asyncio.sleep(0.01)
    assert answered > 5  # the loop kept serving while the load ran on a thread
    await manager.shutdown()


async def test_unload_drains_then_404(repo: Path) -> None:
    write_model(repo, "m", {1: "1"}, "parameters: {sleep_s: 0.3}\n")
    manager, dp = plane(repo)
    await dp.load_model("m", {}, base64_files=False)
    in_flight = asyncio.ensure_future(answer(dp, "m"))
    await asyncio.sleep(0.05)
    unloading = asyncio.ensure_future(dp.unload_model("m", {}))
    await asyncio.sleep(0.05)
    with pytest.raises(ModelNotReady, match="unloading"):
        await answer(dp, "m")
    assert [e.state for e in dp.repository_index()] == ["UNLOADING"]
    await unloading
    assert in_flight.result() == ("1", 2.0)
    with pytest.raises(ModelNotFound):
        await answer(dp, "m")
    assert [(e.state, e.reason) for e in dp.repository_index()] == [("UNAVAILABLE", "unloaded")]
    await manager.shutdown()


async def test_unload_dependents(repo: Path) -> None:
    write_model(repo, "base", {1: "1"})
    pipe = repo / "pipe"
    (pipe / "1").mkdir(parents=True)
    (pipe / "config.yaml").write_text(
        "runtime: pipeline\nmax_batch_size: 8\n"
        "inputs: [{name: x, datatype: FP32, shape: [-1, -1]}]\n"
        "outputs: [{name: y, datatype: FP32, shape: [-1, -1]}]\n"
        "parameters:\n  steps:\n    - {model: base, inputs: {x: x}, outputs: {y: y}}\n"
    )
    manager, dp = plane(repo)
    await dp.load_model("base", {}, base64_files=False)
    await dp.load_model("pipe", {}, base64_files=False)
    await dp.unload_model("base", {})
    assert await answer(dp, "pipe") == ("1", 2.0)  # the pipeline keeps its own step alive
    await dp.load_model("base", {}, base64_files=False)
    await dp.unload_model("base", {"unload_dependents": True})
    assert dp.model_names() == []
    with pytest.raises(InvalidInput, match="unload_dependents"):
        await dp.unload_model("base", {"unload_dependents": "yes"})
    await manager.shutdown()


async def test_modes_other_than_explicit_refuse_the_api(repo: Path) -> None:
    write_model(repo, "m", {1: "1"})
    for mode in (ControlMode.NONE, ControlMode.POLL):
        _, dp = plane(repo, mode)
        with pytest.raises(RepositoryNotModifiable, match=f"model control mode '{mode.value}'"):
            await dp.load_model("m", {}, base64_files=False)
        with pytest.raises(RepositoryNotModifiable):
            await dp.unload_model("m", {})


async def test_reconcile_follows_the_directory(repo: Path) -> None:
    manager, dp = plane(repo, ControlMode.POLL)
    await manager.load_initial(None)
    assert dp.model_names() == []
    write_model(repo, "m", {1: "1"})
    await manager.reconcile()
    assert await answer(dp, "m") == ("1", 2.0)
    first = manager.views["m"].versions[1]
    await manager.reconcile()  # nothing changed: nothing reloads
    assert manager.views["m"].versions[1] is first
    write_model(repo, "m", {2: "7"})
    await manager.reconcile()
    assert manager.views["m"].versions[1] is first  # v1 unchanged: kept, not reloaded
    assert await answer(dp, "m") == ("2", 8.0)
    (repo / "m" / "2" / "value.txt").write_text("broken")
    await manager.reconcile()
    assert await answer(dp, "m") == ("2", 8.0)  # the broken change left v2 serving
    attempted = manager.views["m"].attempted
    await manager.reconcile()  # the same broken files are not retried
    assert manager.views["m"].attempted == attempted
    (repo / "m" / "config.yaml").unlink()
    for child in sorted((repo / "m").rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    (repo / "m").rmdir()
    await manager.reconcile()
    assert dp.model_names() == []
    await manager.shutdown()


async def test_statistics_follow_requests(repo: Path) -> None:
    write_model(repo, "m", {1: "1"})
    manager, dp = plane(repo)
    await dp.load_model("m", {}, base64_files=False)
    for _ in range(3):
        await answer(dp, "m")
    bad = request("m")
    bad.inputs = {"x": np.zeros((1, 1, 1), dtype=np.float32)}  # one dimension too many
    with pytest.raises(InvalidInput):
        await dp.infer(bad)
    [stats] = dp.model_statistics("m")
    assert stats["inference_stats"]["success"]["count"] == 3
    assert stats["inference_stats"]["fail"]["count"] == 1
    assert stats["inference_count"] == 3
    assert stats["execution_count"] == 3
    assert stats["batch_stats"][0]["batch_size"] == 1
    assert stats["last_inference"] > 0
    with pytest.raises(ModelNotFound):
        dp.model_statistics("ghost")
    await manager.shutdown()
