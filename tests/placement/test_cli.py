"""`inferbridge placement simulate|policies|serve` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from inferbridge.cli import main

DATA = Path(__file__).parent / "data"


def test_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["placement", "policies"]) == 0
    assert capsys.readouterr().out.split() == [
        "random", "dotprod", "gpu-clustering", "gpu-packing", "best-fit", "fgd", "fgd-plus",
    ]  # fmt: skip


def test_simulate_prints_a_row_per_seed(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["placement", "simulate", "--nodes", str(DATA / "nodes.csv"), "--tasks"]
    assert main([*args, str(DATA / "tasks.csv"), "--policy", "best-fit", "--seeds", "42,43"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("policy seed tasks failed")
    assert [line.split()[:2] for line in lines[1:]] == [["best-fit", "42"], ["best-fit", "43"]]


def test_simulate_names_the_bad_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "tasks.csv"
    bad.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\nt1,100,100,1,-5\n")
    assert (
        main(["placement", "simulate", "--nodes", str(DATA / "nodes.csv"), "--tasks", str(bad)])
        == 2
    )
    assert "tasks.csv:2: gpu_milli must not be negative" in capsys.readouterr().err


def test_serve_answers_kube_scheduler() -> None:
    command = [sys.executable, "-m", "inferbridge", "placement", "serve", "--port", "0",
               "--policy", "fgd-plus", "--nodes", str(DATA / "nodes.csv")]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), line
        names = [row.split(",")[0] for row in (DATA / "nodes.csv").read_text().splitlines()[1:4]]
        pod = {
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "annotations": {"alibabacloud.com/gpu-milli": "250"},
            },
            "spec": {
                "containers": [
                    {"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}
                ]
            },
        }
        body = json.dumps({"Pod": pod, "Nodes": None, "NodeNames": names}).encode()
        request = urllib.request.Request(f"{url}/prioritize", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=60) as answer:
            scores = json.loads(answer.read())
        assert [s["Host"] for s in scores] == names
        assert max(s["Score"] for s in scores) == 10
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
