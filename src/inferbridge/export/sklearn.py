"""scikit-learn estimator -> ONNX (skl2onnx), written as a repository entry and verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.export.verify import Verification, verify_entry

__all__ = ["export_sklearn", "sklearn_reference"]


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
