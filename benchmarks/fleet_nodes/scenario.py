"""The real-nodes run: MinIO, the control plane, three nodes (an inferbridge server and its
agent each) and the pool gateway over the three servers, all on loopback; a steady client
load through the gateway while the fleet is pushed, deployed, rolled out and broken.

Every figure is measured from the moment the step's action was taken: "ready" is what the
control plane reports (the agents' heartbeats), "served" is what the gateway answers.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import payloads
from benchmarks.gateway.balancers import Front, Target, gateway
from benchmarks.gateway.load import Run, run_ibload
from benchmarks.repos import IRIS_ROW
from inferbridge.examples.build import example_repository
from inferbridge.fleet.agent_build import build_agent
from inferbridge.fleet.push import push
from tests.fleet.procs import (
    ControlPlaneProc,
    MinIO,
    Node,
    free_port,
    iris_model,
    minio_binary,
    ready_on,
    start_control_plane,
    start_minio,
)
from tests.serverproc import ServerProcess, start_server

__all__ = ["MODEL", "Event", "Outcome", "Settings", "run"]

MODEL = "iris_onnx"
NODE_NAMES = ("node-a", "node-b", "node-c")


@dataclass(frozen=True)
class Settings:
    """What one run does; the defaults are the published run's."""

    concurrency: int = 8  # closed-loop clients through the gateway
    replicas: int = 2  # of 3 nodes: a dead node's replica has somewhere to go
    missed_heartbeats: int = 3  # the NotReady rule
    health_gate_s: float = 2.0
    settle_s: float = 5.0  # quiet load between steps
    plane_down_s: float = 10.0  # how long the control plane stays stopped
    server_down_s: float = 5.0  # how long the killed server stays dead
    duration_s: float = 180.0  # the load's length: longer than every step together (~105 s)
    timeout_s: float = 120.0  # the longest any one wait may take


@dataclass
class Event:
    """One step: when it started and ended on the load's clock (s), and its figures."""

    name: str
    action: str
    start_s: float
    end_s: float
    figures: dict[str, float] = field(default_factory=dict)  # seconds after start_s
    failed: int | None = None  # requests failed through the gateway within the window
    requests: int | None = None
    failing_s: int | None = None  # one-second slices of the window with a failure
    note: str = ""


@dataclass
class Outcome:
    events: list[Event]
    run: Run | None
    settings: Settings
    pre_load: list[Event]  # push and deploy: before the load (nothing is served yet)
    steps_end_s: float = 0.0  # when the last step (and its settling) ended, load's clock


class Bench:
    """The processes of one run and the actions on them."""

    def __init__(self, work: Path, settings: Settings) -> None:
        self.work = work
        self.settings = settings
        binary = minio_binary()
        if binary is None:
            raise SystemExit(
                "MinIO is not built (.ci/run builds it into ~/.cache/inferbridge/minio, "
                "or set INFERBRIDGE_MINIO)"
            )
        self.minio: MinIO = start_minio(binary)
        self.minio.client().create_bucket(Bucket="models")
        self.store = work / "fleet.db"
        self.plane: ControlPlaneProc = self._start_plane(free_port())
        self.agent = build_agent()
        # Fixed ports: a restarted server comes back where the gateway expects it.
        self.ports = {name: (free_port(), free_port()) for name in NODE_NAMES}
        self.nodes: dict[str, Node] = {}
        for name in NODE_NAMES:
            node = Node(
                name,
                work / name,
                self._start_server(name),
                self.agent,
                self.plane.url,
                self.minio.env,
                labels="zone=a",
            )
            node.start_agent()
            self.nodes[name] = node
        self.front: Front | None = None

    # -- processes -------------------------------------------------------------------------

    def _start_plane(self, port: int) -> ControlPlaneProc:
        return start_control_plane(
            self.store, port, missed_heartbeats=self.settings.missed_heartbeats
        )

    def _start_server(self, name: str) -> ServerProcess:
        repository = self.work / name / "repository"
        repository.mkdir(parents=True, exist_ok=True)
        http_port, grpc_port = self.ports[name]
        return start_server(
            repository,
            "--model-control-mode",
            "explicit",
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            timeout=self.settings.timeout_s,
        )

    def start_gateway(self) -> Front:
        targets = [
            Target(name, f"127.0.0.1:{h}", f"127.0.0.1:{g}") for name, (h, g) in self.ports.items()
        ]
        # Discovery and health every second: the gateway's view follows the fleet's closely.
        extra = "discovery: {interval: 1s, timeout: 1s}\nhealth: {interval: 1s, timeout: 1s}"
        self.front = gateway(self.work, targets, balance="p2c-ewma", deadline_s=10, extra=extra)
        return self.front

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop_agent(signal.SIGKILL)
            node.server.stop(signal.SIGKILL)
        if self.front is not None and self.front.server is not None:
            self.front.server.stop()
        self.plane.stop()
        self.minio.stop()

    # -- what the fleet reports --------------------------------------------------------------

    def wait(self, what: str, check: Callable[[], Any]) -> float:
        """Seconds until `check` holds (polled every 50 ms; errors count as not yet)."""
        began = time.monotonic()
        deadline = began + self.settings.timeout_s
        while time.monotonic() < deadline:
            try:
                if check():
                    return time.monotonic() - began
            except (httpx.HTTPError, KeyError, OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {self.settings.timeout_s:g} s waiting for {what}")

    def holders(self, version: int) -> list[str]:
        return [n for n in NODE_NAMES if ready_on(self.plane, n, MODEL, version)]

    def node_state(self, name: str) -> str:
        return str(self.plane.node(name)["state"])

    def served_by_gateway(self) -> bool:
        assert self.front is not None
        body = payloads.rest_json(self.work, MODEL, "input", IRIS_ROW).body()
        answer = httpx.post(
            f"{self.front.rest_url}/v2/models/{MODEL}/infer",
            content=body,
            headers={"content-type": "application/json"},
            timeout=5,
        )
        return answer.status_code == 200

    # -- the steps -----------------------------------------------------------------------------

    def push_versions(self) -> dict[str, float]:
        source = example_repository() / MODEL
        model = iris_model(self.work / "models", MODEL, source, {1: None, 2: None})
        figures = {}
        for version in (1, 2):
            began = time.monotonic()
            manifest = push(model, version, "s3://models", s3_client=self.minio.client())
            self.plane.call("POST", "/v1/fleet/artifacts", manifest.model_dump()).raise_for_status()
            figures[f"v{version} pushed"] = time.monotonic() - began
        return figures

    def deploy(self) -> dict[str, float]:
        body = {"version": 1, "replicas": self.settings.replicas}
        self.plane.call("PUT", f"/v1/fleet/deployments/{MODEL}", body).raise_for_status()
        return {
            "ready on all replicas": self.wait(
                "v1 READY on every replica", lambda: len(self.holders(1)) == self.settings.replicas
            )
        }


def _window(run: Run, start: float, end: float) -> tuple[int, int, int]:
    """Requests, failures and seconds with a failure in the timeline's one-second slices
    overlapping [start, end)."""
    slices = [s for s in run.timeline if s["start_s"] + 1 > start and s["start_s"] < end]
    requests = sum(int(s["requests"]) for s in slices)
    failing = sum(1 for s in slices if int(s["ok"]) < int(s["requests"]))
    return requests, requests - sum(int(s["ok"]) for s in slices), failing


def _steps(bench: Bench, events: list[Event], origin: list[float]) -> None:
    """The timeline, run while the load runs (origin[0]: the load's clock zero)."""
    s = bench.settings

    def now() -> float:
        return time.monotonic() - origin[0]

    def step(name: str, action: str, body: Callable[[Event], None]) -> None:
        time.sleep(s.settle_s)
        event = Event(name, action, now(), 0.0)
        print(f"fleet_nodes: {now():6.1f} s  {name}: {action}", flush=True)
        try:
            body(event)
        except (TimeoutError, httpx.HTTPError, AssertionError, RuntimeError) as exc:
            event.note = f"failed: {exc}"
            print(f"fleet_nodes: {name} failed: {exc}", flush=True)
        event.end_s = now()
        events.append(event)

    def rollout(event: Event) -> None:
        body = {"model": MODEL, "version": 2, "waves": [50, 100], "health_gate_s": s.health_gate_s}
        t0 = time.monotonic()
        bench.plane.call("POST", "/v1/fleet/rollouts", body).raise_for_status()
        bench.wait("a v2 replica", lambda: bench.holders(2))
        event.figures["first node READY on v2"] = time.monotonic() - t0
        bench.wait("v2 on every replica", lambda: len(bench.holders(2)) == s.replicas)
        event.figures["every replica READY on v2"] = time.monotonic() - t0
        bench.wait(
            "the rollout Succeeded",
            lambda: bench.plane.get(f"/v1/fleet/rollouts/{MODEL}")["state"] == "Succeeded",
        )
        event.figures["rollout Succeeded"] = time.monotonic() - t0

    def kill_server(event: Event) -> None:
        victim = bench.holders(2)[0]
        event.note = victim
        t0 = time.monotonic()
        bench.nodes[victim].server.stop(signal.SIGKILL)
        bench.wait(
            "the heartbeat to say the server is down",
            lambda: not bench.plane.node(victim)["server"].get("live"),
        )
        event.figures["agent reports the server down"] = time.monotonic() - t0
        time.sleep(max(0.0, s.server_down_s - (time.monotonic() - t0)))
        restarted = time.monotonic()
        bench.nodes[victim].server = bench._start_server(victim)
        event.figures["server restarted (live)"] = time.monotonic() - t0
        bench.wait(f"v2 READY on {victim} again", lambda: ready_on(bench.plane, victim, MODEL, 2))
        event.figures["v2 READY again (from the restart)"] = time.monotonic() - restarted

    def kill_agent(event: Event) -> None:
        victim = bench.holders(2)[0]
        event.note = victim
        t0 = time.monotonic()
        bench.nodes[victim].stop_agent(signal.SIGKILL)
        bench.wait(f"{victim} NotReady", lambda: bench.node_state(victim) == "NotReady")
        event.figures["node NotReady"] = time.monotonic() - t0
        others = [n for n in NODE_NAMES if n != victim]
        bench.wait(
            "the replica re-placed",
            lambda: sum(ready_on(bench.plane, n, MODEL, 2) for n in others) == s.replicas,
        )
        event.figures["replica re-placed: READY on another node"] = time.monotonic() - t0
        restarted = time.monotonic()
        bench.nodes[victim].start_agent()
        bench.wait(f"{victim} Ready", lambda: bench.node_state(victim) == "Ready")
        event.figures["node Ready again (from the agent's restart)"] = time.monotonic() - restarted

    def stop_plane(event: Event) -> None:
        t0 = time.monotonic()
        bench.plane.stop()
        time.sleep(s.plane_down_s)
        restarted = time.monotonic()
        bench.plane = bench._start_plane(bench.plane.port)
        event.figures["control plane back (listening)"] = time.monotonic() - t0
        bench.wait(
            "every node Ready again",
            lambda: all(bench.node_state(n) == "Ready" for n in NODE_NAMES),
        )
        event.figures["every node Ready again (from the restart)"] = time.monotonic() - restarted
        bench.wait("v2 reported READY", lambda: len(bench.holders(2)) == s.replicas)
        event.figures["replicas reported READY (from the restart)"] = time.monotonic() - restarted

    def restart_all(event: Event) -> None:
        t0 = time.monotonic()
        for node in bench.nodes.values():
            node.stop_agent()
            node.server.stop()
        bench.plane.stop()
        event.figures["everything stopped"] = time.monotonic() - t0
        restarted = time.monotonic()
        bench.plane = bench._start_plane(bench.plane.port)
        servers: dict[str, ServerProcess] = {}
        threads = [
            threading.Thread(target=lambda n=n: servers.__setitem__(n, bench._start_server(n)))
            for n in NODE_NAMES
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, node in bench.nodes.items():
            node.server = servers[name]
            node.start_agent()
        event.figures["processes started (servers live)"] = time.monotonic() - restarted
        bench.wait("the gateway serving again", bench.served_by_gateway)
        event.figures["served through the gateway again"] = time.monotonic() - restarted
        bench.wait("v2 on every replica", lambda: len(bench.holders(2)) == s.replicas)
        event.figures["replicas reported READY"] = time.monotonic() - restarted

    step("rollout", "rollout v1 → v2, waves 50%,100%", rollout)
    step("kill a server", "SIGKILL one node's server; restart it", kill_server)
    step("kill an agent", "SIGKILL one node's agent; restart it", kill_agent)
    step("stop the control plane", "SIGTERM the control plane; start it again", stop_plane)
    step("restart all", "stop every server, agent and the control plane; start them", restart_all)
    time.sleep(s.settle_s)
    origin.append(now())  # the steps' end, on the load's clock


def run(settings: Settings, ibload: str) -> Outcome:
    work = Path(tempfile.mkdtemp(prefix="ib-fleet-nodes-"))
    bench = Bench(work, settings)
    events: list[Event] = []
    pre: list[Event] = []
    load: Run | None = None
    try:
        bench.wait(
            "three nodes Ready", lambda: all(bench.node_state(n) == "Ready" for n in NODE_NAMES)
        )
        t0 = time.monotonic()
        pre.append(
            Event("push", "push v1 and v2 to MinIO, register them", 0, 0, bench.push_versions())
        )
        pre[-1].end_s = time.monotonic() - t0
        t0 = time.monotonic()
        pre.append(
            Event("deploy", f"deploy v1, {settings.replicas} replicas", 0, 0, bench.deploy())
        )
        pre[-1].end_s = time.monotonic() - t0
        bench.start_gateway()
        origin: list[float] = []

        def during() -> None:
            origin.append(time.monotonic())
            _steps(bench, events, origin)

        load = run_ibload(
            ibload,
            front="gateway",
            rest_url=bench.front.rest_url if bench.front else "",
            grpc_target="",
            payload=payloads.rest_json(work, MODEL, "input", IRIS_ROW),
            protocol="REST",
            concurrency=settings.concurrency,
            duration=settings.duration_s,
            warmup=0,
            timeout_s=10,
            timeline=True,
            during=during,
        )
        ended = origin[1] if len(origin) > 1 else settings.duration_s
        if ended > settings.duration_s:
            print(
                f"fleet_nodes: the steps ran {ended:.0f} s, past the load's "
                f"{settings.duration_s:g} s: raise --duration",
                flush=True,
            )
        for event in events:
            event.requests, event.failed, event.failing_s = _window(
                load, event.start_s, event.end_s
            )
        return Outcome(events, load, settings, pre, ended)
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
