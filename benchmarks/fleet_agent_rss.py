"""The node agent's resident memory at steady state with 20 models assigned (issue #13's
target: 8 MB), against real MinIO, a control plane and an inferbridge server on loopback.

    .venv/bin/python -m benchmarks.fleet_agent_rss [--models 20] [--seconds 10]

Prints a table (VmRSS, anonymous and file-backed parts, min/median/max over the sampling
window, which starts once every model is READY and a download has just finished), one row
per agent (`--before REV`: the agent at a git revision with its defaults; then VARIANTS:
the new default and each of its memory settings undone alone), each on a fresh MinIO,
control plane and server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inferbridge.examples.build import example_repository
from inferbridge.fleet.agent_build import AGENT_LDFLAGS, AgentBuildError, build_agent
from inferbridge.frontends.gateway.build import build_go_program
from tests.fleet.procs import (
    ADMIN_TOKEN,
    iris_model,
    minio_binary,
    ready_on,
    start_control_plane,
    start_minio,
    start_node,
    wait_for,
)


def _rss(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def measure(
    models: int,
    seconds: float,
    env: dict[str, str],
    label: str,
    agent_args: list[str],
    agent: Path | None = None,
) -> dict[str, object]:
    binary = minio_binary()
    if binary is None:
        raise SystemExit("MinIO is not built (see .ci/run)")
    root = Path(tempfile.mkdtemp(prefix="ib-rss-"))
    minio = start_minio(binary)
    minio.client().create_bucket(Bucket="models")
    plane = start_control_plane(root / "fleet.db")
    node = start_node(
        "rss-node",
        root / "node",
        agent or build_agent(),
        plane.url,
        {**minio.env, **env},
        agent_args,
    )
    cli_env = {
        **os.environ,
        **minio.env,
        "INFERBRIDGE_FLEET_URL": plane.url,
        "INFERBRIDGE_FLEET_TOKEN": ADMIN_TOKEN,
    }
    source = example_repository() / "iris_onnx"
    try:
        names = [f"m{i:02d}" for i in range(models)]
        for name in names:
            model = iris_model(root / "models", name, source, {1: None})
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "inferbridge",
                    "fleet",
                    "push",
                    str(model),
                    "--version",
                    "1",
                    "--to",
                    "s3://models",
                ],
                env=cli_env,
                check=True,
                capture_output=True,
            )
        deployments = root / "deployments.yaml"
        deployments.write_text("".join(f"- {{model: {n}, version: 1}}\n" for n in names))
        subprocess.run(
            [sys.executable, "-m", "inferbridge", "fleet", "apply", "-f", str(deployments)],
            env=cli_env,
            check=True,
            capture_output=True,
        )
        wait_for(
            "every model READY",
            lambda: all(ready_on(plane, "rss-node", n, 1) for n in names),
            timeout=300,
        )
        assert node.agent is not None
        pid = node.agent.process.pid
        samples = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples.append(_rss(pid))
            time.sleep(0.25)
        result: dict[str, object] = {"label": label, "models": models, "samples": len(samples)}
        for key in ("VmRSS", "RssAnon", "RssFile"):
            values = [s[key] for s in samples]
            result[key] = (min(values), statistics.median(values), max(values))
        return result
    finally:
        node.stop()
        plane.stop()
        minio.stop()


#: The new default, then each of its memory settings undone alone (one row each). Earlier
#: rounds (8ee9292, 4ebcb94) measured the collection before the trim, one P, the GC target
#: 50 %, trim periods, MADV_RANDOM and a page-cache eviction of the binary; see RESULTS.md.
VARIANTS: tuple[tuple[str, list[str], dict[str, str]], ...] = (
    ("new default", [], {}),
    (
        "new default, stacks shrunk again (GODEBUG=gcshrinkstackoff=0)",
        [],
        {"GODEBUG": "gcshrinkstackoff=0"},
    ),
    ("new default, the old `--memory-limit 6Mi`", ["--memory-limit", "6Mi"], {}),
    ("new default, `--trim-every 0` (never)", ["--trim-every", "0"], {}),
)


def build_revision(revision: str, work: Path) -> Path:
    """The agent as it was at a git revision (its source from `git archive`), built as
    build_agent built it before AGENT_LDFLAGS (-trimpath -s -w)."""
    root = Path(__file__).resolve().parents[1]
    source = work / "agent-src"
    source.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", revision, "src/inferbridge/fleet/agent"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise SystemExit(f"--before {revision}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    built: Path = build_go_program(
        source / "src" / "inferbridge" / "fleet" / "agent",
        work / "agent-bin" / "inferbridge-agent",
        what=f"agent at {revision}",
        error=AgentBuildError,
        ldflags="-s -w",
    )
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument(
        "--before", metavar="REV", help="first row: the agent at this git revision, its defaults"
    )
    options = parser.parse_args()
    if options.models < 1 or options.seconds <= 0:
        parser.error("--models must be at least 1 and --seconds positive")
    rows = []
    if options.before:
        old = build_revision(options.before, Path(tempfile.mkdtemp(prefix="ib-rss-before-")))
        label = f"before: the agent at {options.before}, its defaults"
        rows.append(measure(options.models, options.seconds, {}, label, [], old))
        print(f"measured: {label}", file=sys.stderr, flush=True)
    for label, args, env in VARIANTS:
        rows.append(measure(options.models, options.seconds, env, label, args))
        print(f"measured: {label}", file=sys.stderr, flush=True)
    binary = build_agent()
    print(f"agent binary: {binary.stat().st_size / 1e6:.1f} MB (-trimpath, {AGENT_LDFLAGS})")
    print(f"load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        f"| agent, {options.models} models READY, {options.seconds:g} s | VmRSS KiB min / median"
        " / max | anon KiB (median) | file-backed KiB (median) |"
    )
    print("|---|--:|--:|--:|")
    for row in rows:
        rss, anon, file = row["VmRSS"], row["RssAnon"], row["RssFile"]
        print(
            f"| {row['label']} | {rss[0]:,} / {rss[1]:,.0f} / {rss[2]:,} | {anon[1]:,.0f} "  # type: ignore[index]
            f"| {file[1]:,.0f} |"  # type: ignore[index]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
