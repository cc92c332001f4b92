"""Triton's statistics extension read with tritonclient's get_inference_statistics, over
HTTP and gRPC on every front end: the counts grow exactly with known traffic."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from inferbridge.examples.build import IRIS_INPUT
from tests.serverproc import ServerProcess

_MODEL = "iris_onnx"


def _stats(client: Any, **kwargs: str) -> list[dict[str, Any]]:
    if isinstance(client, grpcclient.InferenceServerClient):
        document = client.get_inference_statistics(as_json=True, **kwargs)
    else:
        document = client.get_inference_statistics(**kwargs)
    stats: list[dict[str, Any]] = document.get("model_stats", [])
    return stats


def _one(client: Any) -> dict[str, Any]:
    stats = _stats(client, model_name=_MODEL, model_version="1")
    assert len(stats) == 1 and stats[0]["name"] == _MODEL and stats[0]["version"] == "1"
    return stats[0]


def _int(document: dict[str, Any], *path: str) -> int:
    """A count from the document (gRPC's JSON form writes 64-bit integers as strings and
    leaves zeros out)."""
    value: Any = document
    for key in path:
        value = value.get(key, 0) if isinstance(value, dict) else 0
    return int(value or 0)


def _infer(client: Any, module: Any, rows: int) -> None:
    data = np.ones((rows, 4), np.float32)
    tensor = module.InferInput(IRIS_INPUT, [rows, 4], "FP32")
    tensor.set_data_from_numpy(data)
    client.infer(_MODEL, [tensor])


def _bad_infer(client: Any, module: Any) -> None:
    tensor = module.InferInput(IRIS_INPUT, [1, 3], "FP32")  # iris takes 4 features
    tensor.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer(_MODEL, [tensor])


def _check_growth(client: Any, module: Any) -> None:
    before = _one(client)
    for _ in range(4):
        _infer(client, module, 1)
    _infer(client, module, 2)
    _bad_infer(client, module)
    after = _one(client)

    def grew(*path: str) -> int:
        return _int(after, *path) - _int(before, *path)

    assert grew("inference_stats", "success", "count") == 5
    assert grew("inference_stats", "fail", "count") == 1
    assert grew("inference_count") == 6  # rows
    assert grew("execution_count") == 5  # one batch each: they were sent one at a time
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert grew("inference_stats", stage, "count") == 5, stage
    assert grew("inference_stats", "success", "ns") > 0
    assert grew("inference_stats", "compute_infer", "ns") > 0
    assert _int(after, "last_inference") >= max(_int(before, "last_inference"), 1)

    def batches(document: dict[str, Any]) -> dict[int, int]:
        return {
            int(b["batch_size"]): _int(b, "compute_infer", "count")
            for b in document.get("batch_stats", [])
        }

    was, now = batches(before), batches(after)
    assert now.get(1, 0) - was.get(1, 0) == 4
    assert now.get(2, 0) - was.get(2, 0) == 1


def test_http_statistics_grow_with_traffic(rest_server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(rest_server.http_url)
    try:
        _check_growth(client, httpclient)
    finally:
        client.close()


def test_grpc_statistics_grow_with_traffic(grpc_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    try:
        _check_growth(client, grpcclient)
    finally:
        client.close()


def _check_listing(client: Any) -> None:
    names = {s["name"] for s in _stats(client)}
    assert {_MODEL, "iris"} <= names
    assert len(_stats(client, model_name=_MODEL)) == 1
    with pytest.raises(InferenceServerException, match="unknown model"):
        _stats(client, model_name="no_such_model")


def test_http_lists_all_models_and_refuses_unknown_ones(rest_server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(rest_server.http_url)
    try:
        _check_listing(client)
    finally:
        client.close()


def test_grpc_lists_all_models_and_refuses_unknown_ones(grpc_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    try:
        _check_listing(client)
    finally:
        client.close()
