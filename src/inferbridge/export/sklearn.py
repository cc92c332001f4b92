"""scikit-learn estimator -> ONNX (skl2onnx) or skops, written as a repository entry and
verified. Both load without running code from the file, unlike the joblib pickle itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.export.verify import Verification, verify_entry

__all__ = ["export_sklearn", "export_sklearn_skops", "skops_reference", "sklearn_reference"]


def sklearn_reference(estimator: Any, X: np.ndarray[Any, Any]) -> dict[str, Any]:
    """What the ONNX export should return: label + probabilities, or variable."""
    if hasattr(estimator, "predict_proba"):
        return {
            "label": np.asarray(estimator.predict(X)),
            "probabilities": np.asarray(estimator.predict_proba(X), np.float32),
        }
    return {"variable": np.asarray(estimator.predict(X), np.float32).reshape(len(X), -1)}


def export_sklearn(
    estimator: Any,
    sample: np.ndarray[Any, Any],
    target: Path,
    *,
    input_name: str = "input",
    tolerance: float = 1e-4,
    converted: Any = None,
) -> Verification:
    """Write `target/config.yaml` + `target/1/model.onnx` and verify on `sample` rows.

    `converted` (default `estimator`) is what gets converted; the original is always
    `estimator` - a different one here is how tests make a deliberately wrong export."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    sample = np.asarray(sample, np.float32)
    source = estimator if converted is None else converted
    last = source.steps[-1][1] if hasattr(source, "steps") else source
    options = {id(last): {"zipmap": False}} if hasattr(last, "predict_proba") else None
    model = to_onnx(
        source,
        initial_types=[(input_name, FloatTensorType([None, sample.shape[1]]))],
        options=options,
        target_opset=17,
    )
    (target / "1").mkdir(parents=True, exist_ok=True)
    (target / "1" / "model.onnx").write_bytes(model.SerializeToString())
    (target / "config.yaml").write_text(
        f"# Exported by `inferbridge export sklearn` from {type(estimator).__name__}.\n"
        "runtime: onnx\nmax_batch_size: 64\ndynamic_batching: {max_queue_delay_ms: 1}\n"
    )
    return verify_entry(
        target, {input_name: sample}, sklearn_reference(estimator, sample), tolerance
    )


def skops_reference(estimator: Any, X: np.ndarray[Any, Any]) -> dict[str, Any]:
    """What the sklearn runtime returns for `estimator` on `X` (label and probabilities, or
    predictions)."""
    from sklearn.base import is_classifier

    if is_classifier(estimator) and hasattr(estimator, "classes_"):
        result = {"label": np.asarray(estimator.predict(X))}
        if hasattr(estimator, "predict_proba"):
            result["probabilities"] = np.asarray(estimator.predict_proba(X), np.float64)
        if result["label"].dtype.kind in "OSU":
            result["label"] = np.array([str(x).encode() for x in result["label"]], dtype=object)
        return result
    return {"predictions": np.asarray(estimator.predict(X), np.float64)}


def export_sklearn_skops(
    estimator: Any,
    sample: np.ndarray[Any, Any],
    target: Path,
    *,
    input_name: str = "input",
    tolerance: float = 1e-9,
) -> Verification:
    """Write `target/config.yaml` + `target/1/model.skops` (the sklearn runtime loads it with
    skops' type check, no pickle) and verify on `sample` rows. An estimator holding a type
    skops does not trust by default is refused here, as the server would refuse it."""
    import skops.io as sio

    from inferbridge.errors import InferBridgeError

    sample = np.asarray(sample, np.float32)
    (target / "1").mkdir(parents=True, exist_ok=True)
    path = target / "1" / "model.skops"
    sio.dump(estimator, path)
    untrusted = sio.get_untrusted_types(file=path)
    if untrusted:
        raise InferBridgeError(
            f"{type(estimator).__name__} holds types skops does not trust by default "
            f"({', '.join(untrusted)}); export it to ONNX, or list them in the model's "
            "parameters (trusted_types) after reviewing them"
        )
    (target / "config.yaml").write_text(
        f"# Exported by `inferbridge export sklearn --format skops` from "
        f"{type(estimator).__name__}.\n"
        f"runtime: sklearn\nmodel_file: model.skops\n"
        f"inputs: [{{name: {input_name}, datatype: FP32, shape: [-1, {sample.shape[1]}]}}]\n"
        "max_batch_size: 64\ndynamic_batching: {max_queue_delay_ms: 1}\n"
    )
    return verify_entry(
        target, {input_name: sample}, skops_reference(estimator, sample), tolerance
    )
