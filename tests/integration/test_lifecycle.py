"""The live model set through a real server, on both front ends: load, swap and unload
under constant load with zero failures, a broken version that leaves the old one serving,
Triton's repository API from tritonclient (HTTP and gRPC), bad input, and the poll mode."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.serverproc import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = "tests.support.runtimes:VersionedEcho"
CONFIG = (
    f"runtime: {RUNTIME}\nmax_batch_size: 8\n"
    "dynamic_batching: {max_queue_delay_ms: 2, max_queue_size: 0}\n"
)


def write_model(root: Path, name: str, versions: dict[int, str], config: str = CONFIG) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.yaml").write_text(config)
    for number, value in versions.items():
        (root / name / str(number)).mkdir(exist_ok=True)
        (root / name / str(number) / "value.txt").write_text(value)


def body(x: float = 1.0) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [x]}]}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module", params=["gateway", "python"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp(f"live-{request.param}")
    write_model(root, "live", {1: "1"})
    write_model(root, "other", {1: "100"})
    write_model(root, "idle", {1: "5"})
    write_model(
        root, "slow", {1: "0"}, CONFIG + "parameters: {load_sleep_s: 2.0, sleep_s: 1.0}\n"
    )
    args = ["--model-control-mode", "explicit", "--load-model", "live", "--load-model", "other"]
    if request.param == "python":
        args += ["--grpc-frontend", "grpcio", "--rest-frontend", "uvicorn"]
    server = start_server(root, *args, env={"PYTHONPATH": str(ROOT)})
    yield server, root
    server.stop()


def index(server: ServerProcess, ready: bool = False) -> dict[tuple[str, str], tuple[str, str]]:
    response = httpx.post(f"{server.base_url}/v2/repository/index", json={"ready": ready})
    response.raise_for_status()
    return {(e["name"], e["version"]): (e["state"], e["reason"]) for e in response.json()}


def load(server: ServerProcess, name: str, **parameters: object) -> httpx.Response:
    document = {"parameters": parameters} if parameters else None
    return httpx.post(
        f"{server.base_url}/v2/repository/models/{name}/load", json=document, timeout=60
    )


class Clients:
    """REST and gRPC clients sending requests without pause, recording every answer."""

    def __init__(self, server: ServerProcess, model: str, threads: int = 3) -> None:
        self.server = server
        self.model = model
        self.stop = threading.Event()
        self.answers: list[list[tuple[str, str]]] = [[] for _ in range(threads + 1)]
        self.threads = [
            threading.Thread(target=self._rest, args=(self.answers[i],), daemon=True)
            for i in range(threads)
        ]
        self.threads.append(
            threading.Thread(target=self._grpc, args=(self.answers[threads],), daemon=True)
        )

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _rest(self, out: list[tuple[str, str]]) -> None:
        url = f"{self.server.base_url}/v2/models/{self.model}/infer"
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                response = client.post(url, json=body())
                version = response.json().get("model_version", "")
                out.append((str(response.status_code), version))

    def _grpc(self, out: list[tuple[str, str]]) -> None:
        client = grpcclient.InferenceServerClient(self.server.grpc_url)
        x = grpcclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
        while not self.stop.is_set():
            try:
                result = client.infer(self.model, [x])
                out.append(("OK", result.get_response().model_version))
            except InferenceServerException as exc:
                out.append((str(exc.status()), ""))
        client.close()

    def count(self) -> int:
        return sum(len(a) for a in self.answers)

    def wait_more(self, n: int = 30) -> None:
        start = self.count()
        wait_for(lambda: self.count() >= start + n, f"{n} more answers")

    def failures(self) -> list[tuple[str, str]]:
        return [a for answers in self.answers for a in answers if a[0] not in ("200", "OK")]


def test_reload_under_constant_load_has_no_failures(live: tuple[ServerProcess, Path]) -> None:
    server, root = live
    with Clients(server, "live") as clients:
        clients.wait_more()
        # A new version: it becomes the default; version 1 drains and unloads.
        write_model(root, "live", {2: "2"})
        assert load(server, "live").status_code == 200
        clients.wait_more()
        # A changed config (two instances, another batching window) for the same version.
        write_model(
            root,
            "live",
            {},
            CONFIG.replace("max_queue_delay_ms: 2", "max_queue_delay_ms: 1")
            + "instance_group: [{count: 2}]\n",
        )
        assert load(server, "live").status_code == 200
        clients.wait_more()
        # A config sent in the request replaces the one on disk.
        override = json.dumps({"runtime": RUNTIME, "max_batch_size": 4})
        assert load(server, "live", config=override).status_code == 200
        clients.wait_more()
    assert clients.failures() == []
    for answers in clients.answers:
        versions = [v for _, v in answers]
        assert set(versions) <= {"1", "2"}
        # Each client sees version 1, then version 2, never 1 again after the swap.
        assert "1" not in versions[versions.index("2") :] if "2" in versions else True
    assert any(v == "2" for answers in clients.answers for _, v in answers)
    assert index(server)[("live", "2")] == ("READY", "")
    assert ("live", "1") not in index(server)
    config = httpx.get(f"{server.base_url}/v2/models/live/config").json()
    assert config["max_batch_size"] == 4


def test_broken_version_leaves_the_old_one_serving(live: tuple[ServerProcess, Path]) -> None:
    server, root = live
    write_model(root, "other", {2: "this is not a number"})
    with Clients(server, "other", threads=2) as clients:
        clients.wait_more()
        response = load(server, "other")
        clients.wait_more()
    assert response.status_code == 400
    assert "not a number" in response.json()["error"]
    assert "version(s) [1] serve on" in response.json()["error"]
    assert clients.failures() == []
    assert {v for answers in clients.answers for _, v in answers} == {"1"}
    state, reason = index(server)[("other", "2")]
    assert state == "UNAVAILABLE" and "not a number" in reason
    state, reason = index(server, ready=True)[("other", "1")]
    assert state == "READY" and reason.startswith("reload failed:")
    assert ("other", "2") not in index(server, ready=True)
    shutil.rmtree(root / "other" / "2")


def test_slow_load_does_not_stall_other_models(live: tuple[ServerProcess, Path]) -> None:
    server, _ = live
    loading = threading.Thread(target=load, args=(server, "slow"))
    loading.start()
    wait_for(lambda: index(server).get(("slow", "1"), ("",))[0] == "LOADING", "slow LOADING")
    served_while_loading = 0
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        while index(server).get(("slow", "1"), ("",))[0] == "LOADING":
            response = client.post("/v2/models/other/infer", json=body())
            assert response.status_code == 200
            served_while_loading += 1
    loading.join()
    assert served_while_loading > 0
    assert index(server)[("slow", "1")] == ("READY", "")


def test_unload_lets_requests_in_flight_finish(live: tuple[ServerProcess, Path]) -> None:
    server, _ = live
    if index(server).get(("slow", "1"), ("",))[0] != "READY":
        assert load(server, "slow").status_code == 200
    answers: list[httpx.Response] = []
    in_flight = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{server.base_url}/v2/models/slow/infer", json=body(), timeout=30)
        )
    )
    in_flight.start()
    time.sleep(0.3)  # let the request reach the model (it runs for 1 s)
    unload = httpx.post(f"{server.base_url}/v2/repository/models/slow/unload", timeout=30)
    in_flight.join()
    assert unload.status_code == 200
    assert answers[0].status_code == 200, answers[0].text
    after = httpx.post(f"{server.base_url}/v2/models/slow/infer", json=body())
    assert after.status_code == 404
    assert index(server)[("slow", "")] == ("UNAVAILABLE", "unloaded")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    with pytest.raises(InferenceServerException) as raised:
        client.infer("slow", [x])
    assert raised.value.status() == "StatusCode.NOT_FOUND"


def test_tritonclient_http_load_index_unload(live: tuple[ServerProcess, Path]) -> None:
    server, _ = live
    client = httpclient.InferenceServerClient(server.http_url)
    assert not client.is_model_ready("idle")
    client.load_model("idle")
    assert client.is_model_ready("idle")
    names = {(m["name"], m.get("version")) for m in client.get_model_repository_index()}
    assert ("idle", "1") in names
    config = json.dumps({"runtime": RUNTIME, "max_batch_size": 2})
    client.load_model("shipped", config=config, files={"file:4/value.txt": b"40"})
    x = httpclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    result = client.infer("shipped", [x])
    assert result.get_response()["model_version"] == "4"
    assert result.as_numpy("y").tolist() == [[41.0]]
    client.unload_model("shipped")
    client.unload_model("idle")
    assert not client.is_model_ready("idle")
    with pytest.raises(InferenceServerException, match="no model directory 'ghost'"):
        client.load_model("ghost")


def test_tritonclient_grpc_load_index_unload(live: tuple[ServerProcess, Path]) -> None:
    server, _ = live
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.load_model("idle")
    assert client.is_model_ready("idle")
    ready = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "idle", "version": "1", "state": "READY"} in ready
    config = json.dumps({"runtime": RUNTIME, "max_batch_size": 2})
    client.load_model("shipped", config=config, files={"file:7/value.txt": b"70"})
    x = grpcclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    assert client.infer("shipped", [x]).as_numpy("y").tolist() == [[71.0]]
    client.unload_model("shipped")
    client.unload_model("idle")
    assert not client.is_model_ready("idle")  # unloaded: not ready (Triton's answer)
    with pytest.raises(InferenceServerException) as raised:
        client.load_model("ghost")
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as raised:
        client.load_model("idle", config='{"runtime": "x", "colour": 1}')
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "colour" in str(raised.value.message())


@pytest.mark.parametrize(
    ("name", "document", "status", "message"),
    [
        ("ghost", None, 404, "no model directory 'ghost'"),
        ("idle", {"parameters": {"config": "{not json"}}, 400, "not valid JSON"),
        ("idle", {"parameters": {"config": '{"runtime": "x", "bogus": 1}'}}, 400, "'bogus'"),
        ("idle", {"parameters": {"file:1/value.txt": "AAAA"}}, 400, "'config' parameter"),
        (
            "idle",
            {"parameters": {"config": '{"runtime": "x"}', "file:../../etc/x": "AAAA"}},
            400,
            "relative to the model directory",
        ),
        (
            "idle",
            {"parameters": {"config": '{"runtime": "x"}', "file:1/value.txt": "@@@"}},
            400,
            "not valid base64",
        ),
        ("idle", {"parameters": {"unknown": 1}}, 400, "unknown load parameter"),
        ("idle", {"parameters": "config"}, 400, "'parameters' must be a JSON object"),
        ("idle", {"params": {}}, 400, "unknown field"),
        (".hidden", None, 400, "invalid model name"),
    ],
)
def test_bad_load_requests_get_a_clear_4xx(
    live: tuple[ServerProcess, Path],
    name: str,
    document: object,
    status: int,
    message: str,
) -> None:
    server, _ = live
    response = httpx.post(f"{server.base_url}/v2/repository/models/{name}/load", json=document)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_malformed_body_and_concurrent_loads(live: tuple[ServerProcess, Path]) -> None:
    server, _ = live
    url = f"{server.base_url}/v2/repository/models/idle/load"
    malformed = httpx.post(url, content=b"{", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    first = threading.Thread(target=load, args=(server, "slow"))
    first.start()
    wait_for(lambda: index(server).get(("slow", "1"), ("",))[0] == "LOADING", "slow LOADING")
    second = load(server, "slow")
    first.join()
    assert second.status_code == 409
    assert "being loaded already" in second.json()["error"]
    unload = httpx.post(f"{server.base_url}/v2/repository/models/ghost/unload")
    assert unload.status_code == 404


def test_mode_none_refuses_the_api(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/v2/repository/models/iris/load")
    assert response.status_code == 403
    assert "not modifiable in model control mode 'none'" in response.json()["error"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as raised:
        client.unload_model("iris")
    assert raised.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert httpx.post(f"{server.base_url}/v2/models/iris/infer", json={}).status_code == 400


def test_poll_mode_follows_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_model(root, "first", {1: "1"})
    server = start_server(
        root,
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "0.5",
        env={"PYTHONPATH": str(ROOT)},
    )
    try:
        base = server.base_url

        def answer(model: str) -> tuple[int, str, float]:
            response = httpx.post(f"{base}/v2/models/{model}/infer", json=body())
            if response.status_code != 200:
                return response.status_code, "", 0.0
            document = response.json()
            return 200, document["model_version"], document["outputs"][0]["data"][0]

        assert answer("first") == (200, "1", 2.0)
        write_model(root, "second", {3: "30"})
        wait_for(lambda: answer("second") == (200, "3", 31.0), "the new model to load")
        write_model(root, "first", {2: "20"})
        wait_for(lambda: answer("first") == (200, "2", 21.0), "the new version to serve")
        (root / "first" / "2" / "value.txt").write_text("broken")
        wait_for(
            lambda: "not a number" in index(server)[("first", "2")][1], "the failure reported"
        )
        assert answer("first") == (200, "2", 21.0)  # the broken change left v2 serving
        shutil.rmtree(root / "second")
        wait_for(lambda: answer("second")[0] == 404, "the removed model to unload")
        load_api = httpx.post(f"{base}/v2/repository/models/first/unload")
        assert load_api.status_code == 403
        assert "mode 'poll'" in load_api.json()["error"]
    finally:
        server.stop()
    assert any("loaded model 'second'" in line for line in server.output)


def test_file_parameters_cannot_escape(live: tuple[ServerProcess, Path]) -> None:
    server, root = live
    config = json.dumps({"runtime": RUNTIME})
    for path in ("1/../../../escaped.txt", "/tmp/escaped.txt", "1/./value.txt"):
        files = {f"file:{path}": base64.b64encode(b"1").decode()}
        response = load(server, "esc", config=config, **files)
        assert response.status_code == 400, path
    assert not (root.parent / "escaped.txt").exists()


def test_a_model_loaded_at_run_time_gets_its_admission_bound(
    live: tuple[ServerProcess, Path],
) -> None:
    """A bounded queue loaded through the API is enforced at once: beyond max_queue_size
    plus one per instance, requests get 429 (from the gateway when it serves REST)."""
    server, root = live
    write_model(
        root,
        "bounded",
        {1: "0"},
        f"runtime: {RUNTIME}\nmax_batch_size: 1\ndynamic_batching: {{max_queue_size: 1}}\n"
        "parameters: {sleep_s: 0.5}\n",
    )
    assert load(server, "bounded").status_code == 200
    codes: list[int] = []

    def send() -> None:
        response = httpx.post(
            f"{server.base_url}/v2/models/bounded/infer", json=body(), timeout=30
        )
        codes.append(response.status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(codes) <= {200, 429}
    assert codes.count(429) >= 4 and codes.count(200) >= 2, codes
    httpx.post(f"{server.base_url}/v2/repository/models/bounded/unload").raise_for_status()
