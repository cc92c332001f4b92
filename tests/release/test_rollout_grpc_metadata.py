"""A rollout's `route_key: header:<name>` routes gRPC calls through the Go front end by
their metadata (issue #11): tritonclient's `headers=` reach the rollout, so one user
always gets one version, the same one as over REST."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.release.test_rollouts import body, write_model
from tests.serverproc import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    write_model(root, "sticky_grpc", {1: 1, 2: 2}, {})
    process = start_server(
        root,
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
        "--state-dir",
        str(tmp_path_factory.mktemp("state")),
        env={"PYTHONPATH": str(ROOT)},
    )
    yield process
    process.stop()


def test_grpc_metadata_routes_sticky_through_the_go_front_end(server: ServerProcess) -> None:
    assert any("served by the Go gateway" in line for line in server.output)
    steps = [
        {"canary": {"weight": 50, "duration": "10m"}},
        {"canary": {"weight": 100, "duration": "10m"}},
    ]
    response = httpx.post(
        f"{server.base_url}/v1/rollouts",
        json={
            "model": "sticky_grpc",
            "candidate": 2,
            "steps": steps,
            "route_key": "header:x-user-id",
        },
        timeout=60,
    )
    assert response.status_code == 201, response.text
    x = grpcclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.zeros((1, 1), np.float32))
    users = [f"user-{n}" for n in range(40)]
    seen: dict[str, set[str]] = {user: set() for user in users}
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for _ in range(3):
            for user in users:
                result = client.infer("sticky_grpc", [x], headers={"x-user-id": user})
                seen[user].add(result.get_response().model_version)
    assert all(len(versions) == 1 for versions in seen.values()), seen
    on_candidate = [user for user, versions in seen.items() if versions == {"2"}]
    assert 0 < len(on_candidate) < len(users)
    # The key, not chance, chose: REST with the same header gets the same version.
    with httpx.Client(timeout=30) as rest:
        for user in users:
            answer = rest.post(
                f"{server.base_url}/v2/models/sticky_grpc/infer",
                json=body(),
                headers={"x-user-id": user},
            )
            assert {answer.json()["model_version"]} == seen[user], user
