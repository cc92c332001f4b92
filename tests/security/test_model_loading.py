"""Safe model loading, in process: pickles and other code-running artefacts need a pinned
digest or trust_pickle, skops files load with skops' type check, pins are checked for every
runtime, and repository loads refuse paths that leave the repository."""

from __future__ import annotations

import base64
import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbridge.errors import InvalidInput, ModelLoadError
from inferbridge.models.requests import (
    max_model_file_bytes,
    parse_load_parameters,
    set_max_model_file_bytes,
)
from inferbridge.models.source import resolve_source
from inferbridge.repository.config import ModelConfig, load_config
from inferbridge.repository.integrity import verify_pinned_files
from inferbridge.repository.repository import LoadedVersion, load_version
from inferbridge.runtimes.sklearn import SklearnRuntime

joblib = pytest.importorskip("joblib")
sio = pytest.importorskip("skops.io")


def _iris() -> tuple[Any, np.ndarray[Any, Any]]:
    from inferbridge.examples.build import iris_classifier, iris_split

    return iris_classifier(), iris_split()[1][:5]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _joblib_model(root: Path, name: str = "iris", config: str = "runtime: sklearn\n") -> Path:
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True)
    estimator, _ = _iris()
    joblib.dump(estimator, model_dir / "1" / "model.joblib")
    (model_dir / "config.yaml").write_text(config)
    return model_dir


def _load(model_dir: Path, version: int = 1) -> LoadedVersion:
    config = load_config(model_dir / "config.yaml")
    loaded = LoadedVersion(model_dir.name, version, model_dir / str(version), config)
    load_version(loaded)
    return loaded


class _Marker:
    """A pickle that creates a file when it is unpickled: code running at load."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_unpinned_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    model_dir = tmp_path / "evil"
    (model_dir / "1").mkdir(parents=True)
    marker = tmp_path / "ran"
    (model_dir / "1" / "model.joblib").write_bytes(pickle.dumps(_Marker(marker)))
    (model_dir / "config.yaml").write_text("runtime: sklearn\n")
    loaded = _load(model_dir)
    assert not loaded.ready and not marker.exists()
    digest = _sha(model_dir / "1" / "model.joblib")
    assert "joblib pickle, which runs code when it loads" in loaded.reason
    assert "trust_pickle: true" in loaded.reason and digest in loaded.reason


def test_pinned_or_trusted_pickle_loads(tmp_path: Path) -> None:
    pinned = _joblib_model(tmp_path, "pinned")
    digest = _sha(pinned / "1" / "model.joblib")
    (pinned / "config.yaml").write_text(
        f"runtime: sklearn\nsha256: {{1/model.joblib: '{digest}'}}\n"
    )
    trusted = _joblib_model(tmp_path, "trusted", "runtime: sklearn\ntrust_pickle: true\n")
    for model_dir in (pinned, trusted):
        loaded = _load(model_dir)
        assert loaded.ready, loaded.reason
        assert loaded.runtime is not None
        _, rows = _iris()
        assert loaded.runtime.infer({"input": rows})["label"].shape == (5,)


def test_a_pin_that_does_not_match_fails_any_runtime(tmp_path: Path) -> None:
    model_dir = tmp_path / "onnx_model"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(b"whatever the bytes")
    (model_dir / "labels.txt").write_text("a\nb\n")
    wrong = "0" * 64
    (model_dir / "config.yaml").write_text(f"runtime: onnx\nsha256: {{1/model.onnx: '{wrong}'}}\n")
    loaded = _load(model_dir)
    assert not loaded.ready
    assert "sha256 mismatch for 1/model.onnx" in loaded.reason and wrong in loaded.reason
    # Shared files are pinned by their path in the model directory; other versions' pins
    # do not apply to this one.
    config = ModelConfig(
        runtime="onnx",
        sha256={"labels.txt": _sha(model_dir / "labels.txt"), "2/model.onnx": wrong},
    )
    verify_pinned_files(model_dir / "1", config)
    missing = ModelConfig(runtime="onnx", sha256={"1/absent.bin": wrong})
    with pytest.raises(ModelLoadError, match=r"pinned file 1/absent\.bin"):
        verify_pinned_files(model_dir / "1", missing)


def test_pin_keys_and_digests_are_validated() -> None:
    from pydantic import ValidationError

    for bad in ({"../x": "0" * 64}, {"1/model": "ABC"}, {"/etc/passwd": "0" * 64}):
        with pytest.raises(ValidationError):
            ModelConfig(runtime="onnx", sha256=bad)


def test_skops_loads_with_the_type_check(tmp_path: Path) -> None:
    import fractions

    estimator, rows = _iris()
    safe = tmp_path / "safe"
    (safe / "1").mkdir(parents=True)
    sio.dump(estimator, safe / "1" / "model.skops")
    (safe / "config.yaml").write_text("runtime: sklearn\nmodel_file: model.skops\n")
    loaded = _load(safe)
    assert loaded.ready, loaded.reason
    assert loaded.runtime is not None
    np.testing.assert_array_equal(
        loaded.runtime.infer({"input": rows})["label"], estimator.predict(rows)
    )

    estimator.note = fractions.Fraction(1, 3)  # a type skops does not trust by default
    odd = tmp_path / "odd"
    (odd / "1").mkdir(parents=True)
    sio.dump(estimator, odd / "1" / "model.skops")
    (odd / "config.yaml").write_text("runtime: sklearn\nmodel_file: model.skops\n")
    loaded = _load(odd)
    assert not loaded.ready and "fractions.Fraction" in loaded.reason
    (odd / "config.yaml").write_text(
        "runtime: sklearn\nmodel_file: model.skops\n"
        "parameters: {trusted_types: [fractions.Fraction]}\n"
    )
    assert _load(odd).ready


def test_skops_export_writes_a_loadable_entry(tmp_path: Path) -> None:
    from inferbridge.export.sklearn import export_sklearn_skops

    estimator, rows = _iris()
    result = export_sklearn_skops(estimator, rows, tmp_path / "iris_skops")
    assert result.ok
    assert (tmp_path / "iris_skops" / "1" / "model.skops").is_file()
    assert "model_file: model.skops" in (tmp_path / "iris_skops" / "config.yaml").read_text()


def test_native_library_and_torchscript_archive_need_trust(tmp_path: Path) -> None:
    io = (
        "inputs: [{name: x, datatype: FP32, shape: [-1, 4]}]\n"
        "outputs: [{name: y, datatype: FP32, shape: [-1, 4]}]\n"
    )
    native = tmp_path / "lib"
    (native / "1").mkdir(parents=True)
    (native / "1" / "model.so").write_bytes(b"\x7fELF not loaded at all")
    (native / "config.yaml").write_text("runtime: native\n" + io)
    loaded = _load(native)
    assert not loaded.ready and "native library, which runs code" in loaded.reason
    (native / "config.yaml").write_text("runtime: native\ntrust_pickle: true\n" + io)
    assert "cannot load native library" in _load(native).reason  # trusted: dlopen is tried

    pytest.importorskip("torch")
    script = tmp_path / "ts"
    (script / "1").mkdir(parents=True)
    (script / "1" / "model.pt").write_bytes(b"PK\x03\x04 not really an archive")
    (script / "config.yaml").write_text("runtime: torchscript\n" + io)
    assert "TorchScript archive, which runs code" in _load(script).reason


# -- repository loads: trust, paths, symlinks, sizes ----------------------------------


def test_a_load_request_cannot_grant_trust() -> None:
    for config in (
        {"runtime": "sklearn", "trust_pickle": True},
        {"runtime": "sklearn", "parameters": {"trusted_types": ["x.Y"]}},
    ):
        with pytest.raises(InvalidInput, match="only the model's config on the server's disk"):
            parse_load_parameters({"config": config}, base64_files=True)


def test_uploaded_pickle_is_not_trusted_even_when_pinned(tmp_path: Path) -> None:
    estimator, _ = _iris()
    joblib.dump(estimator, tmp_path / "m.joblib")
    data = (tmp_path / "m.joblib").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    request = parse_load_parameters(
        {
            "config": {"runtime": "sklearn", "sha256": {"1/model.joblib": digest}},
            "file:1/model.joblib": base64.b64encode(data).decode(),
        },
        base64_files=True,
    )
    source = resolve_source(None, "sent", request, tmp_path / "scratch")
    loaded = LoadedVersion("sent", 1, source.path / "1", source.config)
    load_version(loaded)
    assert not loaded.ready and "runs code when it loads" in loaded.reason


def test_an_override_config_keeps_the_disk_configs_trust(tmp_path: Path) -> None:
    model_dir = _joblib_model(tmp_path / "repo")
    digest = _sha(model_dir / "1" / "model.joblib")
    (model_dir / "config.yaml").write_text(
        f"runtime: sklearn\nsha256: {{1/model.joblib: '{digest}'}}\n"
    )
    request = parse_load_parameters(
        {"config": {"runtime": "sklearn", "max_batch_size": 4}}, base64_files=True
    )
    source = resolve_source(tmp_path / "repo", "iris", request, None)
    assert source.config.max_batch_size == 4 and source.config.sha256 == {"1/model.joblib": digest}
    loaded = LoadedVersion("iris", 1, source.path / "1", source.config)
    load_version(loaded)
    assert loaded.ready, loaded.reason
    conflicting = parse_load_parameters(
        {"config": {"runtime": "sklearn", "sha256": {"1/model.joblib": "1" * 64}}},
        base64_files=True,
    )
    with pytest.raises(InvalidInput, match=r"pins 1/model\.joblib"):
        resolve_source(tmp_path / "repo", "iris", conflicting, None)


def test_symlinks_out_of_the_repository_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.onnx").write_bytes(b"not yours")
    model_dir = root / "linked"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.yaml").write_text("runtime: onnx\n")
    (model_dir / "1" / "model.onnx").symlink_to(outside / "secret.onnx")
    with pytest.raises(InvalidInput, match=r"file 1/model.onnx leaves the repository \(through"):
        resolve_source(root, "linked", None, None)
    # A link that stays inside the repository is fine.
    (model_dir / "1" / "model.onnx").unlink()
    (root / "shared.onnx").write_bytes(b"shared")
    (model_dir / "1" / "model.onnx").symlink_to(root / "shared.onnx")
    assert resolve_source(root, "linked", None, None).versions
    # So is a model directory that is itself a link out of the repository, not.
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    (outside / "config.yaml").write_text("runtime: onnx\n")
    with pytest.raises(InvalidInput, match="model directory 'elsewhere' leaves the repository"):
        resolve_source(root, "elsewhere", None, None)


def test_model_file_must_stay_in_the_model_directory(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "m" / "1").mkdir(parents=True)
    for model_file in ("../../outside.onnx", "/etc/passwd"):
        (root / "m" / "config.yaml").write_text(f"runtime: onnx\nmodel_file: '{model_file}'\n")
        with pytest.raises(InvalidInput, match="model_file"):
            resolve_source(root, "m", None, None)
    request = parse_load_parameters(
        {"config": {"runtime": "onnx", "model_file": "../../../x.onnx"}}, base64_files=True
    )
    with pytest.raises(InvalidInput, match="leaves the repository"):
        resolve_source(root, "m", request, None)


def test_files_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "big" / "1").mkdir(parents=True)
    (root / "big" / "config.yaml").write_text("runtime: onnx\n")
    (root / "big" / "1" / "model.onnx").write_bytes(bytes(4096))
    before = max_model_file_bytes()
    set_max_model_file_bytes(1024)
    try:
        with pytest.raises(InvalidInput, match=r"file 1/model.onnx has 4096 bytes, over the limit"):
            resolve_source(root, "big", None, None)
        with pytest.raises(InvalidInput, match=r"'file:1/model\.onnx': the file has 4096 bytes"):
            parse_load_parameters(
                {
                    "config": {"runtime": "onnx"},
                    "file:1/model.onnx": base64.b64encode(bytes(4096)).decode(),
                },
                base64_files=True,
            )
    finally:
        set_max_model_file_bytes(before)
    assert resolve_source(root, "big", None, None).versions


@pytest.mark.parametrize(
    "key", ["file:../x", "file:1/../../x", "file:/etc/x", "file:1\\x", "file:1/./x", "file:"]
)
def test_file_parameters_cannot_leave_the_model_directory(key: str) -> None:
    with pytest.raises(InvalidInput, match="relative to the model directory"):
        parse_load_parameters(
            {"config": {"runtime": "onnx"}, key: base64.b64encode(b"x").decode()},
            base64_files=True,
        )


def test_pipeline_steps_name_models_of_the_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "p" / "1").mkdir(parents=True)
    steps = "[{model: ../../etc, inputs: {a: x}, outputs: {b: y}}]"
    (root / "p" / "config.yaml").write_text(
        "runtime: pipeline\n"
        "inputs: [{name: x, datatype: FP32, shape: [-1]}]\n"
        "outputs: [{name: y, datatype: FP32, shape: [-1]}]\n"
        f"parameters: {{steps: {steps}}}\n"
    )
    loaded = _load(root / "p")
    assert not loaded.ready and "a step's model is a model of the same repository" in loaded.reason


def test_the_examples_pin_what_runs_code(examples_dir: Path) -> None:
    config = load_config(examples_dir / "iris" / "config.yaml")
    assert config.sha256 and not config.trust_pickle
    SklearnRuntime().load(examples_dir / "iris" / "1", config, "cpu")
