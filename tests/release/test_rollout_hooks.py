"""What a rollout tells and asks the outside world: webhooks (one dead receiver must not
stop anything), an approval gate that times out, a candidate kept for inspection, and an
external check answered by a real Prometheus scraping the server."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.release.test_rollouts import Load, history, infer, start, status, wait_for, write_model
from tests.serverproc import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
QUICK = [
    {"canary": {"weight": 50, "duration": "1s"}},
    {"canary": {"weight": 100, "duration": "1s"}},
]
LONG = [{"canary": {"weight": 50, "duration": "1h"}}, {"canary": {"weight": 100, "duration": "1h"}}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hooks")
    write_model(root, "hooked", {1: 1, 2: 2}, {})
    write_model(root, "timeout", {1: 1, 2: 2}, {})
    write_model(root, "kept", {1: 1, 2: 2}, {2: {"fail_ratio": 1.0}})
    write_model(root, "watched", {1: 1, 2: 2}, {2: {"fail_ratio": 0.5}})
    process = start_server(
        root,
        "--state-dir",
        str(tmp_path_factory.mktemp("state")),
        env={"PYTHONPATH": str(ROOT)},
    )
    yield process
    process.stop()


class Receiver:
    """A webhook receiver on loopback that keeps every JSON event it is sent."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                events.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_get_every_transition_and_a_dead_one_blocks_nothing(
    server: ServerProcess,
) -> None:
    receiver = Receiver()
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    try:
        steps = [QUICK[0], {"approval": {"name": "qa"}}, QUICK[1]]
        response = start(
            server,
            "hooked",
            candidate=2,
            steps=steps,
            webhooks=[dead, receiver.url],
            analysis={"interval": "500ms", "min_requests": 0},
        )
        assert response.status_code == 201, response.text
        wait_for(lambda: "waiting_for" in status(server, "hooked"), "the gate")
        approve = httpx.post(
            f"{server.base_url}/v1/rollouts/hooked/approve", json={"gate": "qa", "who": "dana"}
        )
        assert approve.status_code == 200
        wait_for(lambda: status(server, "hooked")["phase"] == "promoted", "the promotion")
        wait_for(lambda: any(e["event"] == "promoted" for e in receiver.events), "the hook")
    finally:
        receiver.close()
    assert [e["event"] for e in receiver.events] == [
        "started",
        "step",
        "approved",
        "step",
        "promoted",
    ]
    promoted = receiver.events[-1]
    assert (promoted["model"], promoted["candidate"], promoted["weight"]) == ("hooked", 2, 100.0)
    assert {e["rollout"] for e in receiver.events} == {status(server, "hooked")["id"]}


def test_an_approval_gate_can_time_out_into_an_abort(server: ServerProcess) -> None:
    steps = [{"approval": {"name": "release-board", "timeout": "1s"}}, *LONG]
    response = start(server, "timeout", candidate=2, steps=steps, analysis={"interval": "500ms"})
    assert response.status_code == 201, response.text
    wait_for(lambda: status(server, "timeout")["phase"] == "aborted", "the timeout")
    assert "timed out" in status(server, "timeout")["message"]
    assert {infer(server, "timeout").json()["model_version"] for _ in range(5)} == {"1"}


def test_an_aborted_candidate_can_be_kept_for_inspection(server: ServerProcess) -> None:
    load = Load(server.base_url, "kept").start(2)
    try:
        response = start(
            server,
            "kept",
            candidate=2,
            steps=LONG,
            on_abort="keep",
            analysis={"interval": "500ms", "min_requests": 3, "failure_limit": 1},
        )
        assert response.status_code == 201, response.text
        wait_for(lambda: status(server, "kept")["phase"] == "aborted", "the rollback")
    finally:
        load.stop()
    index = httpx.post(f"{server.base_url}/v2/repository/index", json={}).json()
    assert {(e["version"], e["state"]) for e in index if e["name"] == "kept"} == {
        ("1", "READY"),
        ("2", "READY"),
    }
    assert {infer(server, "kept").json()["model_version"] for _ in range(10)} == {"1"}
    pinned = httpx.post(f"{server.base_url}/v2/models/kept/versions/2/infer", json={"inputs": []})
    assert pinned.status_code == 400  # version 2 is there to inspect (and says what is wrong)


@pytest.fixture
def prometheus(server: ServerProcess, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (apt-get install -y prometheus)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: server\n    static_configs: [{{targets: ['{server.http_url}']}}]\n"
    )
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(30)


def test_a_prometheus_check_rolls_back_what_prometheus_sees(
    server: ServerProcess, prometheus: str
) -> None:
    query = 'sum(inferbridge_request_failure_total{model="watched",version="2",reason="backend"})'
    load = Load(server.base_url, "watched").start(2)
    try:
        response = start(
            server,
            "watched",
            candidate=2,
            steps=LONG,
            analysis={
                "interval": "1s",
                "min_requests": 1,
                "failure_limit": 2,
                "checks": [{"prometheus": {"url": prometheus, "query": query, "max": 0}}],
            },
        )
        assert response.status_code == 201, response.text
        wait_for(lambda: status(server, "watched")["phase"] == "aborted", "the rollback", 90)
    finally:
        load.stop()
    aborted = next(e for e in history(server, "watched") if e["event"] == "aborted")
    (check,) = aborted["detail"]["analysis"]["checks"]
    assert check["check"] == "prometheus" and check["value"] > 0, check
