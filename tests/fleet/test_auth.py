"""The control plane's API with authentication on (--auth-keys), in process: scopes
(reads `read`, changes `admin`, agent routes `agent` or `admin`), the answers of
docs/security.md, a node bound to the principal that registered it, rate limits."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferbridge.fleet.api import FleetApp
from inferbridge.fleet.controlplane import ControlPlane
from inferbridge.fleet.store import SqliteStore
from inferbridge.security import AuthConfig, Authority, hash_key

KEYS = {
    "ops": ("ib_ops-key", ["admin"]),
    "viewer": ("ib_viewer-key", ["read"]),
    "agent-a": ("ib_agent-a-key", ["agent"]),
    "agent-b": ("ib_agent-b-key", ["agent"]),
    "inferer": ("ib_inferer-key", ["infer"]),
}
SHA = "ab" * 32


def _key(name: str) -> dict[str, str]:
    return {"x-api-key": KEYS[name][0]}


def write_keys(path: Path, extra: str = "") -> Path:
    lines = ["keys:"]
    for name, (key, scopes) in KEYS.items():
        lines += [f"  - name: {name}", f"    sha256: {hash_key(key)}", f"    scopes: {scopes}"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


async def _app(
    tmp_path: Path, authority: Authority | None, **tokens: Any
) -> tuple[ControlPlane, httpx.AsyncClient]:
    plane = ControlPlane(
        SqliteStore(tmp_path / "fleet.db"),
        admin_token=tokens.get("admin_token"),
        bootstrap_token=tokens.get("bootstrap_token"),
    )
    await plane.start()
    transport = httpx.ASGITransport(app=FleetApp(plane, authority))
    return plane, httpx.AsyncClient(transport=transport, base_url="http://cp")


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, httpx.AsyncClient]]:
    authority = Authority(AuthConfig(keys_file=write_keys(tmp_path / "keys.yaml")))
    plane, client = await _app(tmp_path, authority)
    async with client:
        yield plane, client
    await plane.stop()
    await plane.store.close()


def _registration(name: str = "n1") -> dict[str, Any]:
    return {"name": name, "labels": {"zone": "a"}, "capacity": {"cpu": 4, "memory": 2**33}}


def _manifest() -> dict[str, Any]:
    return {
        "model": "iris",
        "version": 1,
        "uri": "s3://models/iris/1/model.tar.gz",
        "sha256": SHA,
        "size": 100,
    }


async def test_no_credential_is_401_and_health_stays_open(
    fleet: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    _, client = fleet
    assert (await client.get("/v1/fleet/health")).status_code == 200
    for method, path in [
        ("GET", "/v1/fleet/nodes"),
        ("PUT", "/v1/fleet/deployments/iris"),
        ("POST", "/v1/fleet/agent/register"),
        ("POST", "/v1/fleet/agent/n1/heartbeat"),
        ("GET", "/v1/fleet/no-such-route"),
    ]:
        answer = await client.request(method, path)
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.headers["www-authenticate"] == 'Bearer realm="inferbridge"'
        assert "authentication required" in answer.json()["error"]
    bad = await client.get("/v1/fleet/nodes", headers={"x-api-key": "ib_not-a-key"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == 'Bearer realm="inferbridge", error="invalid_token"'
    assert "API key" in bad.json()["error"]  # the library's words: unknown or not valid
    assert "ib_not-a-key" not in bad.text
    # a valid credential on an unknown route: the usual 404
    assert (await client.get("/v1/fleet/no-such-route", headers=_key("viewer"))).status_code == 404


async def test_reads_need_read_and_changes_need_admin(
    fleet: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    _, client = fleet
    for path in ("/v1/fleet/nodes", "/v1/fleet/status", "/v1/fleet/deployments"):
        assert (await client.get(path, headers=_key("viewer"))).status_code == 200, path
    refused = await client.put(
        "/v1/fleet/deployments/iris", json={"version": 1}, headers=_key("viewer")
    )
    assert refused.status_code == 403
    # the library's message: who, what needs admin, the scopes held
    assert re.fullmatch(
        r"principal 'viewer' may not change the server \(.*admin.*\) \(its scopes: read\)",
        refused.json()["error"],
    ), refused.text
    for method, path, body in [
        ("POST", "/v1/fleet/artifacts", _manifest()),
        ("POST", "/v1/fleet/apply", {"deployments": [{"model": "iris", "version": 1}]}),
        ("POST", "/v1/fleet/rollouts", {"model": "iris", "version": 2}),
        ("DELETE", "/v1/fleet/deployments/iris", None),
    ]:
        answer = await client.request(method, path, json=body, headers=_key("viewer"))
        assert answer.status_code == 403, (method, path, answer.text)
    # an infer-only key reads nothing; admin does everything
    assert (await client.get("/v1/fleet/nodes", headers=_key("inferer"))).status_code == 403
    pushed = await client.post("/v1/fleet/artifacts", json=_manifest(), headers=_key("ops"))
    assert pushed.status_code == 201, pushed.text
    deployed = await client.put(
        "/v1/fleet/deployments/iris", json={"version": 1}, headers=_key("ops")
    )
    assert deployed.status_code == 200, deployed.text
    listed = await client.get("/v1/fleet/deployments", headers=_key("viewer"))
    assert [d["model"] for d in listed.json()["deployments"]] == ["iris"]


async def test_agents_need_agent_scope_and_own_their_node(
    fleet: tuple[ControlPlane, httpx.AsyncClient],
) -> None:
    plane, client = fleet
    path = "/v1/fleet/agent/register"
    as_viewer = await client.post(path, json=_registration(), headers=_key("viewer"))
    assert as_viewer.status_code == 403
    assert re.match(
        r"principal 'viewer' may not act as a node agent .*agent", as_viewer.json()["error"]
    )
    registered = await client.post(path, json=_registration(), headers=_key("agent-a"))
    assert registered.status_code == 200, registered.text
    assert registered.json() == {"node": "n1", "token": ""}  # the key is the credential
    assert "token_sha256" not in plane.nodes["n1"]
    assert plane.nodes["n1"]["principal"] == "agent-a"

    beat = await client.post("/v1/fleet/agent/n1/heartbeat", json={}, headers=_key("agent-a"))
    assert beat.status_code == 200, beat.text
    poll = await client.get(
        "/v1/fleet/agent/n1/assignments", params={"wait_s": 0}, headers=_key("agent-a")
    )
    assert poll.status_code == 200 and poll.json()["assignments"] == []

    # another agent principal can neither speak for n1 nor take it over
    for method, route in [
        ("POST", "/v1/fleet/agent/n1/heartbeat"),
        ("GET", "/v1/fleet/agent/n1/assignments?wait_s=0"),
        ("POST", "/v1/fleet/agent/n1/requests/r1"),
    ]:
        answer = await client.request(method, route, json={}, headers=_key("agent-b"))
        assert answer.status_code == 403, (route, answer.text)
        assert answer.json()["error"] == (
            "principal 'agent-b' may not act as node 'n1': principal 'agent-a' registered it "
            "(an admin may)"
        )
    taken = await client.post(path, json=_registration(), headers=_key("agent-b"))
    assert taken.status_code == 403
    assert (await client.post(path, json=_registration("n2"), headers=_key("agent-b"))).is_success
    # an admin may act as any node
    admin = await client.post("/v1/fleet/agent/n1/heartbeat", json={}, headers=_key("ops"))
    assert admin.status_code == 200
    # an agent key reads nothing of the operator's API
    assert (await client.get("/v1/fleet/nodes", headers=_key("agent-a"))).status_code == 403
    node = (await client.get("/v1/fleet/nodes/n1", headers=_key("viewer"))).json()
    assert node["principal"] == "agent-a"


async def test_tokens_are_not_accepted_once_authentication_is_on(tmp_path: Path) -> None:
    """A node registered with tokens must register again; the old tokens grant nothing."""
    plane, client = await _app(tmp_path, None, admin_token="admin-secret", bootstrap_token="boot")
    async with client:
        first = await client.post(
            "/v1/fleet/agent/register",
            json=_registration(),
            headers={"authorization": "Bearer boot"},
        )
        assert first.status_code == 200
    await plane.stop()

    authority = Authority(AuthConfig(keys_file=write_keys(tmp_path / "keys.yaml")))
    plane, client = await _app(tmp_path, authority)
    async with client:
        for token in ("admin-secret", "boot", first.json()["token"]):
            bearer = {"authorization": f"Bearer {token}"}
            assert (await client.get("/v1/fleet/nodes", headers=bearer)).status_code == 401
            beat = await client.post("/v1/fleet/agent/n1/heartbeat", json={}, headers=bearer)
            assert beat.status_code == 401
        # Authorization decides even beside a good x-api-key
        both = {"authorization": "Bearer admin-secret", **_key("ops")}
        assert (await client.get("/v1/fleet/nodes", headers=both)).status_code == 401
        stale = await client.post("/v1/fleet/agent/n1/heartbeat", json={}, headers=_key("agent-a"))
        assert stale.status_code == 401
        assert "registered without authentication: register again" in stale.text
        again = await client.post(
            "/v1/fleet/agent/register", json=_registration(), headers=_key("agent-a")
        )
        assert again.status_code == 200
        beat = await client.post("/v1/fleet/agent/n1/heartbeat", json={}, headers=_key("agent-a"))
        assert beat.status_code == 200
    await plane.stop()
    await plane.store.close()


async def test_a_principal_over_its_rate_is_429_with_retry_after(tmp_path: Path) -> None:
    keys = write_keys(
        tmp_path / "keys.yaml",
        f"  - name: slow\n    sha256: {hash_key('ib_slow-key')}\n    scopes: [read]\n"
        "    rate: {per_second: 0.5, burst: 1}\n",
    )
    plane, client = await _app(tmp_path, Authority(AuthConfig(keys_file=keys)))
    async with client:
        slow = {"x-api-key": "ib_slow-key"}
        assert (await client.get("/v1/fleet/nodes", headers=slow)).status_code == 200
        over = await client.get("/v1/fleet/nodes", headers=slow)
        assert over.status_code == 429
        assert over.headers["retry-after"] == "2"
        assert "principal 'slow' is over its rate limit" in over.json()["error"]
        # other principals have buckets of their own
        assert (await client.get("/v1/fleet/nodes", headers=_key("viewer"))).status_code == 200
    await plane.stop()
    await plane.store.close()


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (None, r"auth_keys \(--auth-keys\): keys file .*missing\.yaml"),
        (
            f"keys:\n  - name: x\n    sha256: {'a' * 64}\n    scopes: [fly]\n",
            r"--auth-keys.*keys\[0\].*scope.*'fly'",
        ),
    ],
)
def test_fleet_serve_refuses_a_keys_file_that_cannot_work(
    tmp_path: Path, keys: str | None, expected: str
) -> None:
    path = tmp_path / "missing.yaml"
    if keys is not None:
        path.write_text(keys)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "inferbridge", "fleet", "serve", "--port", "0"),
            *("--store", f"sqlite:{tmp_path / 'fleet.db'}", "--auth-keys", str(path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert re.search(expected, result.stderr), result.stderr


async def test_jwt_flags_reach_the_control_plane(tmp_path: Path) -> None:
    """fleet serve's --auth-jwt-* flags, parsed as the CLI parses them, let a JWT's scopes
    decide (sub is the principal)."""
    import argparse
    import time

    import jwt

    from inferbridge.fleet.cli import register

    secret = "s" * 40
    (tmp_path / "secret").write_text(secret + "\n")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    options = parser.parse_args(
        [
            *("fleet", "serve", "--auth-jwt-hs256-secret-file", str(tmp_path / "secret")),
            *("--auth-jwt-audience", "fleet", "--no-auth-open-health"),
        ]
    )
    config = AuthConfig.from_settings(options)
    assert config.authenticates and config.jwt_audience == "fleet" and not config.open_health
    plane, client = await _app(tmp_path, Authority(config))

    def bearer(scope: str, audience: str = "fleet") -> dict[str, str]:
        claims = {"sub": "alice", "scope": scope, "aud": audience, "exp": time.time() + 60}
        return {"authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}

    async with client:
        assert (await client.get("/v1/fleet/health")).status_code == 401  # health closed
        assert (await client.get("/v1/fleet/health", headers=bearer("read"))).status_code == 200
        assert (await client.get("/v1/fleet/nodes", headers=bearer("read"))).status_code == 200
        other = await client.get("/v1/fleet/nodes", headers=bearer("read", "elsewhere"))
        assert other.status_code == 401
        refused = await client.put(
            "/v1/fleet/deployments/iris", json={"version": 1}, headers=bearer("read")
        )
        assert refused.status_code == 403 and "principal 'alice'" in refused.text
        agent = await client.post(
            "/v1/fleet/agent/register", json=_registration(), headers=bearer("agent")
        )
        assert agent.status_code == 200 and plane.nodes["n1"]["principal"] == "alice"
    await plane.stop()
    await plane.store.close()
