"""A replica's copy of the fleet, in process: what another replica's watched changes and
records do to it, what it publishes, and a heartbeat's per-version statistics."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferbridge.fleet.api import FleetApp
from inferbridge.fleet.controlplane import ControlPlane
from inferbridge.fleet.etcd import Event
from inferbridge.fleet.store import SqliteStore

SHA = "ab" * 32


class _Follower:
    """Leadership as a follower sees it (no election runs)."""

    identity = "http://me:9001"
    leader = "http://leader:9000"
    is_leader = False

    async def run(self) -> None:
        await asyncio.Event().wait()


class _NoReplication:
    async def run(self, plane: ControlPlane) -> None:
        await asyncio.Event().wait()


@pytest.fixture
async def follower(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, httpx.AsyncClient]]:
    plane = ControlPlane(
        SqliteStore(tmp_path / "fleet.db"),
        admin_token="admin-secret",
        bootstrap_token="boot",
        leadership=_Follower(),  # type: ignore[arg-type]
        replicator=_NoReplication(),
    )
    await plane.start()
    transport = httpx.ASGITransport(app=FleetApp(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
        yield plane, client
    await plane.stop()
    await plane.store.close()


def _record(by: str, ready: bool = True, **kw: Any) -> dict[str, Any]:
    return {
        "by": by,
        "ready": ready,
        "interval_s": 1.0,
        "server": {"live": True, "ready": True},
        "models": [{"model": "iris", "version": 1, "state": "READY", "reason": ""}],
        **kw,
    }


async def test_a_follower_serves_reads_and_polls_from_watched_changes(
    follower: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    plane, client = follower
    node = {"name": "n1", "labels": {}, "capacity": {"cpu": 4}, "server_url": "http://n1:8000"}
    manifest = {
        "model": "iris",
        "version": 1,
        "uri": "s3://m/iris/1/m.tgz",
        "sha256": SHA,
        "size": 1,
    }
    plane.apply_events(
        [
            Event("nodes", "n1", node, 2),
            Event("artifacts", "iris/1", manifest, 3),
            Event("deployments", "iris", {"model": "iris", "version": 1}, 4),
            Event("observed", "n1", _record("http://leader:9000"), 5),
        ],
        snapshot=True,
    )
    nodes = (
        await client.get("/v1/fleet/nodes", headers={"authorization": "Bearer admin-secret"})
    ).json()
    assert [(n["name"], n["state"], n["control_plane"]) for n in nodes["nodes"]] == [
        ("n1", "Ready", "http://leader:9000")
    ]
    routing = (
        await client.get("/v1/fleet/routing", headers={"authorization": "Bearer admin-secret"})
    ).json()
    assert routing == {"models": {"iris": [{"node": "n1", "version": 1, "url": "http://n1:8000"}]}}
    # Writes go to the leader; the follower names it.
    refused = await client.put(
        "/v1/fleet/deployments/iris",
        json={"version": 1},
        headers={"authorization": "Bearer admin-secret"},
    )
    assert refused.status_code == 503 and refused.json()["leader"] == "http://leader:9000"
    # A poll waiting for the node's assignments is answered when the watch brings them.
    plane.nodes["n1"]["token_sha256"] = hashlib.sha256(b"t").hexdigest()
    agent = {"authorization": "Bearer t"}
    first = (await client.get("/v1/fleet/agent/n1/assignments?wait_s=0", headers=agent)).json()
    assert first["assignments"] == []
    poll = asyncio.create_task(
        client.get(f"/v1/fleet/agent/n1/assignments?wait_s=10&etag={first['etag']}", headers=agent)
    )
    await asyncio.sleep(0.2)
    assert not poll.done()
    plane.apply_events([Event("assignments", "n1", {"models": {"iris": 1}}, 6)])
    answer = (await asyncio.wait_for(poll, 5)).json()
    assert [(a["model"], a["version"]) for a in answer["assignments"]] == [("iris", 1)]
    # The follower works the status out from its copy (a dry pass).
    for _ in range(50):
        status = (
            await client.get("/v1/fleet/status", headers={"authorization": "Bearer admin-secret"})
        ).json()
        if status["deployments"][0].get("ready") == 1:
            break
        await asyncio.sleep(0.1)
    assert status["deployments"][0]["ready"] == 1
    # Diagnostics are answered where the agent's poll is.
    elsewhere = await client.post(
        "/v1/fleet/nodes/n1/diagnose", headers={"authorization": "Bearer admin-secret"}
    )
    assert elsewhere.status_code == 503 and "http://leader:9000" in elsewhere.json()["error"]


async def test_records_follow_the_relaying_replica_and_heartbeats_here_are_published(
    follower: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    plane, client = follower
    plane.apply_events([Event("nodes", "n1", {"name": "n1", "capacity": {}}, 2)])
    plane.apply_events([Event("observed", "n1", _record("http://other:9002", ready=False), 3)])
    assert plane.node_view("n1")["state"] == "NotReady"
    # Its own records, read back, change nothing.
    plane.apply_events([Event("observed", "n1", _record(_Follower.identity), 4)])
    assert plane.node_view("n1")["state"] == "NotReady"
    # The relaying replica's lease expired: the node gets a liveness window of its own.
    plane.apply_events([Event("observed", "n1", None, 5)])
    assert plane.observed["n1"].relayed_by == "" and plane.take_published() == []
    token = await client.post(
        "/v1/fleet/agent/register",
        json={"name": "n2", "capacity": {"cpu": 2}},
        headers={"authorization": "Bearer boot"},
    )
    beat = await client.post(
        "/v1/fleet/agent/n2/heartbeat",
        json={
            "server": {"ready": True},
            "models": [
                {
                    "model": "iris",
                    "version": 2,
                    "state": "READY",
                    "stats": {"success": {"count": 9, "ns": 90}, "fail": {"count": 1, "ns": 5}},
                }
            ],
        },
        headers={"authorization": f"Bearer {token.json()['token']}"},
    )
    assert beat.status_code == 200, beat.text
    published = dict(plane.take_published())
    assert published["n2"]["by"] == _Follower.identity and published["n2"]["ready"] is True
    assert published["n2"]["models"] == [
        {
            "model": "iris",
            "version": 2,
            "state": "READY",
            "reason": "",
            "stats": {"success": {"count": 9, "ns": 90}, "fail": {"count": 1}},
        }
    ]
    assert plane.take_published() == []  # nothing changed since


async def test_a_heartbeat_with_malformed_stats_is_refused_naming_the_format(
    follower: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    _, client = follower
    token = await client.post(
        "/v1/fleet/agent/register", json={"name": "n3"}, headers={"authorization": "Bearer boot"}
    )
    beat = await client.post(
        "/v1/fleet/agent/n3/heartbeat",
        json={
            "models": [{"model": "iris", "version": 2, "state": "READY", "stats": {"success": 3}}]
        },
        headers={"authorization": f"Bearer {token.json()['token']}"},
    )
    assert beat.status_code == 400
    assert "'stats' must be" in beat.json()["error"] and "inference_stats" in beat.json()["error"]
