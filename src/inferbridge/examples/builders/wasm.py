"""WASM example: the iris linear model as a WebAssembly module (WAT written by the project)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.examples.builders import SkipExample

__all__ = ["build_wasm", "linear_wat"]

TEMPLATE = Path(__file__).resolve().parent.parent / "wasm" / "linear.wat"
_WEIGHTS_AT = 1024


def linear_wat(coef: np.ndarray[Any, Any], intercept: np.ndarray[Any, Any]) -> str:
    """The linear-classifier module's WAT text with these weights (f64) in its data segment."""
    classes, features = coef.shape
    weights = np.concatenate([coef.reshape(-1), intercept]).astype("<f8").tobytes()
    intercept_at = _WEIGHTS_AT + 8 * classes * features
    heap = (_WEIGHTS_AT + len(weights) + 4095) // 4096 * 4096
    replacements = {
        "@WEIGHTS@": "".join(f"\\{b:02x}" for b in weights),
        "@FEATURES@": str(features),
        "@CLASSES@": str(classes),
        "@ROW_BYTES@": str(4 * features),
        "@INTERCEPT@": str(intercept_at),
        "@HEAP@": str(heap),
    }
    text = TEMPLATE.read_text()
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


def build_wasm(root: Path, iris_model: Any) -> None:
    """Write `iris_wasm`: the iris LogisticRegression's linear scores and labels in wasm."""
    try:
        import wasmtime
    except ImportError as exc:
        raise SkipExample(f"wasmtime is not installed ({exc})") from None
    coef = np.asarray(iris_model.coef_, np.float64)
    intercept = np.asarray(iris_model.intercept_, np.float64)
    model_dir = root / "iris_wasm"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.wasm").write_bytes(
        bytes(wasmtime.wat2wasm(linear_wat(coef, intercept)))
    )
    classes, features = coef.shape
    (model_dir / "config.yaml").write_text(
        "# The iris linear model compiled to WebAssembly from WAT (see the WASM ABI in\n"
        "# docs/runtimes.md). scores = input @ coef.T + intercept; label = argmax.\n"
        "runtime: wasm\n"
        "parameters: {fuel: 100000000, timeout_ms: 1000, memory_limit_mb: 16}\n"
        "inputs:\n"
        f"  - {{name: input, datatype: FP32, shape: [-1, {features}]}}\n"
        "outputs:\n"
        f"  - {{name: scores, datatype: FP32, shape: [-1, {classes}]}}\n"
        "  - {name: label, datatype: INT64, shape: [-1]}\n"
    )
