"""Fixtures of the fleet's end-to-end tests: one MinIO, one control plane and two nodes
(real servers + agents) shared by the module, and the example iris model as artefacts."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inferbridge.fleet.agent_build import AgentBuildError, build_agent
from inferbridge.fleet.push import push
from tests.fleet.procs import (
    ControlPlaneProc,
    MinIO,
    Node,
    minio_binary,
    start_control_plane,
    start_minio,
    start_node,
)


@pytest.fixture(scope="session")
def agent_binary() -> Path:
    try:
        return build_agent()
    except AgentBuildError as exc:
        pytest.skip(f"the agent needs Go to build: {exc}")


@pytest.fixture(scope="session")
def minio() -> Iterator[MinIO]:
    binary = minio_binary()
    if binary is None:
        pytest.skip(
            "MinIO is not built (.ci/run builds it into ~/.cache/inferbridge/minio; "
            "or set INFERBRIDGE_MINIO)"
        )
    server = start_minio(binary)
    server.client().create_bucket(Bucket="models")
    yield server
    server.stop()


@dataclass
class Fleet:
    root: Path
    minio: MinIO
    plane: ControlPlaneProc
    nodes: dict[str, Node]
    agent_binary: Path

    @property
    def cli_env(self) -> dict[str, str]:
        from tests.fleet.procs import ADMIN_TOKEN

        return {
            **self.minio.env,
            "INFERBRIDGE_FLEET_URL": self.plane.url,
            "INFERBRIDGE_FLEET_TOKEN": ADMIN_TOKEN,
        }

    def push(self, model: Path, version: int) -> None:
        """`fleet push` in process (the CLI is exercised by the first test)."""
        manifest = push(model, version, "s3://models", s3_client=self.minio.client())
        self.plane.call("POST", "/v1/fleet/artifacts", manifest.model_dump()).raise_for_status()

    def deploy(self, model: str, version: int, **spec: Any) -> None:
        body = {"version": version, **spec}
        self.plane.call("PUT", f"/v1/fleet/deployments/{model}", body).raise_for_status()

    def undeploy(self, model: str) -> None:
        self.plane.call("DELETE", f"/v1/fleet/deployments/{model}").raise_for_status()

    def restart_plane(self) -> None:
        self.plane = start_control_plane(self.plane.store, self.plane.port)


@pytest.fixture(scope="module")
def fleet(minio: MinIO, agent_binary: Path, examples_dir: Path) -> Iterator[Fleet]:
    root = Path(tempfile.mkdtemp(prefix="ib-fleet-"))
    state = Fleet(root, minio, start_control_plane(root / "fleet.db"), {}, agent_binary)
    try:
        for name in ("node-a", "node-b"):
            state.nodes[name] = start_node(
                name, root / name, agent_binary, state.plane.url, minio.env
            )
        yield state
    finally:
        for node in state.nodes.values():
            node.stop()
        state.plane.stop()
