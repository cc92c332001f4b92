"""Classification heads: softmax and top-k with a labels file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inferbridge.errors import InvalidInput, ModelLoadError
from inferbridge.pipelines.base import Array, Params, Processor, Value, param

__all__ = ["Labels", "Softmax", "TopK", "read_labels", "softmax", "top_k"]


def softmax(scores: Array, axis: int = -1) -> Array:
    """Numerically stable softmax in float32."""
    shifted = np.asarray(scores, np.float32) - np.max(scores, axis=axis, keepdims=True)
    exp = np.exp(shifted)
    result: Array = exp / np.sum(exp, axis=axis, keepdims=True)
    return result


def top_k(scores: Array, k: int) -> tuple[Array, Array]:
    """(indices [N, k], scores [N, k]) best first; ties keep the lower index first."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


class Softmax(Processor):
    """Scores [N, C] -> probabilities [N, C]."""

    name = "softmax"

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        return (softmax(np.asarray(values[0])),)


class TopK(Processor):
    """Scores [N, C] -> (labels BYTES [N, k], scores FP32 [N, k]), best first.

    Parameters: `k` (default 5), `softmax` (apply softmax first; default false), `labels`
    (a text file in the version directory, one label per line; default the class index)."""

    name = "top_k"
    returns = (2, 2)

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        self.k = param(params, "k", int, 5, self.name)
        if self.k < 1:
            raise ModelLoadError("top_k: k must be at least 1")
        self.softmax = param(params, "softmax", bool, False, self.name)
        self.labels = read_labels(params, model_dir, self.name)

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        scores = np.asarray(values[0], np.float32)
        if scores.ndim != 2:
            raise InvalidInput(f"top_k expects scores [N, classes], got {list(scores.shape)}")
        if self.softmax:
            scores = softmax(scores)
        indices, best = top_k(scores, self.k)
        labels = np.empty(indices.shape, dtype=object)
        for position, index in np.ndenumerate(indices):
            labels[position] = self._label(int(index)).encode()
        return labels, best.astype(np.float32)

    def _label(self, index: int) -> str:
        return _label(self.labels, index)


class Labels(Processor):
    """Class indices (any shape) -> BYTES label names of the same shape, from `labels` (a
    text file in the version directory, one per line); an index past the file is itself."""

    name = "labels"

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        self.labels = read_labels(params, model_dir, self.name)

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        indices = np.asarray(values[0])
        names = np.empty(indices.shape, dtype=object)
        for position, index in np.ndenumerate(indices):
            names[position] = _label(self.labels, int(index)).encode()
        return (names,)


def read_labels(params: Params, model_dir: Path, step: str) -> list[str] | None:
    """The `labels` file's lines, or None when the step names no labels file."""
    labels_file = params.get("labels")
    if not labels_file:
        return None
    path = model_dir / str(labels_file)
    try:
        return [line.strip() for line in path.read_text().splitlines()]
    except OSError as exc:
        raise ModelLoadError(f"{step}: cannot read labels file {path}: {exc}") from None


def _label(labels: list[str] | None, index: int) -> str:
    if labels is not None and 0 <= index < len(labels):
        return labels[index]
    return str(index)
