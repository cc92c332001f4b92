from pathlib import Path

import pytest

from inferbridge.errors import ConfigError
from inferbridge.repository.config import VersionPolicy, load_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_valid_config_fields(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            "runtime: onnx\nmax_batch_size: 8\n"
            "inputs:\n- {name: x, datatype: FP32, shape: [-1, 4]}\n"
            "version_policy: {latest: {num_versions: 2}}\n"
            "instance_group: [{count: 2, kind: gpu, gpus: [1]}]\n",
        )
    )
    assert config.max_batch_size == 8
    assert config.input_specs()[0].shape == (-1, 4)
    assert config.device() == "cuda:1"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_batch_size: 1\n", "field 'runtime'"),
        ("runtime: onnx\nmax_bach_size: 4\n", "field 'max_bach_size'"),
        ("runtime: onnx\nmax_batch_size: -1\n", "field 'max_batch_size'"),
        (
            "runtime: onnx\ninputs: [{name: x, datatype: FLOAT, shape: [1]}]\n",
            "field 'inputs.0.datatype'",
        ),
        ("runtime: onnx\nversion_policy: {latest: {}, all: {}}\n", "choose one"),
        ("runtime: [onnx\n", "cannot read YAML"),
        ("- runtime\n", "expected a mapping"),
    ],
)
def test_config_errors_name_file_and_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({}, [7]),
        ({"latest": {"num_versions": 2}}, [3, 7]),
        ({"all": {}}, [1, 3, 7]),
        ({"specific": {"versions": [1, 7, 9]}}, [1, 7]),
    ],
)
def test_version_policies(policy: dict[str, object], expected: list[int]) -> None:
    assert VersionPolicy.model_validate(policy).select([3, 1, 7]) == expected
