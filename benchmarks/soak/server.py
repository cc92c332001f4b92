"""The server under soak: a small generated repository and one `inferbridge serve` on it.

Two models, both receiving traffic and both reloaded during the run:
- `iris_onnx` (onnxruntime, dynamic batching): most of the traffic, REST and gRPC;
- `iris` (the sklearn pickle) with `isolation: process`, so that a supervised worker
  process is part of what is sampled, and each reload replaces that worker.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from benchmarks.procs import Server, http_ok, launch

__all__ = [
    "MAX_REQUEST_BYTES",
    "MODELS",
    "ONNX_MODEL",
    "ISOLATED_MODEL",
    "build_repository",
    "start",
]

ONNX_MODEL = "iris_onnx"
ISOLATED_MODEL = "iris"
MODELS = (ONNX_MODEL, ISOLATED_MODEL)
#: Small enough that an oversize body is cheap to send, far above any valid request here.
MAX_REQUEST_BYTES = 64 * 1024

_ROOT = Path(__file__).resolve().parents[2]

_ONNX_CONFIG = """\
runtime: onnx
max_batch_size: 64
dynamic_batching:
  max_queue_delay_ms: 1.0
instance_group:
  - count: 1
    kind: cpu
"""
# A joblib pickle this harness built: trusted (docs/security.md, "Safe model loading").
_ISOLATED_CONFIG = """\
runtime: sklearn
max_batch_size: 64
trust_pickle: true
isolation: process
"""


def build_repository(directory: Path) -> Path:
    """Write the two models under `directory/repository` (replacing what was there)."""
    import joblib
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    from inferbridge.examples.build import IRIS_INPUT, iris_classifier

    repository = directory / "repository"
    if repository.exists():
        shutil.rmtree(repository)
    model = iris_classifier()
    onnx_dir = repository / ONNX_MODEL / "1"
    onnx_dir.mkdir(parents=True)
    onnx_model = to_onnx(
        model,
        initial_types=[(IRIS_INPUT, FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    (onnx_dir / "model.onnx").write_bytes(onnx_model.SerializeToString())
    (repository / ONNX_MODEL / "config.yaml").write_text(_ONNX_CONFIG)
    joblib_dir = repository / ISOLATED_MODEL / "1"
    joblib_dir.mkdir(parents=True)
    joblib.dump(model, joblib_dir / "model.joblib")
    (repository / ISOLATED_MODEL / "config.yaml").write_text(_ISOLATED_CONFIG)
    return repository


def start(repository: Path, log_path: Path, *, poll: bool = False) -> Server:
    """`inferbridge serve` with the Go front-end process for REST and gRPC (no fallback:
    a soak of the wrong front end would say nothing), ready when both models are."""
    argv = [
        sys.executable,
        "-m",
        "inferbridge",
        "serve",
        str(repository),
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--grpc-frontend",
        "gateway",
        "--rest-frontend",
        "gateway",
        "--max-request-bytes",
        str(MAX_REQUEST_BYTES),
        "--log-level",
        "warning",
    ]
    if poll:
        # The load API is refused in poll mode; reloads come from touching the files.
        argv += ["--model-control-mode", "poll", "--repository-poll-secs", "5"]
    else:
        argv += ["--model-control-mode", "explicit", "--load-model", "*"]

    def ready(server: Server) -> bool:
        log = server.log_path.read_text(errors="replace")
        if "NOT loaded" in log:
            raise RuntimeError(f"inferbridge could not load a model:\n{server.log_tail()}")
        return all(http_ok(f"{server.base_url}/v2/models/{m}/ready") for m in MODELS)

    return launch(
        "inferbridge (soak)",
        argv,
        log_path=log_path,
        ready=ready,
        ports_from_log=True,
        cwd=_ROOT,
        env={"PYTHONUNBUFFERED": "1"},
    )
