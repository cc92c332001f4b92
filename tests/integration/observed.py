"""A small repository and helpers shared by the metrics, statistics and logs suites."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.serverproc import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
#: Python front ends: what the fallback (no gateway) serves with.
PYTHON_FRONTENDS = ("--grpc-frontend", "grpcio", "--rest-frontend", "uvicorn")
FAIL_VALUE = 99.0  # a row with this value makes the echo model fail


def small_repository(root: Path) -> Path:
    """`echo` (fast, fails on FAIL_VALUE) and `slow` (0.5 s per request, queue bound 2)."""
    for name, config in {
        "echo": "max_batch_size: 8\nparameters: {sleep_s: 0.0, fail_on: 99.0}\n",
        "slow": "max_batch_size: 1\ndynamic_batching: {max_queue_size: 2}\n"
        "parameters: {sleep_s: 0.5}\n",
    }.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.yaml").write_text(
            "runtime: tests.support.runtimes:SleepEcho\n" + config
        )
    return root


def start(repository: Path, *args: str) -> ServerProcess:
    return start_server(repository, *args, env={"PYTHONPATH": str(ROOT)})


def infer_body(value: float = 1.0, rows: int = 1) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [rows, 2], "data": [value, 2.0] * rows}
        ]
    }


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[str, Samples]:
    """GET a /metrics URL: its text and every sample by (name, labels)."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
