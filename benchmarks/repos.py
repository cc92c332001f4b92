"""The model repositories under test: the same model files, one config.yaml per variant.

`off` has no `dynamic_batching` block; `on` batches with a short queue delay; the overload
variants add (or leave out) a queue bound and a default timeout.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.image_model import build_image_model

__all__ = [
    "IRIS_ROW",
    "OVERLOAD_QUEUE",
    "OVERLOAD_TIMEOUT_MS",
    "QUEUE_DELAY_MS",
    "Repositories",
    "build_repositories",
]

IRIS_ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
#: Batching window per model in the `on` variant (milliseconds).
QUEUE_DELAY_MS = {"iris": 1.0, "iris_onnx": 1.0, "image": 2.0}
#: The image's bound comes from its in-process ceiling (scenario 4): onnxruntime runs this
#: MobileNet at about the same rate per image up to batch 4 and 12 % slower at batch 16, so
#: bigger batches would cost throughput, the opposite of what batching is for.
_MAX_BATCH = {"iris": 64, "iris_onnx": 64, "image": 4}
_RUNTIME = {"iris": "sklearn", "iris_onnx": "onnx", "image": "onnx"}
#: Overload scenario, "bounds on": queue bound (requests) and default timeout.
OVERLOAD_QUEUE = 256
OVERLOAD_TIMEOUT_MS = 100.0


@dataclass(frozen=True)
class Repositories:
    off: Path
    on: Path
    overload_bounded: Path
    overload_unbounded: Path
    image_builder: str  # "torch" or "onnx.helper"
    iris_joblib: Path
    iris_onnx: Path
    image_onnx: Path

    def variant(self, name: str) -> Path:
        return Path(getattr(self, name))


def _config(model: str, batching: bool, queue: int = 0, timeout_ms: float = 0.0) -> str:
    lines = [f"runtime: {_RUNTIME[model]}", f"max_batch_size: {_MAX_BATCH[model]}"]
    if _RUNTIME[model] == "sklearn":  # a joblib pickle we built: trusted (docs/security.md)
        lines.append("trust_pickle: true")
    if batching:
        lines += [
            "dynamic_batching:",
            f"  max_queue_delay_ms: {QUEUE_DELAY_MS[model]}",
            f"  max_queue_size: {queue}",
            f"  default_timeout_ms: {timeout_ms}",
        ]
    lines += ["instance_group:", "  - count: 1", "    kind: cpu"]
    return "\n".join(lines) + "\n"


def _model(repo: Path, model: str, source: Path, config: str) -> None:
    target = repo / model / "1" / ("model" + source.suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    (repo / model / "config.yaml").write_text(config)


def _iris_models(directory: Path) -> tuple[Path, Path]:
    """The bundled examples' iris model (same estimator, data and seed), as joblib and ONNX.

    Built here rather than copied from `example_repository()`, which builds every example
    of every runtime: slower, and a broken unrelated builder would stop the benchmark.
    """
    import joblib
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    from inferbridge.examples.build import IRIS_INPUT, iris_classifier

    directory.mkdir(parents=True, exist_ok=True)
    model = iris_classifier()
    joblib_path = directory / "iris.joblib"
    joblib.dump(model, joblib_path)
    onnx_model = to_onnx(
        model,
        initial_types=[(IRIS_INPUT, FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    onnx_path = directory / "iris.onnx"
    onnx_path.write_bytes(onnx_model.SerializeToString())
    return joblib_path, onnx_path


def build_repositories(work: Path) -> Repositories:
    """Write every variant under `work` (replacing what was there)."""
    models = work / "models"
    if models.exists():
        shutil.rmtree(models)
    iris_joblib, iris_onnx = _iris_models(models / "sources")
    image_onnx = models / "sources" / "image.onnx"
    builder = build_image_model(image_onnx)
    sources = {"iris": iris_joblib, "iris_onnx": iris_onnx, "image": image_onnx}
    paths = {}
    for variant in ("off", "on"):
        repo = models / variant
        for model, source in sources.items():
            _model(repo, model, source, _config(model, batching=variant == "on"))
        paths[variant] = repo
    for variant, queue, timeout in (
        ("overload_bounded", OVERLOAD_QUEUE, OVERLOAD_TIMEOUT_MS),
        ("overload_unbounded", 0, 0.0),
    ):
        repo = models / variant
        _model(repo, "iris", iris_joblib, _config("iris", True, queue, timeout))
        paths[variant] = repo
    return Repositories(
        off=paths["off"],
        on=paths["on"],
        overload_bounded=paths["overload_bounded"],
        overload_unbounded=paths["overload_unbounded"],
        image_builder=builder,
        iris_joblib=iris_joblib,
        iris_onnx=iris_onnx,
        image_onnx=image_onnx,
    )
