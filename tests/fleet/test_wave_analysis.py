"""A wave's in-server analysis end to end: a real control plane, a real inferbridge server
whose version 2 fails half of its requests (the release tests' ReleaseEcho runtime), and an
agent stand-in that reports what it is assigned with the server's own per-version
statistics (`/v2/models/{m}/versions/{v}/stats`), as the Go agent is to send them. The
rollout's analysis catches version 2 and rolls back; `fleet status` says why."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet.procs import (
    ADMIN_TOKEN,
    BOOTSTRAP_TOKEN,
    ControlPlaneProc,
    start_control_plane,
    wait_for,
)
from tests.serverproc import ServerProcess, start_server

RUNTIME = "tests.support.release_runtimes:ReleaseEcho"
CONFIG = f"runtime: {RUNTIME}\nversion_policy: {{specific: {{versions: [1, 2]}}}}\n"
MODEL = "flaky"


class StandInAgent:
    """Registers, follows its assignments, reports the assigned version READY with the
    real server's counters for it, and sends requests to that version."""

    def __init__(self, plane: ControlPlaneProc, server: ServerProcess) -> None:
        self.plane, self.server = plane, server
        self.version = 0
        self.stop = threading.Event()
        self.statuses: dict[int, list[int]] = {}
        answer = httpx.post(
            f"{plane.url}/v1/fleet/agent/register",
            json={
                "name": "node-a",
                "labels": {"zone": "a"},
                "server_url": server.base_url,
                "capacity": {"cpu": 4, "memory": 8 << 30},
            },
            headers={"authorization": f"Bearer {BOOTSTRAP_TOKEN}"},
            timeout=10,
        )
        answer.raise_for_status()
        self.auth = {"authorization": f"Bearer {answer.json()['token']}"}
        self.threads = [threading.Thread(target=t, daemon=True) for t in (self._beat, self._load)]
        for thread in self.threads:
            thread.start()

    def _stats(self, version: int) -> dict[str, Any]:
        document = httpx.get(
            f"{self.server.base_url}/v2/models/{MODEL}/versions/{version}/stats", timeout=10
        ).json()
        inference = document["model_stats"][0]["inference_stats"]
        return {"success": inference["success"], "fail": inference["fail"]}

    def _beat(self) -> None:
        base = f"{self.plane.url}/v1/fleet/agent/node-a"
        with httpx.Client(timeout=10, headers=self.auth) as client:
            while not self.stop.is_set():
                assigned = client.get(f"{base}/assignments", params={"wait_s": 0}).json()
                versions = [a["version"] for a in assigned["assignments"] if a["model"] == MODEL]
                self.version = versions[0] if versions else 0
                models = []
                if self.version:
                    models.append(
                        {
                            "model": MODEL,
                            "version": self.version,
                            "state": "READY",
                            "stats": self._stats(self.version),
                        }
                    )
                client.post(
                    f"{base}/heartbeat",
                    json={"server": {"live": True, "ready": True}, "models": models},
                ).raise_for_status()
                self.stop.wait(0.5)

    def _load(self) -> None:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                version = self.version
                if not version:
                    self.stop.wait(0.1)
                    continue
                response = client.post(
                    f"{self.server.base_url}/v2/models/{MODEL}/versions/{version}/infer", json=body
                )
                self.statuses.setdefault(version, []).append(response.status_code)
                self.stop.wait(0.02)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    model = tmp_path / "models" / MODEL
    model.mkdir(parents=True)
    (model / "config.yaml").write_text(CONFIG)
    for version, value in ((1, 1), (2, 2)):
        (model / str(version)).mkdir()
        (model / str(version) / "value.txt").write_text(str(value))
    (model / "2" / "behaviour.json").write_text(json.dumps({"fail_ratio": 0.5}))
    proc = start_server(tmp_path / "models")
    yield proc
    proc.process.terminate()
    proc.process.wait(30)


def test_a_wave_whose_version_fails_requests_is_rolled_back_by_its_analysis(
    server: ServerProcess, tmp_path: Path
) -> None:
    plane = start_control_plane(tmp_path / "fleet.db")
    agent = None
    try:
        for version in (1, 2):
            plane.call(
                "POST",
                "/v1/fleet/artifacts",
                {
                    "model": MODEL,
                    "version": version,
                    "uri": f"s3://models/{MODEL}/{version}/m.tar.gz",
                    "sha256": "0" * 64,
                    "size": 1,
                },
            ).raise_for_status()
        agent = StandInAgent(plane, server)
        plane.call("PUT", f"/v1/fleet/deployments/{MODEL}", {"version": 1}).raise_for_status()
        wait_for("version 1 assigned", lambda: agent.version == 1)
        # Version 1 is healthy; its mean latency becomes the baseline of the ratio check.
        wait_for("version 1 traffic", lambda: len(agent.statuses.get(1, [])) >= 10)
        rollout = plane.call(
            "POST",
            "/v1/fleet/rollouts",
            {
                "model": MODEL,
                "version": 2,
                "health_gate_s": 60,
                "analysis": {
                    "min_requests": 20,
                    "error_rate": {"max": 0.05},
                    "latency_mean": {"max_ratio_to_baseline": 50},
                },
            },
        )
        assert rollout.status_code == 201, rollout.text
        view = wait_for(
            "the rollout rolled back",
            lambda: (v := plane.get(f"/v1/fleet/rollouts/{MODEL}"))["state"] == "RolledBack" and v,
            timeout=60,
        )
        # Long before the 60 s gate: the analysis decided as soon as it had 20 requests.
        assert "analysis failed: error rate" in view["reason"], view
        assert view["analysis"]["verdict"] == "fail"
        assert 0.3 <= view["analysis"]["error_rate"] <= 0.7
        assert view["failed"]["node-a"].startswith("analysis: ")
        # The server really failed those requests, and the node is back on version 1.
        assert 500 <= max(agent.statuses[2]) < 600
        wait_for("version 1 assigned again", lambda: agent.version == 1)
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "inferbridge",
                "fleet",
                "status",
                "--control-plane",
                plane.url,
                "--token",
                ADMIN_TOKEN,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "RolledBack" in status and "analysis failed: error rate" in status
        assert "analysis: fail: error rate" in status
    finally:
        if agent is not None:
            agent.close()
        plane.stop()
