"""Rollouts across restarts and repository changes: a restarted server resumes the same
step with the same weights; a `rollout:` block in config.yaml starts one when the candidate
appears (poll mode) and keeps the baseline serving meanwhile; gRPC clients are routed too."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.release.test_rollouts import (
    RUNTIME,
    body,
    history,
    status,
    wait_for,
    write_model,
)
from tests.serverproc import start_server

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT)}


def versions_answering(base_url: str, model: str, n: int = 40, **kwargs: Any) -> set[str]:
    with httpx.Client(timeout=30) as client:
        return {
            client.post(f"{base_url}/v2/models/{model}/infer", json=body(), **kwargs).json()[
                "model_version"
            ]
            for _ in range(n)
        }


def test_a_restarted_server_resumes_the_same_step(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "m", {1: 1, 2: 2}, {})
    state = tmp_path / "state"
    args = ("--state-dir", str(state))
    server = start_server(tmp_path / "repo", *args, env=ENV)
    try:
        steps = [
            {"canary": {"weight": 10, "duration": "1s"}},
            {"canary": {"weight": 40, "duration": "1h"}},
            {"canary": {"weight": 100, "duration": "1h"}},
        ]
        response = httpx.post(
            f"{server.base_url}/v1/rollouts",
            json={
                "model": "m",
                "candidate": 2,
                "steps": steps,
                "analysis": {"interval": "500ms", "min_requests": 0},
            },
        )
        assert response.status_code == 201, response.text
        wait_for(lambda: status(server, "m")["step"] == 1, "step 1")
        before = status(server, "m")
    finally:
        assert server.stop(signal.SIGTERM) == 0
    server = start_server(tmp_path / "repo", *args, env=ENV)
    try:
        after = status(server, "m")
        assert (after["id"], after["step"], after["weights"], after["phase"]) == (
            before["id"],
            1,
            {"1": 60.0, "2": 40.0},
            "progressing",
        )
        assert versions_answering(server.base_url, "m") == {"1", "2"}
        assert "resumed" in [e["event"] for e in history(server, "m")]
    finally:
        server.stop()


def test_a_declared_rollout_starts_when_the_candidate_appears(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "m", {1: 1}, {})
    config = {
        "runtime": RUNTIME,
        "rollout": {
            "candidate": 2,
            "steps": [
                {"canary": {"weight": 50, "duration": "1s"}},
                {"canary": {"weight": 100, "duration": "1s"}},
            ],
            "analysis": {"interval": "500ms", "min_requests": 0},
        },
    }
    (repo / "m" / "config.yaml").write_text(yaml.safe_dump(config))
    server = start_server(
        repo,
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "0.5",
        "--state-dir",
        str(tmp_path / "state"),
        env=ENV,
    )
    try:
        assert versions_answering(server.base_url, "m", 5) == {"1"}
        # The new version arrives: with latest-1 it would replace version 1 at once; the
        # declared rollout keeps version 1 as the default and starts splitting instead.
        (repo / "m" / "2").mkdir()
        (repo / "m" / "2" / "value.txt").write_text("2")
        wait_for(
            lambda: httpx.get(f"{server.base_url}/v1/rollouts/m").status_code == 200,
            "the declared rollout",
        )
        assert status(server, "m")["source"] == "config"
        wait_for(lambda: status(server, "m")["phase"] == "promoted", "the promotion")
        assert versions_answering(server.base_url, "m", 10) == {"2"}
        # Later repository polls keep it that way (the promoted version stays pinned).
        time.sleep(1.5)
        assert versions_answering(server.base_url, "m", 10) == {"2"}
        events = [e["event"] for e in history(server, "m")]
        assert events[0] == "started" and events[-1] == "promoted"
    finally:
        server.stop()


def test_grpc_clients_are_routed_by_a_request_parameter(tmp_path: Path) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient

    write_model(tmp_path / "repo", "m", {1: 1, 2: 2}, {})
    server = start_server(tmp_path / "repo", "--state-dir", str(tmp_path / "state"), env=ENV)
    try:
        response = httpx.post(
            f"{server.base_url}/v1/rollouts",
            json={
                "model": "m",
                "candidate": 2,
                "route_key": "parameter:user",
                "steps": [
                    {"canary": {"weight": 50, "duration": "1h"}},
                    {"canary": {"weight": 100, "duration": "1h"}},
                ],
            },
        )
        assert response.status_code == 201, response.text
        client = grpcclient.InferenceServerClient(server.grpc_url)
        seen: dict[str, set[str]] = {}
        for _ in range(2):
            for user in range(30):
                tensor = grpcclient.InferInput("x", [1, 1], "FP32")
                tensor.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
                result = client.infer("m", [tensor], parameters={"user": f"u{user}"})
                version = result.get_response().model_version
                seen.setdefault(f"u{user}", set()).add(version)
        assert all(len(v) == 1 for v in seen.values())
        assert {next(iter(v)) for v in seen.values()} == {"1", "2"}
        client.close()
    finally:
        server.stop()


def test_a_rollout_waits_for_its_model_to_load_again(tmp_path: Path) -> None:
    """Explicit model control: a server restarted without the model keeps the rollout as it
    was; loading the model resumes it with its weights."""
    write_model(tmp_path / "repo", "m", {1: 1, 2: 2}, {})
    args = ("--model-control-mode", "explicit", "--state-dir", str(tmp_path / "state"))
    server = start_server(tmp_path / "repo", *args, "--load-model", "m", env=ENV)
    try:
        response = httpx.post(
            f"{server.base_url}/v1/rollouts",
            json={
                "model": "m",
                "candidate": 2,
                "steps": [
                    {"canary": {"weight": 50, "duration": "1h"}},
                    {"canary": {"weight": 100, "duration": "1h"}},
                ],
            },
        )
        assert response.status_code == 201, response.text
    finally:
        server.stop()
    server = start_server(tmp_path / "repo", *args, env=ENV)  # m is not loaded this time
    try:
        assert status(server, "m")["phase"] == "progressing"
        loaded = httpx.post(f"{server.base_url}/v2/repository/models/m/load", timeout=60)
        assert loaded.status_code == 200, loaded.text
        wait_for(
            lambda: versions_answering(server.base_url, "m", 20) == {"1", "2"}, "the split again"
        )
        assert [e["event"] for e in history(server, "m")][-1] == "resumed"
    finally:
        server.stop()


def test_a_malformed_rollout_block_fails_the_load_and_names_the_field(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "m", {1: 1, 2: 2}, {})
    config = {
        "runtime": RUNTIME,
        "rollout": {"candidate": 2, "steps": [{"canary": {"weight": 150, "duration": "soon"}}]},
    }
    (repo / "m" / "config.yaml").write_text(yaml.safe_dump(config))
    write_model(repo, "ok", {1: 1}, {})
    server = start_server(repo, "--state-dir", str(tmp_path / "state"), env=ENV)
    try:
        index = httpx.post(f"{server.base_url}/v2/repository/index", json={}).json()
        (entry,) = [e for e in index if e["name"] == "m"]
        assert entry["state"] == "UNAVAILABLE"
        assert "rollout.steps" in entry["reason"] and "weight" in entry["reason"]
        assert versions_answering(server.base_url, "ok", 3) == {"1"}  # the others serve
        assert httpx.get(f"{server.base_url}/v1/rollouts/m").status_code == 404
    finally:
        server.stop()
