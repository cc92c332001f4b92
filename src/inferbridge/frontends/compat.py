"""Seed-compatible shortcuts as adapters over the dataplane.

`POST /predict` (a bare feature list), `POST /v1/models/{m}:predict` (TF Serving / KServe v1
`instances`) and gRPC `ai.AIService/Predict` all become an ordinary OIP request on the
model's first input, and read the answer back from its outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.errors import InvalidInput
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.types import InferenceRequest, InferenceResponse

__all__ = ["LABEL_OUTPUT", "predict_classes", "predict_instances"]

LABEL_OUTPUT = "label"


async def predict_classes(
    dataplane: DataPlane, model: str, features: Any
) -> tuple[list[Any], bool]:
    """Classes for one feature row or a list of rows; the flag says whether one row was sent."""
    single = isinstance(features, list) and bool(features) and not isinstance(features[0], list)
    rows = [features] if single else features
    response = await _run(dataplane, model, rows)
    return _classes(response), single


async def predict_instances(dataplane: DataPlane, model: str, instances: Any) -> list[Any]:
    """KServe v1 predictions: the label for classifiers, else the single output, else a dict
    of every output per instance."""
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list")
    response = await _run(dataplane, model, instances)
    by_name = {t.name: t.data for t in response.outputs}
    if LABEL_OUTPUT in by_name:
        return _to_python(by_name[LABEL_OUTPUT])
    if len(by_name) == 1:
        return _to_python(next(iter(by_name.values())))
    columns = {name: _to_python(data) for name, data in by_name.items()}
    return [{name: column[i] for name, column in columns.items()} for i in range(len(instances))]


async def _run(dataplane: DataPlane, model: str, rows: Any) -> InferenceResponse:
    metadata = dataplane.model_metadata(model)
    if len(metadata.inputs) != 1:
        raise InvalidInput(
            f"model '{model}' has {len(metadata.inputs)} inputs; this endpoint serves "
            "single-input models (use /v2/models/{m}/infer)"
        )
    spec = metadata.inputs[0]
    if spec.datatype == "BYTES":
        raise InvalidInput(f"model '{model}' takes BYTES; use /v2/models/{model}/infer")
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("send a list of numbers, or a non-empty list of such lists")
    try:
        array = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidInput("features must be a rectangular list of numbers") from None
    expected_rest = spec.shape[1:]
    if array.ndim != len(spec.shape):
        raise InvalidInput(
            f"model '{model}' expects rows of shape {list(expected_rest)}; got data of shape "
            f"{list(array.shape[1:]) if array.ndim else []}"
        )
    request = InferenceRequest(
        model_name=model,
        model_version=None,
        inputs={spec.name: array.astype(dtype_of(spec.datatype))},
        input_datatypes={spec.name: spec.datatype},
    )
    return await dataplane.infer(request)


def _classes(response: InferenceResponse) -> list[Any]:
    by_name = {t.name: t.data for t in response.outputs}
    if LABEL_OUTPUT in by_name:
        return _to_python(by_name[LABEL_OUTPUT])
    scores = response.outputs[0].data
    if scores.ndim == 2:
        return [int(i) for i in np.argmax(scores, axis=1)]
    return _to_python(scores)


def _to_python(array: np.ndarray[Any, Any]) -> list[Any]:
    values: list[Any] = array.tolist()
    return [v.decode() if isinstance(v, bytes) else v for v in values]
