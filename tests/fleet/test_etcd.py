"""Two control-plane replicas on a real 3-member etcd cluster: the etcd leader is killed,
then the control-plane leader; the fleet goes on through the survivors."""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
        refused = follower.call("GET", "/v1/fleet/nodes")
        assert refused.status_code == 503 and refused.json()["leader"] == leader.url
        urls = ",".join(r.url for r in (follower, leader))  # the agent tries the follower first
        node = start_node("etcd-node", root / "node", agent_binary, urls, minio.env)

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
