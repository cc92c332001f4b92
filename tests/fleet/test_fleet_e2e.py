"""The fleet end to end on loopback: MinIO, the control plane, two agents beside two real
inferbridge servers, driven through the `inferbridge fleet` CLI.

The tests share one fleet (module fixture) and use a model name each; their order
matters only in that the ones that stop processes restore them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fleet.conftest import Fleet
from tests.fleet.procs import grep, iris_model, model_state, ready_on, wait_for

pytestmark = pytest.mark.slow

NODES = ("node-a", "node-b")


def cli(fleet: Fleet, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "inferbridge", "fleet", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **fleet.cli_env},
        timeout=180,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"fleet {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_push_deploy_rollout_and_wave_rollback(fleet: Fleet, examples_dir: Path) -> None:
    model = iris_model(
        fleet.root / "models",
        "iris_waves",
        examples_dir / "iris_onnx",
        {1: None, 2: None, 3: b"not an onnx model"},
    )
    pushed = cli(fleet, "push", str(model), "--version", "1", "--to", "s3://models/fleet")
    assert "registered with" in pushed.stdout
    fleet.push(model, 2)
    fleet.push(model, 3)
    listed = fleet.minio.client().list_objects_v2(Bucket="models", Prefix="fleet/iris_waves/1/")
    assert {o["Key"] for o in listed["Contents"]} == {
        "fleet/iris_waves/1/model.tar.gz",
        "fleet/iris_waves/1/manifest.json",
    }

    cli(
        fleet,
        "deploy",
        "iris_waves",
        "--version",
        "1",
        "--replicas",
        "all",
        "--resources",
        "cpu=100m",
    )
    for name in NODES:
        wait_for(
            f"iris_waves v1 on {name}", lambda n=name: ready_on(fleet.plane, n, "iris_waves", 1)
        )
        assert fleet.nodes[name].infer("iris_waves").json()["model_version"] == "1"
    routes = fleet.plane.get("/v1/fleet/routing")["models"]["iris_waves"]
    assert sorted(r["node"] for r in routes) == list(NODES)
    assert {r["url"] for r in routes} == {fleet.nodes[n].server.base_url for n in NODES}
    status = cli(fleet, "status").stdout
    assert grep(r"iris_waves\s+1\s+2/2\s+Ready", status), status

    done = cli(
        fleet,
        "rollout",
        "iris_waves",
        "--version",
        "2",
        "--waves",
        "50%,100%",
        "--health-gate",
        "1s",
        "--wait",
    )
    assert "Succeeded" in done.stdout, done.stdout
    for name in NODES:
        assert ready_on(fleet.plane, name, "iris_waves", 2)
        assert fleet.nodes[name].infer("iris_waves").json()["model_version"] == "2"
        # The unassigned version was garbage-collected from the node.
        versions = fleet.nodes[name].repository / ".fleet" / "iris_waves"
        wait_for("version 1 collected", lambda v=versions: not (v / "1").exists())
    assert fleet.plane.get("/v1/fleet/deployments/iris_waves")["version"] == 2

    failed = cli(
        fleet,
        "rollout",
        "iris_waves",
        "--version",
        "3",
        "--waves",
        "50%,100%",
        "--health-gate",
        "1s",
        "--wait",
        check=False,
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "RolledBack" in failed.stdout and "version 3 failed" in failed.stdout, failed.stdout
    for name in NODES:
        wait_for(f"{name} back on v2", lambda n=name: ready_on(fleet.plane, n, "iris_waves", 2))
        assert fleet.nodes[name].infer("iris_waves").json()["model_version"] == "2"
    view = fleet.plane.get("/v1/fleet/rollouts/iris_waves")
    assert view["state"] == "RolledBack" and view["failed"], view


def test_digest_mismatch_is_reported_and_never_served(fleet: Fleet, examples_dir: Path) -> None:
    model = iris_model(
        fleet.root / "models", "iris_tampered", examples_dir / "iris_onnx", {1: None}
    )
    fleet.push(model, 1)
    # Someone replaces the object (same size) after the manifest was written.
    manifest = fleet.plane.get("/v1/fleet/artifacts")["artifacts"]
    size = next(m["size"] for m in manifest if m["model"] == "iris_tampered")
    fleet.minio.client().put_object(
        Bucket="models", Key="iris_tampered/1/model.tar.gz", Body=b"x" * size
    )
    fleet.deploy("iris_tampered", 1)

    def failed() -> dict[str, str]:
        for deployment in fleet.plane.get("/v1/fleet/status")["deployments"]:
            if deployment["model"] == "iris_tampered" and deployment["failures"]:
                return dict(deployment["failures"])
        return {}

    failures = wait_for("the digest mismatch to be reported", failed)
    ((node, reason),) = failures.items()
    assert "sha256" in reason and "the manifest says" in reason and "not served" in reason
    assert "iris_tampered" not in fleet.nodes[node].index()
    assert fleet.nodes[node].infer("iris_tampered").status_code == 404
    assert not (fleet.nodes[node].repository / "iris_tampered").exists()
    fleet.undeploy("iris_tampered")


def test_interrupted_download_resumes(fleet: Fleet, examples_dir: Path) -> None:
    model = iris_model(fleet.root / "models", "iris_resume", examples_dir / "iris_onnx", {1: None})
    fleet.push(model, 1)
    data = fleet.minio.client().get_object(Bucket="models", Key="iris_resume/1/model.tar.gz")
    body = data["Body"].read()
    sha = hashlib.sha256(body).hexdigest()
    # Both nodes hold the first half from an earlier, interrupted transfer.
    for node in fleet.nodes.values():
        staging = node.state_dir / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        (staging / f"{sha}.part").write_bytes(body[: len(body) // 2])
    fleet.deploy("iris_resume", 1)
    host = wait_for(
        "iris_resume ready somewhere",
        lambda: next((n for n in NODES if ready_on(fleet.plane, n, "iris_resume", 1)), None),
    )
    agent = fleet.nodes[host].agent
    assert agent is not None
    assert grep(rf"resuming download.*offset={len(body) // 2} size={len(body)}", agent.text())
    assert fleet.nodes[host].infer("iris_resume").status_code == 200
    fleet.undeploy("iris_resume")


def test_unsatisfiable_resources_stay_pending_with_the_reason(
    fleet: Fleet, examples_dir: Path
) -> None:
    model = iris_model(fleet.root / "models", "iris_gpu", examples_dir / "iris_onnx", {1: None})
    fleet.push(model, 1)
    cli(fleet, "deploy", "iris_gpu", "--version", "1", "--resources", "gpu=0.25,gpu_type=T4")
    wait_for(
        "the pending reason",
        lambda: (
            "no node has gpu_type=T4 with 0.25 GPU free" in str(fleet.plane.get("/v1/fleet/status"))
        ),
    )
    assert "no node has gpu_type=T4 with 0.25 GPU free" in cli(fleet, "status").stdout
    refused = cli(fleet, "deploy", "iris_gpu", "--version", "7", check=False)
    assert refused.returncode == 1 and "no artefact for iris_gpu version 7" in refused.stderr
    unknown = cli(fleet, "logs", "no-such-node", check=False)
    assert unknown.returncode == 1 and "unknown node 'no-such-node'" in unknown.stderr
    fleet.undeploy("iris_gpu")


def test_logs_and_diagnose_over_the_agent_channel(fleet: Fleet) -> None:
    logs = cli(fleet, "logs", "node-a", "--lines", "5").stdout.splitlines()
    assert 0 < len(logs) <= 5
    report = cli(fleet, "diagnose", "node-b").stdout
    for part in ('"health"', '"repository"', '"disk"', '"free_bytes"', '"rss_bytes"'):
        assert part in report
    nodes = cli(fleet, "nodes").stdout
    assert grep(r"node-a\s+Ready", nodes) and grep(r"node-b\s+Ready", nodes)


def test_offline_autonomy_then_reconcile_on_return(fleet: Fleet, examples_dir: Path) -> None:
    model = iris_model(fleet.root / "models", "iris_offline", examples_dir / "iris_onnx", {1: None})
    fleet.push(model, 1)
    fleet.deploy("iris_offline", 1, replicas="all")
    for name in NODES:
        wait_for(
            f"iris_offline on {name}", lambda n=name: ready_on(fleet.plane, n, "iris_offline", 1)
        )
    before = {n: len(fleet.nodes[n].agent.lines) for n in NODES}  # type: ignore[union-attr]
    fleet.plane.stop()
    for node in fleet.nodes.values():
        agent = node.agent
        assert agent is not None
        wait_for("the agent to notice", lambda a=agent: "control plane unreachable" in a.text())
    # "Nothing changes" needs time to pass: a few of the agents' resync passes (2 s).
    time.sleep(5)
    for node in fleet.nodes.values():
        assert node.infer("iris_offline").status_code == 200
        assert node.infer("iris_waves").status_code == 200
        assert node.agent is not None
        since = "\n".join(node.agent.lines[before[node.name] :])
        assert "UNLOADING" not in since and "unloaded" not in since, since
    # A server that loses a model while the control plane is away gets it back at once;
    # the state changes are buffered and delivered when the control plane returns.
    node_a = fleet.nodes["node-a"]
    httpx.post(f"{node_a.server.base_url}/v2/repository/models/iris_offline/unload", timeout=30)
    wait_for("iris_offline loaded again", lambda: "iris_offline" in node_a.index())
    fleet.restart_plane()
    for name in NODES:
        wait_for(f"{name} Ready again", lambda n=name: fleet.plane.node(n)["state"] == "Ready")
        wait_for(
            f"{name} reports again", lambda n=name: ready_on(fleet.plane, n, "iris_offline", 1)
        )
    events = wait_for("buffered events delivered", lambda: fleet.plane.node("node-a")["events"])
    assert {"LOADING", "READY"} <= {e["state"] for e in events if e["model"] == "iris_offline"}
    fleet.undeploy("iris_offline")


def test_dead_agent_is_not_ready_and_its_replica_moves(fleet: Fleet, examples_dir: Path) -> None:
    model = iris_model(fleet.root / "models", "iris_moves", examples_dir / "iris_onnx", {1: None})
    fleet.push(model, 1)
    fleet.deploy("iris_moves", 1)
    first = wait_for(
        "iris_moves placed",
        lambda: next((n for n in NODES if ready_on(fleet.plane, n, "iris_moves", 1)), None),
    )
    other = next(n for n in NODES if n != first)
    fleet.nodes[first].stop_agent(signal.SIGKILL)
    wait_for(f"{first} NotReady", lambda: fleet.plane.node(first)["state"] == "NotReady")
    wait_for(f"iris_moves on {other}", lambda: ready_on(fleet.plane, other, "iris_moves", 1))
    routes = fleet.plane.get("/v1/fleet/routing")["models"]
    assert all(r["node"] != first for entries in routes.values() for r in entries)
    # The node rejoins cleanly: Ready, keeps its other models, drops the moved replica.
    fleet.nodes[first].start_agent()
    wait_for(f"{first} Ready", lambda: fleet.plane.node(first)["state"] == "Ready")
    wait_for(
        f"iris_moves gone from {first}",
        lambda: (
            model_state(fleet.plane, first, "iris_moves") is None
            and "iris_moves" not in fleet.nodes[first].index()
        ),
    )
    assert ready_on(fleet.plane, first, "iris_waves", 2)
    assert ready_on(fleet.plane, other, "iris_moves", 1)
