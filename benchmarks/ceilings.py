"""In-process ceilings: the models called directly (no server, no network) at the batch sizes
the server would form: onnxruntime for the ONNX models, predict + predict_proba for the
scikit-learn iris model (what the sklearn runtime calls)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Ceiling", "onnx_ceiling", "sklearn_ceiling"]


@dataclass
class Ceiling:
    model: str
    runtime: str
    threads: int
    batch: int
    ms_per_call: float
    rows_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time(call: Callable[[], object], seconds: float, max_calls: int = 200_000) -> float:
    """Mean seconds per call over about `seconds` (after two warm-up calls)."""
    call()
    call()
    calls = 0
    start = time.perf_counter()
    while calls < max_calls:
        call()
        calls += 1
        if time.perf_counter() - start >= seconds:
            break
    return (time.perf_counter() - start) / calls


def onnx_ceiling(
    model: str,
    path: Path,
    input_name: str,
    sample: Callable[[int], np.ndarray],
    batches: list[int],
    threads: int,
    seconds: float,
) -> list[Ceiling]:
    """onnxruntime with the server's session settings (inter-op 1, `threads` intra-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    results = []
    for batch in batches:
        feed = {input_name: sample(batch)}
        per_call = _time(lambda feed=feed: session.run(None, feed), seconds)
        results.append(
            Ceiling(model, "onnxruntime", threads, batch, per_call * 1e3, batch / per_call)
        )
    return results


def sklearn_ceiling(
    model: str, path: Path, sample: Callable[[int], np.ndarray], batches: list[int], seconds: float
) -> list[Ceiling]:
    import joblib

    estimator = joblib.load(path)
    results = []
    for batch in batches:
        x = sample(batch)

        def call(x: np.ndarray = x) -> object:
            return estimator.predict(x), estimator.predict_proba(x)

        per_call = _time(call, seconds)
        results.append(Ceiling(model, "scikit-learn", 1, batch, per_call * 1e3, batch / per_call))
    return results
