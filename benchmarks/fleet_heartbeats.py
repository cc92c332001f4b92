"""1,000 simulated agents against one control plane (SQLite): heartbeat latency, the control
plane's CPU and memory, time for a deployment to be READY on every node, and time to detect
dead nodes and re-place their replicas.

    .venv/bin/python -m benchmarks.fleet_heartbeats [--agents 1000] [--seconds 60]

The agents are goroutines of one Go process (benchmarks/fleet_sim), each a real client with
its own identity and token: it registers, heartbeats every second and holds an assignment
long poll; what it is assigned it reports READY at once. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from inferbridge.frontends.gateway.build import find_go
from tests.fleet.procs import (
    BOOTSTRAP_TOKEN,
    ControlPlaneProc,
    free_port,
    start_control_plane,
    start_etcd_cluster,
    start_replica,
    wait_for,
)

_SIM = Path(__file__).resolve().parent / "fleet_sim"
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _status(plane: ControlPlaneProc) -> dict[str, Any]:
    return dict(plane.get("/v1/fleet/status"))


def _deployment(plane: ControlPlaneProc, model: str) -> dict[str, Any]:
    return next(d for d in _status(plane)["deployments"] if d["model"] == model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--die", type=int, default=10, help="agents that stop heartbeating")
    parser.add_argument(
        "--etcd", action="store_true", help="store on a 3-member etcd cluster instead of SQLite"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the control plane and the agents at this priority (e.g. -5 as root, to "
        "measure them rather than the other work on a shared machine)",
    )
    options = parser.parse_args()
    go = find_go()
    if go is None:
        raise SystemExit("needs Go")
    root = Path(tempfile.mkdtemp(prefix="ib-fleet-bench-"))
    sim = root / "fleet_sim"
    subprocess.run([go, "build", "-o", str(sim), "."], cwd=_SIM, check=True)
    members = start_etcd_cluster(3) if options.etcd else []
    if members:
        store = "etcd:" + ",".join(m.client_url for m in members)
        plane = start_replica(store, free_port(), missed_heartbeats=3)
        wait_for("the leader", lambda: plane.get("/v1/fleet/health")["leader"], timeout=60)
    else:
        plane = start_control_plane(root / "fleet.db", missed_heartbeats=3)
    pid = plane.proc.process.pid
    warmup, die_at = 15.0, options.seconds - 20
    agents = subprocess.Popen(
        [
            str(sim),
            "-control-plane",
            plane.url,
            "-agents",
            str(options.agents),
            "-duration",
            f"{options.seconds}s",
            "-warmup",
            f"{warmup}s",
            "-die",
            str(options.die),
            "-die-at",
            f"{die_at}s",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "INFERBRIDGE_FLEET_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN},
    )
    if options.nice:
        os.setpriority(os.PRIO_PROCESS, pid, options.nice)
        os.setpriority(os.PRIO_PROCESS, agents.pid, options.nice)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        for model in ("sim_all", "sim_ten"):
            plane.call(
                "POST",
                "/v1/fleet/artifacts",
                {
                    "model": model,
                    "version": 1,
                    "uri": f"s3://models/{model}/1/model.tar.gz",
                    "sha256": "0" * 64,
                    "size": 1,
                },
            ).raise_for_status()
        wait_for(
            "every agent registered",
            lambda: _status(plane)["nodes"]["ready"] == options.agents,
            timeout=120,
        )
        registered_s = time.monotonic() - started
        while time.monotonic() - started < warmup:
            time.sleep(0.2)
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        deployed = time.monotonic()
        plane.call(
            "PUT",
            "/v1/fleet/deployments/sim_all",
            {"version": 1, "replicas": "all", "resources": "cpu=1"},
        ).raise_for_status()
        wait_for(
            "sim_all READY everywhere",
            lambda: _deployment(plane, "sim_all")["ready"] == options.agents,
            timeout=120,
        )
        all_ready_s = time.monotonic() - deployed
        plane.call(
            "PUT",
            "/v1/fleet/deployments/sim_ten",
            {"version": 1, "replicas": 10, "resources": "cpu=1"},
        ).raise_for_status()
        wait_for("sim_ten READY", lambda: _deployment(plane, "sim_ten")["ready"] == 10, timeout=60)
        hosts = {
            n["name"] for n in plane.get("/v1/fleet/nodes")["nodes"] if "sim_ten" in n["assigned"]
        }
        dead = {f"sim-{i:04d}" for i in range(options.die)}
        rss = [_rss_mib(pid)]
        while time.monotonic() - started < die_at:
            rss.append(_rss_mib(pid))
            time.sleep(0.5)
        cpu1, t1 = _cpu_seconds(pid), time.monotonic()
        inside = dict(plane.get("/v1/fleet/health"))
        died = time.monotonic()
        wait_for(
            "dead nodes NotReady",
            lambda: _status(plane)["nodes"]["ready"] == options.agents - options.die,
            timeout=60,
        )
        detected_s = time.monotonic() - died

        def replaced() -> bool:
            nodes = plane.get("/v1/fleet/nodes")["nodes"]
            serving = {
                n["name"]
                for n in nodes
                if n["state"] == "Ready" and n["models"].get("sim_ten", {}).get("state") == "READY"
            }
            return len(serving) >= 10

        wait_for("sim_ten re-placed", replaced, timeout=60)
        replaced_s = time.monotonic() - died
        out, _ = agents.communicate(timeout=120)
        result = json.loads(out.strip().splitlines()[-1])
    finally:
        if agents.poll() is None:
            agents.kill()
        plane.stop()
        for member in members:
            member.proc.stop()
    cores = (cpu1 - cpu0) / (t1 - t0)
    load_after = os.getloadavg()[0]
    kind = "etcd (3 members)" if options.etcd else "SQLite"
    print(f"| {options.agents} agents, 1 s heartbeats, {kind}, nice {options.nice} | value |")
    print("|---|--:|")
    print(f"| heartbeats answered (errors) | {result['heartbeats']} ({result['errors']}) |")
    print(
        f"| heartbeat p50 / p90 / p99 / max ms | {result['p50_ms']:.1f} / {result['p90_ms']:.1f} "
        f"/ {result['p99_ms']:.1f} / {result['max_ms']:.1f} |"
    )
    hb, lag = inside["heartbeat"], inside["loop_lag"]
    print(
        f"| heartbeat handling, in the control plane, p50 / p99 ms | {hb['p50_ms']} / "
        f"{hb['p99_ms']} |"
    )
    print(
        f"| its event loop's lag p50 / p99 / max ms (20 probes a second) | {lag['p50_ms']} / "
        f"{lag['p99_ms']} / {lag.get('max_ms', '-')} |"
    )
    hold = inside.get("reconcile_hold", {})
    print(
        f"| longest CPU ms a reconciliation pass held the loop without yielding, p50 / p99 / "
        f"max (not load-dependent) | {hold.get('p50_ms', '-')} / {hold.get('p99_ms', '-')} / "
        f"{hold.get('max_ms', '-')} |"
    )
    pauses = inside.get("gc_full_collection", {})
    print(
        f"| Python's full garbage collections: count, p50 / max ms | {pauses.get('count', '-')}, "
        f"{pauses.get('p50_ms', '-')} / {pauses.get('max_ms', '-')} |"
    )
    busy = inside.get("loop_cpu_per_window", {})
    print(
        f"| CPU ms its loop thread used in one 50 ms probe window p50 / p99 / max (not "
        f"load-dependent) | {busy.get('p50_ms', '-')} / {busy.get('p99_ms', '-')} / "
        f"{busy.get('max_ms', '-')} |"
    )
    print(f"| control plane CPU (cores, steady state with deploys) | {cores:.2f} |")
    print(f"| control plane RSS MiB (max) | {max(rss):.0f} |")
    print(f"| machine load average (1 min) at start / end | {load_before:.1f} / {load_after:.1f} |")
    print(f"| all {options.agents} registered after start, s | {registered_s:.1f} |")
    print(f"| deployment READY on all {options.agents} nodes, s | {all_ready_s:.2f} |")
    print(f"| {options.die} nodes stop: NotReady detected after, s | {detected_s:.2f} |")
    moved = len(hosts & dead)
    print(f"| their replicas ({moved} of sim_ten's 10) READY elsewhere, s | {replaced_s:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
