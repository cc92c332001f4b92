"""Two control-plane replicas on a real 3-member etcd cluster. The node's agent talks only
to the follower, which serves it and the read API from its copy of etcd (its reads match
the leader's); then the etcd leader is killed, then the control-plane leader; the fleet
goes on through the survivors."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferbridge.fleet.push import push
from tests.fleet.procs import (
    ControlPlaneProc,
    EtcdMember,
    MinIO,
    etcd_leader,
    free_port,
    iris_model,
    ready_on,
    start_etcd_cluster,
    start_node,
    start_replica,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def etcd() -> Iterator[list[EtcdMember]]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (.ci/run installs Debian's etcd-server)")
    members = start_etcd_cluster(3)
    yield members
    for member in members:
        member.proc.stop()
        shutil.rmtree(member.data, ignore_errors=True)


def _leader(replicas: list[ControlPlaneProc]) -> ControlPlaneProc | None:
    for replica in replicas:
        if replica.proc.process.poll() is None:
            try:
                if httpx.get(f"{replica.url}/v1/fleet/health", timeout=2).json()["leader"]:
                    return replica
            except httpx.HTTPError:
                continue
    return None


def _reads(plane: ControlPlaneProc) -> dict[str, Any]:
    """What the read API says, without what differs by when it is asked."""
    nodes = [
        {k: n[k] for k in ("name", "state", "assigned", "models", "server", "control_plane")}
        for n in plane.get("/v1/fleet/nodes")["nodes"]
    ]
    return {
        "nodes": nodes,
        "status": plane.get("/v1/fleet/status"),
        "routing": plane.get("/v1/fleet/routing"),
        "deployments": plane.get("/v1/fleet/deployments"),
        "artifacts": plane.get("/v1/fleet/artifacts"),
    }


def test_replicas_on_etcd_survive_losing_the_etcd_and_the_fleet_leader(
    etcd: list[EtcdMember], minio: MinIO, agent_binary: Path, examples_dir: Path
) -> None:
    store = "etcd:" + ",".join(m.client_url for m in etcd)
    replicas = [start_replica(store, free_port()), start_replica(store, free_port())]
    root = Path(tempfile.mkdtemp(prefix="ib-fleet-etcd-"))
    node = None
    try:
        leader = wait_for("a control-plane leader", lambda: _leader(replicas))
        follower = next(r for r in replicas if r is not leader)
        # The admin API's changes go to the leader; the follower names it.
        refused = follower.call("PUT", "/v1/fleet/deployments/iris_etcd_1", {"version": 1})
        assert refused.status_code == 503 and refused.json()["leader"] == leader.url
        assert follower.get("/v1/fleet/nodes") == {"nodes": []}
        # The agent knows only the follower: registration, heartbeats, long poll there.
        node = start_node("etcd-node", root / "node", agent_binary, follower.url, minio.env)
        for plane in (follower, leader):
            wait_for(
                f"the node Ready on {plane.url}",
                lambda p=plane: p.node("etcd-node")["state"] == "Ready",
            )
        wait_for(
            "the leader to follow the node through the follower's record",
            lambda: leader.node("etcd-node")["control_plane"] == follower.url,
        )

        def deploy(plane: ControlPlaneProc, name: str) -> None:
            model = iris_model(root / "models", name, examples_dir / "iris_onnx", {1: None})
            manifest = push(model, 1, "s3://models", s3_client=minio.client())
            # While etcd elects a new leader of its own, writes may be refused for a moment.
            wait_for(
                f"{name}'s manifest accepted",
                lambda: plane.call("POST", "/v1/fleet/artifacts", manifest.model_dump()).is_success,
            )
            wait_for(
                f"{name} deployed",
                lambda: (
                    plane.call("PUT", f"/v1/fleet/deployments/{name}", {"version": 1}).is_success
                ),
            )
            wait_for(f"{name} READY", lambda: ready_on(plane, "etcd-node", name, 1))

        deploy(leader, "iris_etcd_1")
        wait_for(
            "iris_etcd_1 READY on the follower",
            lambda: ready_on(follower, "etcd-node", "iris_etcd_1", 1),
        )
        assert node.infer("iris_etcd_1").status_code == 200
        wait_for(
            "the follower's reads to match the leader's", lambda: _reads(follower) == _reads(leader)
        )
        routing = follower.get("/v1/fleet/routing")["models"]["iris_etcd_1"]
        assert [r["node"] for r in routing] == ["etcd-node"]
        # Diagnostics travel over the agent's long poll, which the follower holds; the
        # leader relays them there.
        assert follower.call("POST", "/v1/fleet/nodes/etcd-node/diagnose").status_code == 200
        elsewhere = leader.call("POST", "/v1/fleet/nodes/etcd-node/diagnose")
        assert elsewhere.status_code == 200 and "health" in elsewhere.json(), elsewhere.text

        etcd_leader(etcd).proc.stop(signal.SIGKILL)
        deploy(leader, "iris_etcd_2")  # two of three members are a quorum

        leader.proc.stop(signal.SIGKILL)
        successor = wait_for("the other replica to lead", lambda: _leader(replicas))
        assert successor is follower
        wait_for(
            "the node Ready on the new leader",
            lambda: successor.node("etcd-node")["state"] == "Ready",
        )
        for name in ("iris_etcd_1", "iris_etcd_2"):
            wait_for(f"{name} still READY", lambda n=name: ready_on(successor, "etcd-node", n, 1))
            assert node.infer(name).status_code == 200
        deploy(successor, "iris_etcd_3")
    finally:
        if node is not None:
            node.stop()
        for replica in replicas:
            replica.stop()


def test_diagnostics_are_relayed_to_the_replica_holding_the_agent(
    etcd: list[EtcdMember], minio: MinIO, agent_binary: Path
) -> None:
    """`diagnose`/`logs` sent to a replica that does not hold the node's agent channel
    reach the agent through the one that does; when that one dies, the others answer a
    clear error naming the node and the replica at once, not a hang."""
    store = "etcd:" + ",".join(m.client_url for m in etcd)
    replicas = [start_replica(store, free_port()) for _ in range(3)]
    root = Path(tempfile.mkdtemp(prefix="ib-fleet-relay-"))
    node = None
    try:
        holder = replicas[1]
        node = start_node("relay-node", root / "node", agent_binary, holder.url, minio.env)
        for plane in replicas:
            wait_for(
                f"{plane.url} to know who holds the node",
                lambda p=plane: p.node("relay-node").get("control_plane") == holder.url,
            )
        for plane in (replicas[0], replicas[2]):
            report = plane.call("POST", "/v1/fleet/nodes/relay-node/diagnose")
            assert report.status_code == 200, report.text
            assert "health" in report.json() and "disk" in report.json()
            logs = plane.call("GET", "/v1/fleet/nodes/relay-node/logs", lines=5)
            assert logs.status_code == 200 and "lines" in logs.json(), logs.text
            assert 1 <= len(logs.json()["lines"]) <= 5
        # The holder's checks apply as if it were asked directly: a bad credential is
        # refused there, and a bad argument here, before any hop.
        wrong = httpx.post(
            f"{replicas[0].url}/v1/fleet/nodes/relay-node/diagnose",
            headers={"authorization": "Bearer wrong"},
            timeout=30,
        )
        assert wrong.status_code == 401
        bad = replicas[0].call("GET", "/v1/fleet/nodes/relay-node/logs", lines=0)
        assert bad.status_code == 400 and "lines must be between" in bad.json()["error"]
        # A relayed request is answered where it lands, never forwarded again.
        hop = httpx.post(
            f"{replicas[0].url}/v1/fleet/nodes/relay-node/diagnose",
            headers={**replicas[0].credential, "x-inferbridge-fleet-relayed": "test"},
            timeout=30,
        )
        assert hop.status_code == 503 and holder.url in hop.json()["error"], hop.text

        holder.proc.stop(signal.SIGKILL)
        began = time.monotonic()
        gone = replicas[0].call("POST", "/v1/fleet/nodes/relay-node/diagnose")
        assert time.monotonic() - began < 10
        assert gone.status_code == 503, gone.text
        error = gone.json()["error"]
        assert "relay-node" in error and holder.url in error and "cannot be reached" in error
        assert gone.json()["control_plane"] == holder.url
    finally:
        if node is not None:
            node.stop()
        for replica in replicas:
            replica.stop()


def test_a_server_down_behind_a_follower_is_re_placed_by_the_leader(
    etcd: list[EtcdMember], minio: MinIO, agent_binary: Path, examples_dir: Path
) -> None:
    """Both agents talk to the follower only: the leader sees the killed server through
    the follower's record, shows ServerDown, and re-places the replica after the grace
    period."""
    store = "etcd:" + ",".join(m.client_url for m in etcd)
    grace = {
        "INFERBRIDGE_FLEET_SERVER_DOWN_GRACE_S": "3",
        "INFERBRIDGE_FLEET_SERVER_SETTLE_S": "2",
    }
    replicas = [start_replica(store, free_port(), env=grace) for _ in range(2)]
    root = Path(tempfile.mkdtemp(prefix="ib-fleet-etcd-sd-"))
    nodes = []
    try:
        leader = wait_for("a control-plane leader", lambda: _leader(replicas))
        follower = next(r for r in replicas if r is not leader)
        for name in ("sd-a", "sd-b"):
            nodes.append(start_node(name, root / name, agent_binary, follower.url, minio.env))
        for name in ("sd-a", "sd-b"):
            wait_for(
                f"the leader to follow {name} through the follower's record",
                lambda n=name: leader.node(n).get("control_plane") == follower.url,
            )
        model = iris_model(root / "models", "iris_etcd_sd", examples_dir / "iris_onnx", {1: None})
        manifest = push(model, 1, "s3://models", s3_client=minio.client())
        leader.call("POST", "/v1/fleet/artifacts", manifest.model_dump()).raise_for_status()
        leader.call("PUT", "/v1/fleet/deployments/iris_etcd_sd", {"version": 1}).raise_for_status()
        first = wait_for(
            "iris_etcd_sd placed",
            lambda: next(
                (n for n in ("sd-a", "sd-b") if ready_on(leader, n, "iris_etcd_sd", 1)), None
            ),
        )
        other = "sd-b" if first == "sd-a" else "sd-a"
        next(n for n in nodes if n.name == first).server.stop(signal.SIGKILL)
        for plane in (leader, follower):
            down = wait_for(
                f"{first} ServerDown on {plane.url}", lambda p=plane: p.node(first)["conditions"]
            )
            assert down[0]["type"] == "ServerDown", down
        wait_for(f"the replica on {other}", lambda: ready_on(leader, other, "iris_etcd_sd", 1))
        assert leader.node(first)["assigned"] == {"iris_etcd_sd": 1}
        assert leader.get("/v1/fleet/status")["nodes"]["server_down"] == [first]
    finally:
        for node in nodes:
            node.stop()
        for replica in replicas:
            replica.stop()
