"""Real fleet processes on loopback for the end-to-end tests: MinIO, the control plane,
agents beside real inferbridge servers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.serverproc import ServerProcess, start_server

ADMIN_TOKEN = "test-admin-token"
BOOTSTRAP_TOKEN = "test-bootstrap-token"
MINIO_USER = "fleet-test"
MINIO_PASSWORD = "fleet-test-secret"
_MINIO_CACHE = Path.home() / ".cache" / "inferbridge" / "minio" / "minio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll `check` until it answers something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")


class _Pumped:
    """A subprocess whose output lines are kept (and copied to a file when asked)."""

    def __init__(self, command: list[str], env: dict[str, str], log_file: Path | None = None):
        self.command = command
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
            start_new_session=True,
        )
        self._log = log_file.open("a") if log_file is not None else None
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if self._log is not None:
                self._log.write(line)
                self._log.flush()

    def text(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


def minio_binary() -> str | None:
    chosen = os.environ.get("INFERBRIDGE_MINIO")
    if chosen:
        return chosen
    if _MINIO_CACHE.is_file():
        return str(_MINIO_CACHE)
    return shutil.which("minio")


@dataclass
class MinIO:
    proc: _Pumped
    endpoint: str
    data: Path

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=MINIO_USER,
            aws_secret_access_key=MINIO_PASSWORD,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": MINIO_USER,
            "AWS_SECRET_ACCESS_KEY": MINIO_PASSWORD,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.data, ignore_errors=True)


def start_minio(binary: str) -> MinIO:
    data = Path(tempfile.mkdtemp(prefix="ib-minio-"))
    port, console = free_port(), free_port()
    proc = _Pumped(
        [
            binary,
            "server",
            str(data),
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{console}",
            "--quiet",
        ],
        {
            "MINIO_ROOT_USER": MINIO_USER,
            "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
            "MINIO_BROWSER": "off",
        },
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(
        "MinIO to be ready",
        lambda: httpx.get(f"{endpoint}/minio/health/ready", timeout=2).status_code == 200,
    )
    return MinIO(proc, endpoint, data)


@dataclass
class ControlPlaneProc:
    proc: _Pumped
    url: str
    store: Path
    port: int
    #: What `call` authenticates with: the admin token, or an admin API key.
    credential: dict[str, str] = field(
        default_factory=lambda: {"authorization": f"Bearer {ADMIN_TOKEN}"}
    )

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        return httpx.request(
            method,
            self.url + path,
            json=body,
            params=params or None,
            headers=self.credential,
            timeout=60,
        )

    def get(self, path: str, **params: Any) -> Any:
        response = self.call("GET", path, **params)
        response.raise_for_status()
        return response.json()

    def node(self, name: str) -> dict[str, Any]:
        return dict(self.get(f"/v1/fleet/nodes/{name}"))

    def stop(self) -> None:
        self.proc.stop()


def start_control_plane(
    store: Path,
    port: int | None = None,
    missed_heartbeats: int = 5,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> ControlPlaneProc:
    """`inferbridge fleet serve` with the test tokens (and `extra` arguments, such as
    --auth-keys, which replace them; `env` adds environment variables)."""
    port = port or free_port()
    proc = _Pumped(
        [
            sys.executable,
            "-m",
            "inferbridge",
            "fleet",
            "serve",
            "--store",
            f"sqlite:{store}",
            "--port",
            str(port),
            "--missed-heartbeats",
            str(missed_heartbeats),
            *(extra or []),
        ],
        {
            "INFERBRIDGE_FLEET_ADMIN_TOKEN": ADMIN_TOKEN,
            "INFERBRIDGE_FLEET_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
            **(env or {}),
        },
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(
        "the control plane to listen",
        lambda: (
            (
                proc.process.poll() is None
                and httpx.get(f"{url}/v1/fleet/health", timeout=2).status_code == 200
            )
            or (proc.process.poll() is not None and _died(proc))
        ),
    )
    return ControlPlaneProc(proc, url, store, port)


def _died(proc: _Pumped) -> bool:
    raise AssertionError(f"{proc.command[3:5]} exited early:\n{proc.text()}")


@dataclass
class Node:
    """One node: a real inferbridge server in explicit mode and its agent."""

    name: str
    root: Path
    server: ServerProcess
    agent_binary: Path
    control_plane: str
    env: dict[str, str]
    labels: str = "zone=a"
    agent: _Pumped | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def repository(self) -> Path:
        return self.root / "repository"

    @property
    def state_dir(self) -> Path:
        return self.root / "agent-state"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    def start_agent(self) -> None:
        self.agent = _Pumped(
            [
                str(self.agent_binary),
                "--control-plane",
                self.control_plane,
                "--server",
                self.server.base_url,
                "--repository",
                str(self.repository),
                "--state-dir",
                str(self.state_dir),
                "--name",
                self.name,
                "--labels",
                self.labels,
                "--server-log",
                str(self.server_log),
                "--heartbeat",
                "1s",
                "--resync",
                "2s",
                "--retry-after",
                "3s",
                "--figures-every",
                "2s",
                "--cpu",
                "2",
                "--memory",
                "4Gi",
                *self.extra,
            ],
            {**self.env, "INFERBRIDGE_FLEET_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN},
        )

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        if self.agent is not None:
            self.agent.stop(sig)

    def index(self) -> dict[str, dict[str, str]]:
        entries = httpx.post(
            f"{self.server.base_url}/v2/repository/index", json={}, timeout=10
        ).json()
        return {e["name"]: e for e in entries if e.get("state") == "READY"}

    def infer(self, model: str) -> httpx.Response:
        body = {
            "inputs": [
                {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
            ]
        }
        return httpx.post(f"{self.server.base_url}/v2/models/{model}/infer", json=body, timeout=30)

    def restart_server(self) -> None:
        """Start the node's server again on the same ports (after it was killed), as a
        service manager would; the agent finds it at the same URL."""
        self.server = start_server(
            self.repository,
            "--model-control-mode",
            "explicit",
            "--http-port",
            str(self.server.http_port),
            "--grpc-port",
            str(self.server.grpc_port),
        )

    def stop(self) -> None:
        self.stop_agent()
        self.server.stop()


def start_node(
    name: str,
    root: Path,
    agent_binary: Path,
    control_plane: str,
    env: dict[str, str],
    agent_args: list[str] | None = None,
    advertise_grpc: bool = False,
) -> Node:
    """A server and its agent; `advertise_grpc` gives the agent the server's gRPC address
    (`--advertise-grpc`)."""
    (root / "repository").mkdir(parents=True, exist_ok=True)
    server_log = root / "server.log"
    server = start_server(root / "repository", "--model-control-mode", "explicit")
    extra = list(agent_args or [])
    if advertise_grpc:
        extra += ["--advertise-grpc", server.grpc_url]
    node = Node(name, root, server, agent_binary, control_plane, env, extra=extra)

    # Copy the server's output to a file, as a node's log file would be.
    def copy() -> None:
        seen = 0
        with server_log.open("a") as out:
            while server.alive() or seen < len(server.output):
                lines = server.output[seen:]
                seen += len(lines)
                for line in lines:
                    out.write(line + "\n")
                out.flush()
                time.sleep(0.2)

    threading.Thread(target=copy, daemon=True).start()
    node.start_agent()
    return node


def model_state(plane: ControlPlaneProc, node: str, model: str) -> dict[str, Any] | None:
    seen: dict[str, Any] | None = plane.node(node)["models"].get(model)
    return seen


def ready_on(plane: ControlPlaneProc, node: str, model: str, version: int) -> bool:
    seen = model_state(plane, node, model)
    return seen is not None and seen["state"] == "READY" and seen["version"] == version


def iris_model(root: Path, name: str, source: Path, versions: dict[int, bytes | None]) -> Path:
    """A model directory `name` with the given versions: None copies the source's
    model.onnx, bytes write that content (a corrupt model)."""
    model = root / name
    model.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "config.yaml", model / "config.yaml")
    for version, content in versions.items():
        target = model / str(version)
        target.mkdir(exist_ok=True)
        if content is None:
            shutil.copy(source / "1" / "model.onnx", target / "model.onnx")
        else:
            (target / "model.onnx").write_bytes(content)
    return model


def grep(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


@dataclass
class EtcdMember:
    name: str
    proc: _Pumped
    client_url: str
    data: Path


def start_etcd_cluster(size: int = 3) -> list[EtcdMember]:
    """A real etcd cluster on loopback (etcd 3.4 needs all five URL flags)."""
    binary = shutil.which("etcd")
    assert binary is not None
    ports = [(free_port(), free_port()) for _ in range(size)]
    cluster = ",".join(f"e{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
    members = []
    for i, (client, peer) in enumerate(ports):
        data = Path(tempfile.mkdtemp(prefix=f"ib-etcd{i}-"))
        proc = _Pumped(
            [
                binary,
                "--name",
                f"e{i}",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                f"http://127.0.0.1:{client}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{client}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                cluster,
                "--initial-cluster-state",
                "new",
                "--logger=zap",
                "--log-level",
                "error",
            ],
            {},
        )
        members.append(EtcdMember(f"e{i}", proc, f"http://127.0.0.1:{client}", data))
    for member in members:
        wait_for(
            f"etcd {member.name} healthy",
            lambda m=member: (
                httpx.get(f"{m.client_url}/health", timeout=2).json().get("health") == "true"
            ),
        )
    return members


def etcd_leader(members: list[EtcdMember]) -> EtcdMember:
    for member in members:
        if member.proc.process.poll() is not None:
            continue
        status = httpx.post(f"{member.client_url}/v3/maintenance/status", json={}, timeout=5).json()
        if status["header"]["member_id"] == status["leader"]:
            return member
    raise AssertionError("no etcd leader")


def start_replica(
    store: str, port: int, missed_heartbeats: int = 5, env: dict[str, str] | None = None
) -> ControlPlaneProc:
    """A control-plane replica on an etcd store (its URL is its name as the leader);
    `env` adds environment variables."""
    url = f"http://127.0.0.1:{port}"
    proc = _Pumped(
        [
            sys.executable,
            "-m",
            "inferbridge",
            "fleet",
            "serve",
            "--store",
            store,
            "--port",
            str(port),
            "--advertise-url",
            url,
            "--missed-heartbeats",
            str(missed_heartbeats),
        ],
        {
            "INFERBRIDGE_FLEET_ADMIN_TOKEN": ADMIN_TOKEN,
            "INFERBRIDGE_FLEET_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
            **(env or {}),
        },
    )
    wait_for(
        "the replica to listen",
        lambda: httpx.get(f"{url}/v1/fleet/health", timeout=2).status_code == 200,
    )
    return ControlPlaneProc(proc, url, Path(store), port)
