"""The peers, each in its own virtual environment under the cache directory, created on first
use: MLServer 1.7 (mlserver-sklearn) and Triton 2.51 as bundled by nvidia-pytriton 0.7.

Both serve the same iris model: trained by `peer_scripts/train_iris.py` in the peer's own
environment with inferbridge's data, split, estimator and seed (a joblib pickle is tied to
the scikit-learn and numpy that wrote it; pytriton forces numpy 1.26).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.procs import Server, free_port, http_ok, launch

__all__ = ["PEERS", "ensure_venv", "start_mlserver", "start_pytriton", "venv_root"]

_HERE = Path(__file__).resolve().parent
#: Requirements of each peer's environment (FACTS.md: MLServer's worker pool crashes under
#: uvloop 0.23, so its venv pins uvloop<0.22).
PEERS: dict[str, list[str]] = {
    "mlserver": ["mlserver==1.7.*", "mlserver-sklearn==1.7.*", "uvloop<0.22"],
    "pytriton": ["nvidia-pytriton==0.7.*", "scikit-learn", "joblib"],
}
_MARKER = ".inferbridge-bench-complete"


def venv_root() -> Path:
    base = os.environ.get("INFERBRIDGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inferbridge"
    )
    return Path(base) / "bench-venvs"


def ensure_venv(name: str) -> Path:
    """The peer's venv directory, created and installed on first use (cached afterwards)."""
    venv = venv_root() / name
    wanted = "\n".join(PEERS[name])
    marker = venv / _MARKER
    if marker.is_file() and marker.read_text() == wanted:
        return venv
    print(f"bench: creating the {name} virtual environment in {venv} (first run only)")
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    python = shutil.which("python3") or sys.executable
    # Use the base interpreter, not this venv's: a venv inside a venv links back to ours.
    base = getattr(sys, "_base_executable", None) or python
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *PEERS[name]], check=True)
    marker.write_text(wanted)
    return venv


def _train(venv: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(venv / "bin" / "python"), str(_HERE / "peer_scripts" / "train_iris.py"), str(out)],
        check=True,
    )
    return out


def package_version(venv: Path, package: str) -> str:
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({package!r}))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def start_mlserver(work: Path) -> Server:
    """MLServer with its default settings (one parallel worker, no adaptive batching)."""
    venv = ensure_venv("mlserver")
    root = work / "mlserver"
    if root.exists():
        shutil.rmtree(root)
    model_dir = root / "iris"
    _train(venv, model_dir / "model.joblib")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings))
    return launch(
        "mlserver",
        [str(venv / "bin" / "mlserver"), "start", str(root)],
        log_path=work / "logs" / "mlserver.log",
        ready=lambda s: http_ok(f"{s.base_url}/v2/models/iris/ready"),
        http_port=http_port,
        grpc_port=grpc_port,
        cwd=root,
    )


def start_pytriton(work: Path) -> Server:
    """Triton through pytriton: Python backend, pytriton's default dynamic batching."""
    venv = ensure_venv("pytriton")
    root = work / "pytriton"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    model = _train(venv, root / "model.joblib")
    python = str(venv / "bin" / "python")
    # The Python backend's stub must load this interpreter's own libpython (FACTS.md).
    libdir = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ld_path = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    return launch(
        "pytriton",
        [
            python,
            str(_HERE / "peer_scripts" / "pytriton_iris.py"),
            str(model),
            str(http_port),
            str(grpc_port),
            str(metrics_port),
            str(root / "workspace"),
        ],
        log_path=work / "logs" / "pytriton.log",
        ready=lambda s: http_ok(f"{s.base_url}/v2/models/iris/ready"),
        http_port=http_port,
        grpc_port=grpc_port,
        env={"LD_LIBRARY_PATH": ld_path},
        cwd=root,
        timeout=240,
    )
