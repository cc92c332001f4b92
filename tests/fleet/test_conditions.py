"""The ServerDown condition (fleet.conditions) on a fake clock, alone and feeding the
reconciler, and through the control plane's API in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferbridge.fleet.api import FleetApp
from inferbridge.fleet.conditions import ServerWatch, server_trouble
from inferbridge.fleet.controlplane import ControlPlane
from inferbridge.fleet.errors import InvalidSpec
from inferbridge.fleet.policy import SpreadPolicy
from inferbridge.fleet.reconciler import NodeState, reconcile
from inferbridge.fleet.spec import Capacity, DeploymentSpec
from inferbridge.fleet.store import SqliteStore

DOWN = server_trouble({"live": False, "ready": False})


def test_server_trouble_reads_the_agents_report() -> None:
    assert "not live" in server_trouble({"live": False, "ready": False})
    assert "not ready" in server_trouble({"live": True, "ready": False})
    assert server_trouble({"live": True, "ready": True}) == ""
    # An agent that does not report its server is not taken for a dead server.
    assert server_trouble({}) == ""


def test_down_past_the_grace_period_replaces_and_settles_back() -> None:
    watch = ServerWatch(grace_s=30, settle_s=10)
    assert watch.observe("", 0.0) is False and watch.condition(0.0, 1000.0) is None
    assert watch.observe(DOWN, 5.0) is False  # the condition starts, nothing moves yet
    condition = watch.condition(20.0, 1000.0)
    assert condition is not None and condition["type"] == "ServerDown"
    assert condition["for_s"] == 15.0 and condition["since"] == 985.0
    assert condition["replaced"] is False and "15.0 s left" in condition["reason"]
    assert watch.usable
    assert watch.tick(34.9) is False and watch.usable
    assert watch.tick(35.0) is True and not watch.usable  # 30 s down: replicas move
    assert watch.condition(36.0, 0.0)["replaced"] is True  # type: ignore[index]
    # Back up: still unusable until it has been up settle_s.
    assert watch.observe("", 40.0) is False and not watch.usable
    back = watch.condition(45.0, 0.0)
    assert back is not None and "the server is back" in back["reason"]
    assert watch.observe("", 49.9) is False
    assert watch.tick(50.0) is True and watch.usable
    assert watch.condition(50.0, 0.0) is None


def test_a_flapping_server_moves_nothing() -> None:
    watch = ServerWatch(grace_s=30, settle_s=10)
    now = 0.0
    for _ in range(20):  # down 20 s, up 2 s, again and again: never 30 s without a break
        assert watch.observe(DOWN, now) is False
        assert watch.tick(now + 20) is False
        now += 20
        assert watch.observe("", now) is False
        now += 2
    assert watch.usable and watch.condition(now, 0.0) is None


def test_a_server_back_briefly_after_replacement_gets_nothing_back() -> None:
    watch = ServerWatch(grace_s=30, settle_s=10)
    watch.observe(DOWN, 0.0)
    assert watch.tick(30.0) is True and not watch.usable
    for start in (40.0, 60.0, 80.0):  # up 5 s, down again: shorter than settle_s
        assert watch.observe("", start) is False
        assert watch.observe("", start + 5) is False
        assert watch.observe(DOWN, start + 6) is False
        assert not watch.usable
    condition = watch.condition(90.0, 1000.0)
    assert condition is not None and condition["for_s"] == 90.0  # the same outage


_CAP = Capacity(cpu=4, memory=8 * 1024**3)


def test_the_reconciler_moves_the_replica_and_gives_it_back_once() -> None:
    """A timeline on a fake clock: the watch decides, the reconciler places."""
    spec = {"iris": DeploymentSpec.model_validate({"model": "iris", "version": 1})}
    watches = {n: ServerWatch(grace_s=30, settle_s=10) for n in "ab"}
    ready_since = {"a": 0.0, "b": 0.0}
    assignments: dict[str, dict[str, int]] = {"a": {"iris": 1}, "b": {}}
    moves: list[tuple[float, dict[str, dict[str, int]]]] = []

    def step(now: float, troubles: dict[str, str]) -> None:
        nonlocal assignments
        for name, watch in watches.items():
            if watch.observe(troubles.get(name, ""), now) and watch.usable:
                ready_since[name] = now
        nodes = {
            n: NodeState(n, {}, _CAP, watches[n].usable, not troubles.get(n), {}, ready_since[n])
            for n in watches
        }
        out = reconcile(spec, {}, nodes, assignments, SpreadPolicy(), now)
        if out.assignments != assignments:
            moves.append((now, out.assignments))
        assignments = out.assignments

    for second in range(0, 200):
        if 10 <= second < 60:
            step(float(second), {"a": DOWN})  # a's server is down for 50 s
        else:
            step(float(second), {})
    # Exactly two changes: b takes the replica at 40 s (10 + grace), a drops its copy at
    # 70 s (back at 60 s + settle); b keeps it from then on.
    assert [(t, {n: m for n, m in a.items() if m}) for t, a in moves] == [
        (40.0, {"a": {"iris": 1}, "b": {"iris": 1}}),
        (70.0, {"b": {"iris": 1}}),
    ]


# -- through the control plane's API ---------------------------------------------------

ADMIN = {"authorization": "Bearer admin-secret"}
SHA = "ab" * 32


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, httpx.AsyncClient]]:
    plane = ControlPlane(
        SqliteStore(tmp_path / "fleet.db"),
        admin_token="admin-secret",
        bootstrap_token="boot",
        server_down_grace_s=0.6,
        server_settle_s=0.4,
    )
    await plane.start()
    transport = httpx.ASGITransport(app=FleetApp(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
        yield plane, client
    await plane.stop()
    await plane.store.close()


async def _register(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    body = {"name": name, "capacity": {"cpu": 4, "memory": 2**33}, "heartbeat_interval_s": 5}
    answer = await client.post(
        "/v1/fleet/agent/register", json=body, headers={"authorization": "Bearer boot"}
    )
    assert answer.status_code == 200, answer.text
    return {"authorization": f"Bearer {answer.json()['token']}"}


async def _until(what: str, check: Any, timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_server_down_node_is_shown_and_replaced_then_recovers(
    fleet: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    plane, client = fleet
    tokens = {n: await _register(client, n) for n in ("n1", "n2")}
    manifest = {"model": "iris", "version": 1, "uri": "s3://m/iris/1.tgz", "sha256": SHA, "size": 1}
    assert (await client.post("/v1/fleet/artifacts", json=manifest, headers=ADMIN)).is_success
    deployed = await client.put("/v1/fleet/deployments/iris", json={"version": 1}, headers=ADMIN)
    assert deployed.is_success
    first = await _until("iris placed", lambda: _host(plane), timeout=5)
    other = "n2" if first == "n1" else "n1"

    async def beat(server_up: bool) -> None:
        for name in (first, other):
            up = server_up or name == other
            body = {
                "server": {"live": up, "ready": up},
                "models": [{"model": "iris", "version": 1, "state": "READY"}]
                if "iris" in plane.assignments.get(name, {})
                else [],
            }
            answer = await client.post(
                f"/v1/fleet/agent/{name}/heartbeat", json=body, headers=tokens[name]
            )
            assert answer.status_code == 200, answer.text

    await beat(False)
    view = (await client.get(f"/v1/fleet/nodes/{first}", headers=ADMIN)).json()
    assert view["state"] == "Ready" and [c["type"] for c in view["conditions"]] == ["ServerDown"]
    assert "not live" in view["conditions"][0]["reason"] and not view["conditions"][0]["replaced"]
    status = (await client.get("/v1/fleet/status", headers=ADMIN)).json()
    assert status["nodes"]["server_down"] == [first]
    # Within the grace period the replica stays where it is.
    assert "iris" in plane.assignments[first] and "iris" not in plane.assignments[other]

    async def moved() -> bool:
        await beat(False)
        return "iris" in plane.assignments.get(other, {})

    await _until("the replica placed on the other node", moved)
    assert plane.assignments[first] == {"iris": 1}  # kept, not unloaded, while down
    view = (await client.get(f"/v1/fleet/nodes/{first}", headers=ADMIN)).json()
    assert view["conditions"][0]["replaced"] is True

    async def recovered() -> bool:
        await beat(True)
        return "iris" not in plane.assignments.get(first, {})

    await _until("the recovered node to give up the surplus replica", recovered)
    view = (await client.get(f"/v1/fleet/nodes/{first}", headers=ADMIN)).json()
    assert view["conditions"] == [] and plane.assignments[other] == {"iris": 1}


def _host(plane: ControlPlane) -> Any:
    async def check() -> str | None:
        return next((n for n, m in plane.assignments.items() if "iris" in m), None)

    return check()


def test_grace_settings_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INFERBRIDGE_FLEET_SERVER_DOWN_GRACE_S", "soon")
    with pytest.raises(InvalidSpec, match="INFERBRIDGE_FLEET_SERVER_DOWN_GRACE_S must be a number"):
        ControlPlane(SqliteStore(tmp_path / "a.db"), admin_token="a", bootstrap_token="b")
    monkeypatch.setenv("INFERBRIDGE_FLEET_SERVER_DOWN_GRACE_S", "12")
    plane = ControlPlane(SqliteStore(tmp_path / "b.db"), admin_token="a", bootstrap_token="b")
    assert plane.server_down_grace_s == 12.0 and plane.server_settle_s == 10.0
    with pytest.raises(InvalidSpec, match="between 0 and 86400"):
        ControlPlane(
            SqliteStore(tmp_path / "c.db"),
            admin_token="a",
            bootstrap_token="b",
            server_settle_s=-1,
        )


def _serve_options(*argv: str) -> Any:
    import argparse

    from inferbridge.fleet.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["fleet", "serve", *argv])


def test_fleet_serve_flags_for_the_periods(capsys: pytest.CaptureFixture[str]) -> None:
    options = _serve_options()
    assert (options.server_down_grace, options.server_settle) == (None, None)  # env, else 30/10
    options = _serve_options("--server-down-grace", "4.5", "--server-settle", "0")
    assert (options.server_down_grace, options.server_settle) == (4.5, 0.0)
    for flag, value, expected in [
        ("--server-down-grace", "soon", "expected a number of seconds, not 'soon'"),
        ("--server-settle", "-1", "expected 0 to 86400 seconds, not '-1'"),
        ("--server-down-grace", "nan", "expected 0 to 86400 seconds, not 'nan'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            _serve_options(flag, value)
        assert exit_info.value.code == 2
        assert f"argument {flag}: {expected}" in capsys.readouterr().err
