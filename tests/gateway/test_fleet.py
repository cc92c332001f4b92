"""The fleet control plane's routing table as the gateway's source of upstreams: a real
control plane (with API keys), nodes registered and heartbeating through its API for two
real servers, and the gateway routing to the servers the table names."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from tests.fleet.procs import ControlPlaneProc, start_control_plane
from tests.fleet.test_auth import KEYS, write_keys
from tests.gateway.procs import Gateway, infer_body, start_gateway, wait_for
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.slow


def _key(name: str) -> dict[str, str]:
    return {"x-api-key": KEYS[name][0]}


@dataclass
class Heartbeats:
    """Heartbeats for registered nodes every 0.2 s, for the nodes in `alive`."""

    plane: ControlPlaneProc
    models: dict[str, list[dict[str, Any]]]  # node -> its heartbeat's models
    keys: dict[str, str]  # node -> the agent key that registered it
    alive: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def register(self, node: str, server: ServerProcess, grpc: bool = False) -> None:
        body = {"name": node, "server_url": server.base_url, "heartbeat_interval_s": 0.2}
        if grpc:  # what the agent sends with --advertise-grpc
            body["server_grpc"] = server.grpc_url
        answer = httpx.post(
            f"{self.plane.url}/v1/fleet/agent/register",
            json=body,
            headers=_key(self.keys[node]),
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        self.alive.add(node)

    def run(self) -> None:
        with httpx.Client(base_url=self.plane.url, timeout=30) as http:
            while not self.stop.wait(0.2):
                for node in sorted(self.alive):
                    body = {"server": {"ready": True}, "models": self.models[node]}
                    try:
                        r = http.post(
                            f"/v1/fleet/agent/{node}/heartbeat",
                            json=body,
                            headers=_key(self.keys[node]),
                        )
                    except httpx.HTTPError as exc:
                        self.errors.append(repr(exc))
                        continue
                    if r.status_code != 200:
                        self.errors.append(f"{node}: {r.status_code} {r.text}")


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlaneProc]:
    keys = write_keys(tmp_path / "keys.yaml")
    # 2 missed heartbeats of 0.2 s: NotReady after 0.4 s of silence
    proc = start_control_plane(
        tmp_path / "fleet.db", missed_heartbeats=2, extra=["--auth-keys", str(keys)]
    )
    proc.credential = _key("viewer")
    yield proc
    proc.stop()


def _ready(version: int = 1, *models: str) -> list[dict[str, Any]]:
    return [{"model": m, "version": version, "state": "READY"} for m in models]


def _infer(gw: Gateway, path: str) -> httpx.Response:
    return httpx.post(f"{gw.base}{path}", json=infer_body(), timeout=60)


def _nodes(gw: Gateway) -> dict[str, list[str]]:
    return {name: sorted(u["models"]) for name, u in gw.upstreams().items()}


@contextlib.contextmanager
def _heartbeating_gateway(
    beats: Heartbeats, plane: ControlPlaneProc, tmp_path: Path
) -> Iterator[Gateway]:
    """A gateway following the fleet's routing table (as a viewer, health checks every
    200 ms) while `beats` heartbeats in a thread; on the way out both stop, and no
    heartbeat may have failed but by the control plane being gone."""
    pump = threading.Thread(target=beats.run, daemon=True)
    pump.start()
    (tmp_path / "viewer.key").write_text(KEYS["viewer"][0] + "\n")
    gw = start_gateway(
        "listen: {http: '127.0.0.1:0', grpc: '127.0.0.1:0'}\n"
        f"fleet: {{control_plane: '{plane.url}', interval: 200ms, api_key_file: viewer.key}}\n"
        "health: {interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}\n",
        tmp_path,
    )
    try:
        yield gw
    finally:
        beats.stop.set()
        pump.join(10)
        gw.stop()
    assert not [e for e in beats.errors if "ConnectError" not in e], beats.errors


def test_upstreams_follow_the_fleet_routing_table(
    plane: ControlPlaneProc,
    server_a: ServerProcess,
    server_b: ServerProcess,
    tmp_path: Path,
) -> None:
    # server_b also serves `slow`; the table does not say so, and the table decides.
    beats = Heartbeats(
        plane,
        models={"na": _ready(1, "echo", "only_a"), "nb": _ready(1, "echo")},
        keys={"na": "agent-a", "nb": "agent-b"},
    )
    beats.register("na", server_a)
    beats.register("nb", server_b)
    with _heartbeating_gateway(beats, plane, tmp_path) as gw:
        assert wait_for(
            lambda: _nodes(gw) == {"na": ["echo", "only_a"], "nb": ["echo"]},
            what="both nodes of the table as upstreams",
        )
        assert gw.upstreams()["nb"]["rest"] == server_b.base_url
        assert gw.upstreams()["nb"]["source"] == "fleet"
        for path in ("/v2/models/echo/infer", "/v2/models/only_a/versions/1/infer"):
            assert _infer(gw, path).status_code == 200, path
        assert _infer(gw, "/v2/models/slow/infer").status_code == 404
        assert _infer(gw, "/v2/models/echo/versions/7/infer").status_code == 404

        # nb stops heartbeating: NotReady, out of the table, out of the pool.
        beats.alive.discard("nb")
        assert wait_for(lambda: set(_nodes(gw)) == {"na"}, what="nb removed")
        assert any("upstream nb removed" in line for line in gw.lines)
        assert [_infer(gw, "/v2/models/echo/infer").status_code for _ in range(5)] == [200] * 5
        # The table now says na serves echo version 2 only: a request for version 1 (or
        # for only_a) is refused by the gateway itself, whatever server_a holds.
        beats.models["na"] = _ready(2, "echo")
        assert wait_for(lambda: _nodes(gw) == {"na": ["echo"]}, what="na's new models")
        assert gw.upstreams()["na"]["models"] == {"echo": ["2"]}
        refused = _infer(gw, "/v2/models/echo/versions/1/infer")
        assert refused.status_code == 404 and "not served by any upstream" in refused.text
        assert _infer(gw, "/v2/models/only_a/infer").status_code == 404
        beats.models["na"] = _ready(1, "echo", "only_a")

        # Back: nb heartbeats again and rejoins.
        beats.alive.add("nb")
        assert wait_for(lambda: set(_nodes(gw)) == {"na", "nb"}, what="nb back")

        # The control plane goes away: the last table stays, and it is said once.
        plane.stop()
        assert wait_for(
            lambda: any(
                "fleet: routing table not read, keeping the last one" in line for line in gw.lines
            ),
            what="the unreachable control plane logged",
        )
        assert set(_nodes(gw)) == {"na", "nb"}
        assert [_infer(gw, "/v2/models/echo/infer").status_code for _ in range(6)] == [200] * 6
        assert gw.metric("inferbridge_gateway_fleet_table_reads_total", result="error") >= 1
        assert sum("keeping the last one" in line for line in gw.lines) == 1


def test_a_refused_credential_is_logged_and_nothing_is_routed(
    plane: ControlPlaneProc, tmp_path: Path
) -> None:
    (tmp_path / "agent.key").write_text(KEYS["agent-a"][0] + "\n")  # no read scope
    gw = start_gateway(
        "listen: {http: '127.0.0.1:0', grpc: '127.0.0.1:0'}\n"
        f"fleet: {{control_plane: '{plane.url}', interval: 200ms, api_key_file: agent.key}}\n",
        tmp_path,
    )
    try:
        line = wait_for(
            lambda: next((x for x in gw.lines if "routing table not read" in x), None),
            what="the refusal logged",
        )
        assert "/v1/fleet/routing answered 403" in line
        assert gw.upstreams() == {}
        assert _infer(gw, "/v2/models/echo/infer").status_code == 404
    finally:
        gw.stop()


def test_grpc_reaches_fleet_nodes_that_registered_a_grpc_address(
    plane: ControlPlaneProc,
    server_a: ServerProcess,
    server_b: ServerProcess,
    tmp_path: Path,
) -> None:
    # na registers its gRPC address beside its URL; nb (an agent without
    # --advertise-grpc) only its URL, so it is a REST-only upstream.
    beats = Heartbeats(
        plane,
        models={"na": _ready(1, "echo"), "nb": _ready(1, "echo")},
        keys={"na": "agent-a", "nb": "agent-b"},
    )
    beats.register("na", server_a, grpc=True)
    beats.register("nb", server_b)
    refused = httpx.post(
        f"{plane.url}/v1/fleet/agent/register",
        json={"name": "nc", "server_url": server_b.base_url, "server_grpc": "http://x:1"},
        headers=_key("agent-b"),
        timeout=30,
    )
    assert refused.status_code == 400 and "server_grpc must be HOST:PORT" in refused.text
    with _heartbeating_gateway(beats, plane, tmp_path) as gw:
        routes = wait_for(
            lambda: plane.get("/v1/fleet/routing")["models"].get("echo"), what="the table"
        )
        by_node = {r["node"]: r for r in routes}
        assert by_node["na"]["grpc"] == server_a.grpc_url and "grpc" not in by_node["nb"]
        assert plane.node("na")["server_grpc"] == server_a.grpc_url
        assert wait_for(lambda: set(_nodes(gw)) == {"na", "nb"}, what="both nodes")
        upstreams = gw.upstreams()
        assert upstreams["na"]["grpc"] == server_a.grpc_url
        assert upstreams["na"]["rest"] == server_a.base_url
        assert "grpc" not in upstreams["nb"]
        # gRPC inference through the gateway lands on na, the one node reachable by gRPC.
        before = _successes(server_a)
        with triton_grpc.InferenceServerClient(gw.grpc) as client:
            for value in range(6):
                x = triton_grpc.InferInput("x", [1, 2], "FP32")
                x.set_data_from_numpy(np.full((1, 2), value, dtype=np.float32))
                result = client.infer("echo", [x])
                output = result.as_numpy(result.get_response().outputs[0].name)
                assert output is not None and output.tolist() == [[value, value]]
        assert _successes(server_a) - before == 6
        # REST still reaches both.
        assert [_infer(gw, "/v2/models/echo/infer").status_code for _ in range(4)] == [200] * 4


def _successes(server: ServerProcess) -> int:
    stats = httpx.get(f"{server.base_url}/v2/models/echo/stats", timeout=10).json()
    return sum(int(m["inference_stats"]["success"]["count"]) for m in stats["model_stats"])
