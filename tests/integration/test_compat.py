"""The seed-compatible shortcuts: /predict, /v1/models/{m}:predict and gRPC AIService.Predict."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import joblib
import pytest

from inferbridge.examples.build import iris_split
from inferbridge.protocol.generated import ai_service_pb2
from tests.serverproc import ServerProcess


def _predict_stub(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
    return channel.unary_unary(
        "/ai.AIService/Predict",
        request_serializer=ai_service_pb2.PredictRequest.SerializeToString,
        response_deserializer=ai_service_pb2.PredictResponse.FromString,
    )


def test_predict_single_row_and_batch(server: ServerProcess, examples_dir: Path) -> None:
    estimator = joblib.load(examples_dir / "iris" / "1" / "model.joblib")
    _, X_test, _, _ = iris_split()
    with httpx.Client(base_url=server.base_url) as client:
        assert client.post("/predict", json=[5.1, 3.5, 1.4, 0.2]).json() == {"class": 0}
        rows = X_test[:10].tolist()
        got = client.post("/predict", json=rows).json()
        assert got == {"class": estimator.predict(X_test[:10]).tolist()}
        assert client.post("/predict", json={"features": [6.7, 3.0, 5.2, 2.3]}).json() == {
            "class": 2
        }


def test_v1_predict_instances(server: ServerProcess, examples_dir: Path) -> None:
    estimator = joblib.load(examples_dir / "iris" / "1" / "model.joblib")
    _, X_test, _, _ = iris_split()
    with httpx.Client(base_url=server.base_url) as client:
        for model in ("iris", "iris_onnx"):
            response = client.post(
                f"/v1/models/{model}:predict", json={"instances": X_test.tolist()}
            )
            assert response.status_code == 200
            assert response.json() == {"predictions": estimator.predict(X_test).tolist()}
        bad = client.post("/v1/models/iris:predict", json={"rows": []})
        assert bad.status_code == 400
        assert "instances" in bad.json()["error"]


def test_grpc_ai_service_predict(grpc_server: ServerProcess) -> None:
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        predict = _predict_stub(channel)
        reply = predict(ai_service_pb2.PredictRequest(values=[5.1, 3.5, 1.4, 0.2]))
        assert reply.result == "0"
        reply = predict(ai_service_pb2.PredictRequest(values=[6.7, 3.0, 5.2, 2.3]))
        assert reply.result == "2"
        with pytest.raises(grpc.RpcError) as info:
            predict(ai_service_pb2.PredictRequest(values=[1.0, 2.0]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Expected [-1,4]" in (info.value.details() or "")
