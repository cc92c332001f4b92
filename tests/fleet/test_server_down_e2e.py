"""ServerDown end to end: a node whose agent is alive but whose inferbridge server was
killed shows the condition, and after the grace period its replica is placed on the
other node; once its server is back (and has stayed up), the node drops the surplus
copy as a NotReady node does. Real processes: MinIO, the control plane (SQLite), two
agents beside two real servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.conftest import Fleet
from tests.fleet.procs import (
    MinIO,
    grep,
    iris_model,
    model_state,
    ready_on,
    start_control_plane,
    start_node,
    wait_for,
)

pytestmark = pytest.mark.slow

NODES = ("node-a", "node-b")
GRACE_S, SETTLE_S = 4, 3


@pytest.fixture(scope="module")
def fleet(minio: MinIO, agent_binary: Path) -> Iterator[Fleet]:
    root = Path(tempfile.mkdtemp(prefix="ib-fleet-sd-"))
    plane = start_control_plane(
        root / "fleet.db",
        # The flags win over the environment (which would give a grace this test outwaits).
        extra=["--server-down-grace", str(GRACE_S), "--server-settle", str(SETTLE_S)],
        env={
            "INFERBRIDGE_FLEET_SERVER_DOWN_GRACE_S": "600",
            "INFERBRIDGE_FLEET_SERVER_SETTLE_S": "600",
        },
    )
    state = Fleet(root, minio, plane, {}, agent_binary)
    try:
        for name in NODES:
            # node-a's agent advertises its server's gRPC address, node-b's does not.
            state.nodes[name] = start_node(
                name,
                root / name,
                agent_binary,
                plane.url,
                minio.env,
                advertise_grpc=name == "node-a",
            )
        yield state
    finally:
        for node in state.nodes.values():
            node.stop()
        state.plane.stop()


def _conditions(fleet: Fleet, node: str) -> list[dict[str, object]]:
    return list(fleet.plane.node(node)["conditions"])


def test_killed_server_is_server_down_and_its_replica_moves_then_comes_back(
    fleet: Fleet, examples_dir: Path
) -> None:
    model = iris_model(fleet.root / "models", "iris_sd", examples_dir / "iris_onnx", {1: None})
    fleet.push(model, 1)
    fleet.deploy("iris_sd", 1)
    first = wait_for(
        "iris_sd placed",
        lambda: next((n for n in NODES if ready_on(fleet.plane, n, "iris_sd", 1)), None),
    )
    other = next(n for n in NODES if n != first)
    wait_for("both nodes without conditions", lambda: not any(_conditions(fleet, n) for n in NODES))
    # The real agent's --advertise-grpc reaches the routing table.
    grpc_a = fleet.nodes["node-a"].server.grpc_url
    assert fleet.plane.node("node-a")["server_grpc"] == grpc_a
    assert fleet.plane.node("node-b")["server_grpc"] == ""
    (route,) = fleet.plane.get("/v1/fleet/routing")["models"]["iris_sd"]
    assert route.get("grpc") == (grpc_a if first == "node-a" else None), route

    fleet.nodes[first].server.stop(signal.SIGKILL)  # the server, not the agent
    down = wait_for(f"{first} ServerDown", lambda: _conditions(fleet, first))
    assert down[0]["type"] == "ServerDown" and "not live" in str(down[0]["reason"]), down
    view = fleet.plane.node(first)
    assert view["state"] == "Ready" and view["server"] == {"live": False, "ready": False}
    routes = fleet.plane.get("/v1/fleet/routing")["models"]
    assert all(r["node"] != first for entries in routes.values() for r in entries)
    listed = _cli(fleet, "nodes")
    assert grep(r"ServerDown for \d+ s: the server is not live", listed), listed

    # After the grace period the replica is placed on the other node; the node whose
    # server is down keeps its own assignment (it is not told to unload).
    wait_for(f"iris_sd on {other}", lambda: ready_on(fleet.plane, other, "iris_sd", 1))
    view = fleet.plane.node(first)
    assert view["assigned"] == {"iris_sd": 1}, view
    assert view["conditions"][0]["replaced"] is True, view
    assert fleet.plane.get("/v1/fleet/status")["nodes"]["server_down"] == [first]

    # Its server comes back (a service manager restarts it on the same port): the agent
    # loads its assignment again, and after the settle period the node is the surplus
    # replica (Ready the shortest time) and drops it; the other node keeps serving.
    fleet.nodes[first].restart_server()
    wait_for(f"{first} without conditions", lambda: not _conditions(fleet, first), timeout=90)
    wait_for(
        f"iris_sd gone from {first}",
        lambda: (
            model_state(fleet.plane, first, "iris_sd") is None
            and "iris_sd" not in fleet.nodes[first].index()
        ),
        timeout=90,
    )
    assert ready_on(fleet.plane, other, "iris_sd", 1)
    assert fleet.nodes[other].infer("iris_sd").status_code == 200
    assert fleet.plane.node(other)["assigned"] == {"iris_sd": 1}
    agent = fleet.nodes[other].agent
    assert agent is not None and "unloaded" not in agent.text()  # no churn on the other node
    fleet.undeploy("iris_sd")


def _cli(fleet: Fleet, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "inferbridge", "fleet", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **fleet.cli_env},
        timeout=120,
        check=True,
    )
    return result.stdout
