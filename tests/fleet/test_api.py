"""The control plane's HTTP API in process: auth, validation, long polls, diagnostics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferbridge.fleet.api import FleetApp
from inferbridge.fleet.controlplane import ControlPlane
from inferbridge.fleet.store import SqliteStore

ADMIN = {"authorization": "Bearer admin-secret"}
SHA = "ab" * 32


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, httpx.AsyncClient]]:
    plane = ControlPlane(
        SqliteStore(tmp_path / "fleet.db"), admin_token="admin-secret", bootstrap_token="boot"
    )
    await plane.start()
    transport = httpx.ASGITransport(app=FleetApp(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
        yield plane, client
    await plane.stop()
    await plane.store.close()


async def _register(client: httpx.AsyncClient, name: str = "n1", **extra: Any) -> str:
    body = {"name": name, "labels": {"zone": "a"}, "capacity": {"cpu": 4, "memory": 2**33}, **extra}
    answer = await client.post(
        "/v1/fleet/agent/register", json=body, headers={"authorization": "Bearer boot"}
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def _manifest(version: int = 1, **kw: Any) -> dict[str, Any]:
    return {
        "model": "iris",
        "version": version,
        "uri": f"s3://models/iris/{version}/model.tar.gz",
        "sha256": SHA,
        "size": 100,
        **kw,
    }


async def test_tokens_are_required_and_stored_hashed(
    fleet: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    plane, client = fleet
    assert (await client.get("/v1/fleet/nodes")).status_code == 401
    bad = await client.post(
        "/v1/fleet/agent/register", json={"name": "n1"}, headers={"authorization": "Bearer nope"}
    )
    assert bad.status_code == 401
    token = await _register(client)
    stored = await plane.store.get("nodes", "n1")
    assert stored is not None and token not in str(stored) and len(stored["token_sha256"]) == 64
    hb = await client.post("/v1/fleet/agent/n1/heartbeat", json={}, headers=ADMIN)
    assert hb.status_code == 401
    unknown = await client.post("/v1/fleet/agent/ghost/heartbeat", json={}, headers=ADMIN)
    assert unknown.status_code == 404 and "unknown node 'ghost'" in unknown.json()["error"]
    ok = await client.post(
        "/v1/fleet/agent/n1/heartbeat", json={}, headers={"authorization": f"Bearer {token}"}
    )
    assert ok.status_code == 200
    # Re-registering with the node's own token works and rotates it.
    again = await _register(client)
    assert again != token


async def test_bad_input_is_refused_and_nothing_half_applied(
    fleet: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    plane, client = fleet
    malformed = await client.post(
        "/v1/fleet/artifacts", json=_manifest(sha256="xyz"), headers=ADMIN
    )
    assert malformed.status_code == 400 and "sha256" in malformed.json()["error"]
    not_json = await client.post("/v1/fleet/artifacts", content=b"{", headers=ADMIN)
    assert not_json.status_code == 400
    missing = await client.put("/v1/fleet/deployments/iris", json={"version": 1}, headers=ADMIN)
    assert missing.status_code == 404 and "push it first" in missing.json()["error"]
    assert (
        await client.post("/v1/fleet/artifacts", json=_manifest(), headers=ADMIN)
    ).status_code == 201
    bad_resources = await client.put(
        "/v1/fleet/deployments/iris", json={"version": 1, "resources": "cpu=lots"}, headers=ADMIN
    )
    assert bad_resources.status_code == 400 and "cpu 'lots'" in bad_resources.json()["error"]
    # One good and one bad deployment in an apply: neither lands.
    both = await client.post(
        "/v1/fleet/apply",
        json={"deployments": [{"model": "iris", "version": 1}, {"model": "other", "version": 1}]},
        headers=ADMIN,
    )
    assert both.status_code == 404
    assert plane.deployments == {} and await plane.store.list("deployments") == {}
    waves = await client.post(
        "/v1/fleet/rollouts", json={"model": "iris", "version": 2, "waves": [10, 50]}, headers=ADMIN
    )
    assert waves.status_code == 400 and "the last wave must be 100%" in waves.json()["error"]
    logs = await client.get("/v1/fleet/nodes/ghost/logs", headers=ADMIN)
    assert logs.status_code == 404


async def test_long_poll_wakes_on_new_assignments_and_diagnostics(
    fleet: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    _, client = fleet
    token = await _register(client)
    node = {"authorization": f"Bearer {token}"}
    first = (await client.get("/v1/fleet/agent/n1/assignments?wait_s=0", headers=node)).json()
    assert first["assignments"] == []
    poll = asyncio.create_task(
        client.get(f"/v1/fleet/agent/n1/assignments?etag={first['etag']}&wait_s=30", headers=node)
    )
    await client.post("/v1/fleet/artifacts", json=_manifest(), headers=ADMIN)
    deployed = await client.put("/v1/fleet/deployments/iris", json={"version": 1}, headers=ADMIN)
    assert deployed.status_code == 200
    answer = (await asyncio.wait_for(poll, 30)).json()
    assert [a["model"] for a in answer["assignments"]] == ["iris"]
    assert answer["assignments"][0]["sha256"] == SHA

    async def agent() -> None:
        got = await client.get(
            f"/v1/fleet/agent/n1/assignments?etag={answer['etag']}&wait_s=30", headers=node
        )
        request = got.json()["requests"][0]
        assert request["kind"] == "logs" and request["lines"] == 5
        await client.post(
            f"/v1/fleet/agent/n1/requests/{request['id']}", json={"lines": ["x"]}, headers=node
        )

    helper = asyncio.create_task(agent())
    logs = await client.get("/v1/fleet/nodes/n1/logs?lines=5", headers=ADMIN)
    await helper
    assert logs.json() == {"lines": ["x"]}
    status = (await client.get("/v1/fleet/status", headers=ADMIN)).json()
    assert status["deployments"][0]["placed"] == 1


async def test_the_go_agents_version_stats_become_the_models_figures(
    fleet: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    """The Go agent reports every version's counters in `version_stats`; the entry of the
    version each model reports is what a wave's analysis judges, and a malformed list is
    refused naming the format."""
    plane, client = fleet
    token = await _register(client)
    auth = {"authorization": f"Bearer {token}"}
    body = {
        "models": [{"model": "iris", "version": 2, "state": "READY"}],
        "version_stats": [
            {
                "model": "iris",
                "version": 1,
                "success": 50,
                "fail": 0,
                "success_ns": 5,
                "fail_ns": 0,
            },
            {
                "model": "iris",
                "version": 2,
                "success": 7,
                "fail": 3,
                "success_ns": 700,
                "fail_ns": 9,
            },
            {
                "model": "other",
                "version": 1,
                "success": 1,
                "fail": 1,
                "success_ns": 1,
                "fail_ns": 1,
            },
        ],
    }
    answer = await client.post("/v1/fleet/agent/n1/heartbeat", json=body, headers=auth)
    assert answer.status_code == 200, answer.text
    figures = plane.observed["n1"].figures
    assert set(figures) == {"iris"}
    seen = figures["iris"]
    assert (seen.version, seen.success, seen.success_ns, seen.fail) == (2, 7, 700, 3)
    bad = await client.post(
        "/v1/fleet/agent/n1/heartbeat",
        json={**body, "version_stats": [{"model": "iris", "version": "two"}]},
        headers=auth,
    )
    assert bad.status_code == 400 and "version_stats" in bad.json()["error"]
    assert plane.observed["n1"].figures["iris"].success == 7  # nothing half-applied
