"""1,000 simulated agents against one control plane (SQLite): heartbeat latency, the control
plane's CPU and memory, time for a deployment to be READY on every node, and time to detect
dead nodes and re-place their replicas.

    .venv/bin/python -m benchmarks.fleet_heartbeats [--agents 1000] [--seconds 60]
        [--gc python|freeze|freeze-each-full|scheduled] [--gc-thresholds G0,G1,G2]
        [--gc-full-every S]
        [--etcd [--replicas 2]] [--json results.jsonl]

The agents are goroutines of one Go process (benchmarks/fleet_sim), each a real client with
its own identity and token: it registers, heartbeats every second and holds an assignment
long poll; what it is assigned it reports READY at once. On etcd with several replicas, agent
i talks to replica i mod N. Prints a table (and appends its figures as one JSON line to
--json): the --gc-* options go to every `fleet serve` (docs/fleet.md, "Garbage collection").
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


def _gc_summary(plane: ControlPlaneProc) -> dict[str, Any]:
    """The collector's figures `fleet serve` logs when it stops."""
    for line in reversed(plane.proc.lines):
        if line.startswith(_GC_LINE):
            return dict(json.loads(line[len(_GC_LINE) :]))
    return {}


_GC_LINE = "inferbridge: fleet gc: "


def _status(plane: ControlPlaneProc) -> dict[str, Any]:
    return dict(plane.get("/v1/fleet/status"))


def _deployment(plane: ControlPlaneProc, model: str) -> dict[str, Any]:
    return next(d for d in _status(plane)["deployments"] if d["model"] == model)


def _plot(records: list[dict[str, Any]], out: Path) -> None:
    """Left: each run's heartbeat p99 at the agents against the machine's load, by GC mode;
    right: the loop time full collections took per minute (CPU), by mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mode(record: dict[str, Any]) -> str:
        gc_options = record.get("gc", {})
        name = gc_options.get("gc") or gc_options.get("gc_freeze") or "default"
        name = {"never": "python", "start": "freeze", "each-full": "freeze-each-full"}.get(
            name, name
        )
        if gc_options.get("gc_thresholds"):
            name += f" {gc_options['gc_thresholds']}"
        return f"{name} ({record['store']})"

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    modes = sorted({mode(r) for r in records})
    per_minute: dict[str, list[float]] = {m: [] for m in modes}
    for name in modes:
        runs = [r for r in records if mode(r) == name]
        left.scatter(
            [sum(r["load"]) / 2 for r in runs], [r["agent_ms"]["p99_ms"] for r in runs], label=name
        )
        for r in runs:
            summary = (r.get("collectors") or [{}])[0].get("full") or {}
            cpu_p50 = (summary.get("cpu_ms_p50_max") or [None])[0]
            if cpu_p50 is not None:
                minutes = (r["seconds"] + 10) / 60  # the run and the control plane's start
                per_minute[name].append(summary["count"] * cpu_p50 / minutes)
    left.axhline(50, color="grey", linestyle="--", linewidth=1)
    left.set_yscale("log")
    left.set_xlabel("machine load average (1 min), mean of start and end (2 cores)")
    left.set_ylabel("heartbeat p99 at the agents, ms")
    left.set_title("1,000 agents: p99 follows the load; dashed: the 50 ms target")
    left.legend(fontsize=7)
    shown = [m for m in modes if per_minute[m]]
    right.bar(
        range(len(shown)), [sum(per_minute[m]) / len(per_minute[m]) for m in shown], color="C1"
    )
    right.set_xticks(range(len(shown)), shown, rotation=20, ha="right", fontsize=7)
    right.set_ylabel("ms of CPU per minute in full collections (loop held)")
    right.set_title("full garbage collections: count x CPU each, per minute")
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--die", type=int, default=10, help="agents that stop heartbeating")
    parser.add_argument(
        "--etcd", action="store_true", help="store on a 3-member etcd cluster instead of SQLite"
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="control-plane replicas (with --etcd)"
    )
    parser.add_argument("--gc", help="fleet serve --gc MODE (default: its default)")
    parser.add_argument("--gc-thresholds", help="fleet serve --gc-thresholds G0,G1,G2")
    parser.add_argument("--gc-full-every", help="fleet serve --gc-full-every SECONDS")
    parser.add_argument("--json", type=Path, help="append the figures to this file as a line")
    parser.add_argument(
        "--plot",
        type=Path,
        help="only draw PNG from the --json records of earlier runs (--plot-from), run nothing",
    )
    parser.add_argument("--plot-from", type=Path, nargs="*", default=[])
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the control plane and the agents at this priority (e.g. -5 as root, to "
        "measure them rather than the other work on a shared machine)",
    )
    options = parser.parse_args()
    if options.plot is not None:
        records = [
            json.loads(line)
            for path in options.plot_from
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        if not records:
            parser.error("--plot needs --plot-from FILE... with the records of --json runs")
        _plot(records, options.plot)
        return 0
    if options.replicas < 1 or (options.replicas > 1 and not options.etcd):
        parser.error("--replicas N (N >= 1) needs --etcd for more than one")
    # Through the environment: start_control_plane / start_replica take no extra flags.
    for flag, variable in (
        ("gc", "INFERBRIDGE_FLEET_GC"),
        ("gc_thresholds", "INFERBRIDGE_FLEET_GC_THRESHOLDS"),
        ("gc_full_every", "INFERBRIDGE_FLEET_GC_FULL_EVERY"),
    ):
        if getattr(options, flag) is not None:
            os.environ[variable] = getattr(options, flag)
    go = find_go()
    if go is None:
        raise SystemExit("needs Go")
    root = Path(tempfile.mkdtemp(prefix="ib-fleet-bench-"))
    sim = root / "fleet_sim"
    subprocess.run([go, "build", "-o", str(sim), "."], cwd=_SIM, check=True)
    members = start_etcd_cluster(3) if options.etcd else []
    if members:
        store = "etcd:" + ",".join(m.client_url for m in members)
        planes = [
            start_replica(store, free_port(), missed_heartbeats=3) for _ in range(options.replicas)
        ]
    else:
        planes = [start_control_plane(root / "fleet.db", missed_heartbeats=3)]
    # The admin calls go to the leader (health's "leader": whether that replica leads).
    plane = wait_for(
        "a leader",
        lambda: next((p for p in planes if p.get("/v1/fleet/health")["leader"]), None),
        timeout=60,
    )
    pids = [p.proc.process.pid for p in planes]
    warmup, die_at = 15.0, options.seconds - 20
    # Before the agents: on etcd, their registration storm would time this write out.
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
    except BaseException:
        for each in planes:
            each.stop()
        for member in members:
            member.proc.stop()
        raise
    agents = subprocess.Popen(
        [
            str(sim),
            "-control-plane",
            ",".join(p.url for p in planes),
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
        for pid in [*pids, agents.pid]:
            os.setpriority(os.PRIO_PROCESS, pid, options.nice)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        wait_for(
            "every agent registered",
            lambda: _status(plane)["nodes"]["ready"] == options.agents,
            timeout=120,
        )
        registered_s = time.monotonic() - started
        while time.monotonic() - started < warmup:
            time.sleep(0.2)
        cpu0, t0 = [_cpu_seconds(pid) for pid in pids], time.monotonic()
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
        # (seconds since start, RSS MiB of each replica) every 0.5 s until the agents die.
        rss: list[tuple[float, list[float]]] = []
        while time.monotonic() - started < die_at:
            rss.append((time.monotonic() - started, [_rss_mib(pid) for pid in pids]))
            time.sleep(0.5)
        cpu1, t1 = [_cpu_seconds(pid) for pid in pids], time.monotonic()
        insides = [dict(p.get("/v1/fleet/health")) for p in planes]
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
        for each in planes:
            each.stop()
        for member in members:
            member.proc.stop()
    collectors = [_gc_summary(p) for p in planes]
    cores = [(b - a) / (t1 - t0) for a, b in zip(cpu0, cpu1, strict=True)]
    load_after = os.getloadavg()[0]
    # RSS growth: from the first sample a minute after the start (the fleet registered, both
    # deployments READY) to the last, per replica.
    settled = [r for t, r in rss if t >= 60] or [rss[-1][1]]
    span_min = max((rss[-1][0] - next((t for t, _ in rss if t >= 60), rss[-1][0])) / 60, 1e-9)
    growth = [
        (last - first) / span_min for first, last in zip(settled[0], settled[-1], strict=True)
    ]
    kind = f"etcd (3 members, {len(planes)} replica(s))" if options.etcd else "SQLite"
    policy = collectors[0].get("policy", "?") if collectors else "?"
    print(
        f"| {options.agents} agents, 1 s heartbeats, {kind}, gc {policy} "
        f"{collectors[0].get('thresholds') if collectors else ''}, nice {options.nice} | value |"
    )
    print("|---|--:|")
    print(f"| heartbeats answered (errors) | {result['heartbeats']} ({result['errors']}) |")
    print(
        f"| heartbeat p50 / p90 / p99 / max ms | {result['p50_ms']:.1f} / {result['p90_ms']:.1f} "
        f"/ {result['p99_ms']:.1f} / {result['max_ms']:.1f} |"
    )
    inside = insides[planes.index(plane)]
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
    print(
        "| full collections per replica (count, p50 / max ms) | "
        + "; ".join(
            f"{i.get('gc_full_collection', {}).get('count', '-')}, "
            f"{i.get('gc_full_collection', {}).get('p50_ms', '-')} / "
            f"{i.get('gc_full_collection', {}).get('max_ms', '-')}"
            for i in insides
        )
        + " |"
    )
    for i, summary in enumerate(collectors):
        print(
            f"| replica {i}: collections gen 0/1/2; full ones: count, wall ms p50/max, CPU "
            f"ms p50/max; objects frozen at the end; controlled collections (ms, found) | "
            f"{summary.get('collections')}; {summary.get('full')}; "
            f"{summary.get('frozen_objects')}; {summary.get('controlled')} |"
        )
    print(
        "| control plane CPU per replica (cores, steady state with deploys) | "
        + " / ".join(f"{c:.2f}" for c in cores)
        + " |"
    )
    print(
        "| control plane RSS MiB per replica: at 60 s / max / growth MiB per minute after | "
        + " / ".join(
            f"{settled[0][i]:.0f} / {max(r[i] for _, r in rss):.0f} / {growth[i]:+.2f}"
            for i in range(len(planes))
        )
        + " |"
    )
    print(f"| machine load average (1 min) at start / end | {load_before:.1f} / {load_after:.1f} |")
    print(f"| all {options.agents} registered after start, s | {registered_s:.1f} |")
    print(f"| deployment READY on all {options.agents} nodes, s | {all_ready_s:.2f} |")
    print(f"| {options.die} nodes stop: NotReady detected after, s | {detected_s:.2f} |")
    moved = len(hosts & dead)
    print(f"| their replicas ({moved} of sim_ten's 10) READY elsewhere, s | {replaced_s:.2f} |")
    if options.json is not None:
        record = {
            "store": "etcd" if options.etcd else "sqlite",
            "replicas": len(planes),
            "agents": options.agents,
            "seconds": options.seconds,
            "gc": {k: getattr(options, k) for k in ("gc", "gc_thresholds", "gc_full_every")},
            "load": [load_before, load_after],
            "agent_ms": {k: result[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
            "heartbeats": result["heartbeats"],
            "errors": result["errors"],
            "inside": insides,
            "collectors": collectors,
            "cores": cores,
            "rss_mib": rss,
            "rss_growth_mib_per_min": growth,
            "registered_s": registered_s,
            "all_ready_s": all_ready_s,
            "detected_s": detected_s,
            "replaced_s": replaced_s,
        }
        with options.json.open("a") as out:
            out.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
