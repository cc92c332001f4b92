"""Fleet authentication end to end on loopback: a control plane with --auth-keys, a real
server and the Go agent, the `inferbridge fleet` CLI. An agent without a key is refused
401 and registers once its --api-key-file holds one; a read-only key cannot deploy (403);
an admin key can, and the model serves. Artefacts travel through a directory (no MinIO)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.procs import (
    ControlPlaneProc,
    Node,
    grep,
    iris_model,
    ready_on,
    start_control_plane,
    start_node,
    wait_for,
)
from tests.fleet.test_auth import KEYS, write_keys

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProc]:
    root = tmp_path_factory.mktemp("fleet-auth")
    keys = write_keys(root / "keys.yaml")
    proc = start_control_plane(root / "fleet.db", extra=["--auth-keys", str(keys)])
    proc.credential = {"x-api-key": KEYS["ops"][0]}
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def node(
    plane: ControlPlaneProc, agent_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    started = start_node(
        "node-k", tmp_path_factory.mktemp("node-k"), agent_binary, plane.url, env={}
    )
    yield started
    started.stop()


def cli(plane: ControlPlaneProc, *args: str, key: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERBRIDGE_")}
    env["INFERBRIDGE_FLEET_URL"] = plane.url
    if key is not None:
        env["INFERBRIDGE_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "inferbridge", "fleet", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _nodes(plane: ControlPlaneProc) -> dict[str, str]:
    return {n["name"]: n["state"] for n in plane.get("/v1/fleet/nodes")["nodes"]}


def test_an_agent_without_a_key_is_refused_then_registers_with_one(
    plane: ControlPlaneProc, node: Node
) -> None:
    assert grep(r"the admin\s+and bootstrap tokens are not accepted", plane.proc.text())
    # started with only the bootstrap token: the control plane does not take it
    assert node.agent is not None
    agent = node.agent
    wait_for("the agent to be refused", lambda: "HTTP 401" in agent.text())
    assert grep(r"HTTP 401: [^\n]*API key", agent.text())  # the bootstrap token, read as a key
    assert _nodes(plane) == {}

    node.stop_agent()
    key_file = node.root / "agent.key"
    node.extra = ["--api-key-file", str(key_file)]
    node.start_agent()
    agent = node.agent
    wait_for("the agent to find no key", lambda: "no API key to send" in agent.text())
    wait_for("a refusal without a key", lambda: "authentication required" in agent.text())
    assert _nodes(plane) == {}

    key_file.write_text(KEYS["agent-a"][0] + "\n")  # provisioned while the agent runs
    wait_for("node-k to register", lambda: _nodes(plane).get("node-k") == "Ready")
    assert plane.node("node-k")["principal"] == "agent-a"
    assert KEYS["agent-a"][0] not in plane.proc.text()  # never logged


def test_a_read_only_key_cannot_deploy_and_an_admin_key_can(
    plane: ControlPlaneProc, node: Node, examples_dir: Path, tmp_path: Path
) -> None:
    wait_for("node-k to register", lambda: _nodes(plane).get("node-k") == "Ready")
    model = iris_model(tmp_path / "models", "iris_keyed", examples_dir / "iris_onnx", {1: None})
    store = tmp_path / "artifacts"

    nobody = cli(plane, "status", key=None)
    assert nobody.returncode == 1
    assert "authentication required" in nobody.stderr and "HTTP 401" in nobody.stderr

    viewer = KEYS["viewer"][0]
    pushed = cli(plane, "push", str(model), "--version", "1", "--to", str(store), key=viewer)
    assert pushed.returncode == 1 and "HTTP 403" in pushed.stderr, pushed.stderr
    listed = cli(plane, "nodes", key=viewer)
    assert listed.returncode == 0 and "node-k" in listed.stdout, listed.stderr

    ops = KEYS["ops"][0]
    pushed = cli(plane, "push", str(model), "--version", "1", "--to", str(store), key=ops)
    assert pushed.returncode == 0, pushed.stderr
    refused = cli(plane, "deploy", "iris_keyed", "--version", "1", key=viewer)
    assert refused.returncode == 1
    assert grep(
        r"principal 'viewer' may not change the server \(.*admin.*\) \(its scopes: read\) "
        r"\(HTTP 403\)",
        refused.stderr,
    ), refused.stderr
    assert plane.get("/v1/fleet/deployments")["deployments"] == []

    admin_file = tmp_path / "ops.key"
    admin_file.write_text(ops + "\n")
    deployed = cli(
        plane, "deploy", "iris_keyed", "--version", "1", "--api-key-file", str(admin_file), key=None
    )
    assert deployed.returncode == 0, deployed.stderr
    wait_for("iris_keyed on node-k", lambda: ready_on(plane, "node-k", "iris_keyed", 1))
    assert node.infer("iris_keyed").json()["model_version"] == "1"
