"""Rollouts against a real server on loopback: weighted and sticky splits, shadow, analysis
and automatic rollback, approval gates, bad input, unload, audit and metrics."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serverproc import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = "tests.support.release_runtimes:ReleaseEcho"
#: Only version 1 loads at start; a rollout loads its candidate beside it.
CONFIG = f"runtime: {RUNTIME}\nversion_policy: {{specific: {{versions: [1]}}}}\n"


def write_model(
    root: Path, name: str, versions: dict[int, float], behaviour: dict[int, dict[str, Any]]
) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.yaml").write_text(CONFIG)
    for number, value in versions.items():
        directory = root / name / str(number)
        directory.mkdir(exist_ok=True)
        (directory / "value.txt").write_text(str(value))
        if number in behaviour:
            (directory / "behaviour.json").write_text(json.dumps(behaviour[number]))


def body(x: float = 0.0, **parameters: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [x]}]
    }
    if parameters:
        document["parameters"] = parameters
    return document


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Load:
    """Requests in a background thread until stopped: (time, status, version) each."""

    url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    results: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, workers: int = 3) -> Load:
        for _ in range(workers):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                response = client.post(
                    f"{self.url}/v2/models/{self.model}/infer", json=body(), headers=self.headers
                )
                version = response.json().get("model_version", "") if response.is_success else ""
                self.results.append((time.time(), response.status_code, version))

    def stop(self) -> list[tuple[float, int, str]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.results


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("rollouts")
    write_model(root, "split", {1: 1, 2: 2}, {})
    write_model(root, "sticky", {1: 1, 2: 2}, {})
    write_model(root, "failing", {1: 1, 2: 2}, {2: {"fail_ratio": 0.5}})
    write_model(root, "slow", {1: 1, 2: 2}, {2: {"sleep_s": 0.03}})
    write_model(root, "gated", {1: 1, 2: 2}, {})
    write_model(root, "shadowed", {1: 1, 2: 2}, {2: {"sleep_s": 3.0}})
    write_model(root, "unloaded", {1: 1, 2: 2}, {})
    write_model(root, "bad", {1: 1, 2: 2}, {})
    state = tmp_path_factory.mktemp("state")
    process = start_server(
        root,
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
        "--state-dir",
        str(state),
        env={"PYTHONPATH": str(ROOT)},
    )
    yield process
    process.stop()


def start(server: ServerProcess, model: str, **spec: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/rollouts", json={"model": model, **spec}, timeout=60)


def status(server: ServerProcess, model: str) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}/v1/rollouts/{model}")
    response.raise_for_status()
    return dict(response.json())


def history(server: ServerProcess, model: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.base_url}/v1/rollouts/{model}/history")
    response.raise_for_status()
    return list(response.json()["events"])


def infer(server: ServerProcess, model: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v2/models/{model}/infer", json=body(), **kwargs)


LONG = [
    {"canary": {"weight": 30, "duration": "10m"}},
    {"canary": {"weight": 100, "duration": "10m"}},
]


def test_weighted_split_is_within_binomial_bounds(server: ServerProcess) -> None:
    response = start(server, "split", candidate=2, steps=LONG, analysis={"interval": "1s"})
    assert response.status_code == 201, response.text
    assert response.json()["weights"] == {"1": 70.0, "2": 30.0}
    n = 1000
    with httpx.Client(timeout=30) as client:
        versions = [
            client.post(f"{server.base_url}/v2/models/split/infer", json=body()).json()[
                "model_version"
            ]
            for _ in range(n)
        ]
    candidate = versions.count("2")
    assert versions.count("1") + candidate == n
    sigma = math.sqrt(n * 0.3 * 0.7)
    assert abs(candidate - 300) < 4.5 * sigma, f"{candidate} of {n} went to the candidate"
    # A caller can still pin a version: the OIP URL is an explicit override.
    pinned = httpx.post(f"{server.base_url}/v2/models/split/versions/1/infer", json=body())
    assert pinned.json()["model_version"] == "1"
    # Metrics show the weights.
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert 'inferbridge_rollout_weight{model="split",version="2"} 30.0' in metrics
    assert 'inferbridge_rollout_phase{model="split",phase="progressing"} 1.0' in metrics


def test_sticky_keys_never_flip(server: ServerProcess) -> None:
    steps = [
        {"canary": {"weight": 20, "duration": "10m"}},
        {"canary": {"weight": 100, "duration": "10m"}},
    ]
    response = start(server, "sticky", candidate=2, steps=steps, route_key="header:x-user-id")
    assert response.status_code == 201, response.text
    seen: dict[str, set[str]] = {}
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            for user in range(60):
                answer = client.post(
                    f"{server.base_url}/v2/models/sticky/infer",
                    json=body(),
                    headers={"x-user-id": f"user-{user}"},
                )
                seen.setdefault(f"user-{user}", set()).add(answer.json()["model_version"])
    assert all(len(versions) == 1 for versions in seen.values()), seen
    on_candidate = sum(versions == {"2"} for versions in seen.values())
    assert 0 < on_candidate < 60


def test_a_failing_candidate_is_rolled_back_within_the_bound(server: ServerProcess) -> None:
    interval, limit, weight = 1.0, 2, 20
    load = Load(server.base_url, "failing").start()
    try:
        wait_for(lambda: len(load.results) > 20, "load to start")
        response = start(
            server,
            "failing",
            candidate=2,
            steps=[
                {"canary": {"weight": weight, "duration": "10m"}},
                {"canary": {"weight": 100, "duration": "10m"}},
            ],
            analysis={
                "interval": f"{interval}s",
                "min_requests": 5,
                "failure_limit": limit,
                "checks": [{"error_rate": {"max": 0.05}}],
            },
        )
        assert response.status_code == 201, response.text
        wait_for(lambda: status(server, "failing")["phase"] == "aborted", "the rollback")
        time.sleep(0.5)
    finally:
        results = load.stop()
    events = history(server, "failing")
    started = next(e for e in events if e["event"] == "started")
    aborted = next(e for e in events if e["event"] == "aborted")
    assert aborted["actor"] == "analysis"
    assert aborted["detail"]["analysis"]["verdict"] == "fail"
    assert "error rate" in aborted["detail"]["why"]
    # The bound: interval x failure_limit plus one interval. A loaded machine may run a
    # tick late, so allow one interval more than the bound before calling it a bug.
    took = aborted["at"] - started["at"]
    assert took <= interval * limit + interval + interval, f"rollback took {took:.2f}s"
    failed_events = [e for e in events if e["event"] == "analysis_failed"]
    assert len(failed_events) == limit - 1  # the limit-th failure is the abort itself
    # Failed client requests: only while the rollout ran, bounded by the candidate's weight.
    during = [r for r in results if started["at"] <= r[0] <= aborted["at"]]
    failed = [r for r in results if r[1] != 200]
    assert all(started["at"] <= r[0] <= aborted["at"] + 0.5 for r in failed), "failed after abort"
    expected = len(during) * weight / 100 * 0.5
    assert len(failed) <= expected + 5 * math.sqrt(max(expected, 1)), (len(failed), len(during))
    # After the abort everything goes to the baseline; the candidate was unloaded.
    assert {infer(server, "failing").json()["model_version"] for _ in range(20)} == {"1"}
    index = httpx.post(f"{server.base_url}/v2/repository/index", json={}).json()
    assert {(e["version"], e["state"]) for e in index if e["name"] == "failing"} == {("1", "READY")}


def test_a_slow_candidate_is_rolled_back(server: ServerProcess) -> None:
    load = Load(server.base_url, "slow").start()
    try:
        wait_for(lambda: len(load.results) > 20, "load to start")
        response = start(
            server,
            "slow",
            candidate=2,
            steps=[{"canary": {"weight": 50, "duration": "10m"}}, *LONG[1:]],
            analysis={
                "interval": "1s",
                "min_requests": 5,
                "failure_limit": 2,
                "checks": [{"latency_p99": {"max_ratio_to_baseline": 1.5}}],
            },
        )
        assert response.status_code == 201, response.text
        wait_for(lambda: status(server, "slow")["phase"] == "aborted", "the rollback")
    finally:
        load.stop()
    aborted = next(e for e in history(server, "slow") if e["event"] == "aborted")
    assert "latency_p99" in aborted["detail"]["why"]
    check = aborted["detail"]["analysis"]["checks"][0]
    assert check["candidate_ms"] > 1.5 * check["baseline_ms"]


def test_approval_gates_block_and_release(server: ServerProcess) -> None:
    steps = [
        {"canary": {"weight": 10, "duration": "1s"}},
        {"approval": {"name": "qa", "approvers": 2}},
        {"canary": {"weight": 100, "duration": "1s"}},
    ]
    response = start(
        server, "gated", candidate=2, steps=steps, analysis={"interval": "500ms", "min_requests": 0}
    )
    assert response.status_code == 201, response.text
    # Too early: the rollout is at the canary step, not at the gate.
    early = httpx.post(
        f"{server.base_url}/v1/rollouts/gated/approve", json={"gate": "qa", "who": "alice"}
    )
    assert early.status_code == 409 and "not waiting" in early.json()["error"]
    wait_for(lambda: "waiting_for" in status(server, "gated"), "the gate")
    time.sleep(1.5)  # it stays at the gate
    assert status(server, "gated")["step"] == 1
    approve = f"{server.base_url}/v1/rollouts/gated/approve"
    first = httpx.post(approve, json={"gate": "qa", "who": "alice", "comment": "tests pass"})
    assert first.status_code == 200 and first.json()["waiting_for"]["approvals"] == 1
    again = httpx.post(approve, json={"gate": "qa", "who": "alice"})
    assert again.status_code == 409 and "already" in again.json()["error"]
    wrong = httpx.post(approve, json={"gate": "security", "who": "bob"})
    assert wrong.status_code == 409
    second = httpx.post(approve, json={"gate": "qa", "who": "bob", "comment": "ok"})
    assert second.status_code == 200
    wait_for(lambda: status(server, "gated")["phase"] == "promoted", "the promotion")
    assert {infer(server, "gated").json()["model_version"] for _ in range(10)} == {"2"}
    story = [(e["event"], e["actor"]) for e in history(server, "gated")]
    assert story == [
        ("started", "api"),
        ("step", "controller"),
        ("approved", "alice"),
        ("approved", "bob"),
        ("step", "alice,bob"),
        ("promoted", "controller"),
    ]
    assert all("time" in e and "at" in e for e in history(server, "gated"))


def test_shadow_never_reaches_or_delays_the_client(server: ServerProcess) -> None:
    # The candidate answers differently (y = x + 2 instead of x + 1) and takes 3 s a call.
    response = start(
        server,
        "shadowed",
        candidate=2,
        steps=[{"shadow": {"duration": "10m", "sample": 1.0}}, *LONG[1:]],
        shadow_queue=2,
        analysis={
            "interval": "1s",
            "min_requests": 1,
            "failure_limit": 1,
            "checks": [{"agreement": {"min": 0.98}}],
        },
    )
    assert response.status_code == 201, response.text
    with httpx.Client(timeout=30) as client:
        for _ in range(20):
            # A deadline well below the candidate's 3 s: a primary that waited would fail.
            answer = client.post(
                f"{server.base_url}/v2/models/shadowed/infer",
                json=body(),
                timeout=2.5,
            )
            assert answer.status_code == 200
            assert answer.json()["model_version"] == "1"
            assert answer.json()["outputs"][0]["data"] == [1.0]
    wait_for(lambda: status(server, "shadowed")["phase"] == "aborted", "the rollback", 30)
    document = status(server, "shadowed")
    assert document["shadow"]["dropped"] > 0  # at most 2 copies ran at once
    aborted = next(e for e in history(server, "shadowed") if e["event"] == "aborted")
    assert "agreement" in aborted["detail"]["why"]
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert 'inferbridge_shadow_requests_total{model="shadowed",outcome="dropped"}' in metrics


@pytest.mark.parametrize(
    ("spec", "status_code", "phrase"),
    [
        ({"candidate": 9, "steps": LONG}, 400, "unknown candidate"),
        ({"candidate": 1, "steps": LONG}, 400, "default already"),
        ({"candidate": 2, "steps": [{"canary": {"weight": 101, "duration": "1s"}}]}, 400, "100"),
        ({"candidate": 2, "steps": [{"canary": {"weight": 50, "duration": "1s"}}]}, 400, "never"),
        ({"candidate": 2, "steps": [{"canary": {"weight": 100, "duration": "1x"}}]}, 400, "parse"),
    ],
)
def test_bad_rollouts_change_nothing(
    server: ServerProcess, spec: dict[str, Any], status_code: int, phrase: str
) -> None:
    response = start(server, "bad", **spec)
    assert response.status_code == status_code, response.text
    assert phrase in response.json()["error"]
    assert httpx.get(f"{server.base_url}/v1/rollouts/bad").status_code == 404
    index = httpx.post(f"{server.base_url}/v2/repository/index", json={}).json()
    assert {e["version"] for e in index if e["name"] == "bad"} == {"1"}


def test_unknown_models_and_second_rollouts(server: ServerProcess) -> None:
    missing = start(server, "nope", candidate=2, steps=LONG)
    assert missing.status_code == 404
    first = start(server, "unloaded", candidate=2, steps=LONG)
    assert first.status_code == 201, first.text
    second = start(server, "unloaded", candidate=2, steps=LONG)
    assert second.status_code == 409 and "has a rollout already" in second.json()["error"]
    assert httpx.get(f"{server.base_url}/v1/rollouts/nope/history").status_code == 404
    assert httpx.put(f"{server.base_url}/v1/rollouts/unloaded").status_code == 405
    # Any model name works under /v1/rollouts/ (the audit log has a prefix of its own).
    audit = httpx.get(f"{server.base_url}/v1/rollouts/audit")
    assert audit.status_code == 404 and "model 'audit'" in audit.json()["error"]


def test_unloading_a_model_aborts_its_rollout_first(server: ServerProcess) -> None:
    if status(server, "unloaded")["phase"] != "progressing":
        start(server, "unloaded", candidate=2, steps=LONG)
    response = httpx.post(f"{server.base_url}/v2/repository/models/unloaded/unload", json={})
    assert response.status_code == 200
    wait_for(lambda: status(server, "unloaded")["phase"] == "aborted", "the abort")
    aborted = next(e for e in history(server, "unloaded") if e["event"] == "aborted")
    assert "unloaded" in aborted["detail"]["why"]


def test_pause_resume_abort_and_promote_by_hand(server: ServerProcess) -> None:
    base = f"{server.base_url}/v1/rollouts/split"
    assert (
        httpx.post(f"{base}/pause", json={"actor": "carol", "reason": "lunch"}).json()["phase"]
        == "paused"
    )
    assert httpx.post(f"{base}/pause", json={}).status_code == 409
    assert httpx.post(f"{base}/resume", json={"actor": "carol"}).json()["phase"] == "progressing"
    promoted = httpx.post(f"{base}/promote", json={"actor": "carol"}, timeout=60)
    assert promoted.json()["phase"] == "promoted"
    assert {infer(server, "split").json()["model_version"] for _ in range(10)} == {"2"}
    assert httpx.post(f"{base}/abort", json={}).status_code == 409  # ended already
    export = httpx.get(f"{server.base_url}/v1/rollout-audit", params={"format": "jsonl"})
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert {"started", "paused", "resumed", "promoted"} <= {
        line["event"] for line in lines if line["model"] == "split"
    }
    cleared = httpx.request("DELETE", base, json={"actor": "carol"})
    assert cleared.status_code == 200
