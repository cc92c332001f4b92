"""Triton's model config mapped onto ours, and ours shown as Triton's ModelConfig. Run by
test_triton_config.py in a process of its own: these need inferbridge's model_config_pb2,
which cannot share a process with tritonclient's."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from inferbridge.errors import ConfigError, InvalidInput
from inferbridge.models.requests import parse_load_parameters
from inferbridge.repository.config import find_config, read_config
from inferbridge.repository.triton_view import config_document, triton_config

FULL = """
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
default_model_filename: "simple.onnx"
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_STRING dims: [ -1 ] reshape: { shape: [ 4, 4 ] } }
]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] label_filename: "labels.txt" } ]
dynamic_batching {
  max_queue_delay_microseconds: 1500
  preferred_batch_size: [ 4, 8 ]
  preserve_ordering: true
  priority_levels: 3
  default_priority_level: 2
  default_queue_policy {
    max_queue_size: 10 default_timeout_microseconds: 5000 timeout_action: DELAY
  }
}
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 1 ] name: "g" } ]
version_policy { specific { versions: [ 1, 3 ] } }
parameters { key: "intra_op_num_threads" value { string_value: "2" } }
parameters { key: "mode" value { string_value: "fast" } }
optimization { graph { level: 1 } }
model_warmup [ { name: "w" batch_size: 1 } ]
"""


def write(tmp_path: Path, text: str, name: str = "simple") -> Path:
    model = tmp_path / name
    model.mkdir(exist_ok=True)
    path = model / "config.pbtxt"
    path.write_text(text)
    return path


def test_every_mapped_field(tmp_path: Path) -> None:
    config = read_config(write(tmp_path, FULL), "simple")
    assert config.runtime == "onnx"
    assert config.platform == "onnxruntime_onnx"
    assert config.model_file == "simple.onnx"
    assert config.max_batch_size == 8
    assert [(t.name, t.datatype, t.shape) for t in config.inputs] == [
        ("INPUT0", "INT32", [-1, 16]),
        ("INPUT1", "BYTES", [-1, -1]),
    ]
    assert [(t.name, t.datatype, t.shape) for t in config.outputs] == [
        ("OUTPUT0", "FP32", [-1, 16])
    ]
    batching = config.dynamic_batching
    assert batching is not None
    assert batching.max_queue_delay_ms == 1.5
    assert batching.preferred_batch_sizes == [4, 8]
    assert batching.priority_levels == 3
    assert batching.default_priority_level == 2
    assert batching.max_queue_size == 10
    assert batching.default_timeout_ms == 5.0
    assert batching.hold_for_delay is True  # Triton's batcher for a Triton config
    assert [(g.count, g.kind, g.gpus) for g in config.instance_group] == [(2, "gpu", [1])]
    assert config.device() == "cuda:1"
    assert config.version_policy.specific is not None
    assert config.version_policy.specific.versions == [1, 3]
    assert config.warmup is True
    assert config.parameters == {"intra_op_num_threads": 2, "mode": "fast"}


def test_ignored_fields_are_reported_by_name_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, FULL)
    with caplog.at_level(logging.WARNING):
        config = read_config(path, "simple")
        read_config(path, "simple")  # poll mode re-reads: no second warning
    expected = [
        "input.reshape",
        "output.label_filename",
        "instance_group.name",
        "dynamic_batching.preserve_ordering",
        "dynamic_batching.default_queue_policy.timeout_action",
        "optimization",
    ]
    assert list(config.ignored_fields[: len(expected)]) == expected
    assert config.ignored_fields[-1].startswith("model_warmup")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "model 'simple'" in warnings[0]
    assert all(name in warnings[0] for name in expected)
    assert "approximated: model_warmup" in warnings[0]


def test_a_clean_config_reports_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = 'backend: "onnxruntime"\nmax_batch_size: 0\n'
    with caplog.at_level(logging.WARNING):
        config = read_config(write(tmp_path, text, "plain"), "plain")
    assert config.ignored_fields == ()
    assert not caplog.records
    assert config.runtime == "onnx" and config.model_file is None
    assert config.inputs == [] and config.dynamic_batching is None
    assert config.version_policy.select([1, 2, 3]) == [3]


@pytest.mark.parametrize(
    ("text", "runtime", "platform"),
    [
        ('platform: "pytorch_libtorch"', "torchscript", "pytorch_libtorch"),
        ('backend: "pytorch"', "torchscript", "pytorch_libtorch"),
        ('platform: "tensorflow_savedmodel"', "tensorflow", "tensorflow_savedmodel"),
        ('backend: "tensorflow"', "tensorflow", "tensorflow_savedmodel"),
        ('backend: "onnxruntime" platform: "onnxruntime_onnx"', "onnx", "onnxruntime_onnx"),
    ],
)
def test_platforms_and_backends(tmp_path: Path, text: str, runtime: str, platform: str) -> None:
    config = read_config(write(tmp_path, text, "m"), "m")
    assert (config.runtime, config.platform) == (runtime, platform)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('backend: "python"', "'python' is not served: Triton's Python backend"),
        ('platform: "tensorflow_graphdef"', "loads SavedModel directories only"),
        ('platform: "ensemble"', "ensembles are not served"),
        ('platform: "tensorrt_plan"', "field 'platform': 'tensorrt_plan' is not supported"),
        ('backend: "openvino"', "supported platforms and backends: onnxruntime_onnx"),
        ("max_batch_size: 4", "set 'platform' or 'backend'"),
        ('platform: "pytorch_libtorch" backend: "onnxruntime"', "disagree"),
        ('name: "other" backend: "onnxruntime"', "field 'name': 'other' is not the model's"),
        (
            'backend: "onnxruntime" input [{ name: "x" data_type: TYPE_BF16 dims: [1] }]',
            "field 'input' 'x': data_type TYPE_BF16 is not supported",
        ),
        (
            'backend: "onnxruntime" dynamic_batching { }',
            "dynamic_batching needs max_batch_size >= 1",
        ),
    ],
)
def test_refusals_name_the_model_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text, "m")
    with pytest.raises(ConfigError) as caught:
        read_config(path, "m")
    assert message in caught.value.message
    assert str(path) in caught.value.message


def test_a_parse_error_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, 'backend: "onnxruntime"\nmax_batch_size: 8\nbogus_field: 3\n', "m")
    with pytest.raises(ConfigError) as caught:
        read_config(path, "m")
    assert f"{path}:3:" in caught.value.message
    assert "bogus_field" in caught.value.message


def test_version_policies_and_instance_kinds(tmp_path: Path) -> None:
    text = (
        'backend: "onnxruntime" version_policy { all { } }\n'
        "instance_group [ { kind: KIND_AUTO }, { count: 3 kind: KIND_CPU } ]"
    )
    config = read_config(write(tmp_path, text, "m"), "m")
    assert config.version_policy.select([1, 2]) == [1, 2]
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, "cpu"), (3, "cpu")]
    latest = read_config(
        write(tmp_path, 'backend: "onnxruntime" version_policy { latest { num_versions: 2 } }'),
        "simple",
    )
    assert latest.version_policy.select([1, 2, 3]) == [2, 3]


def test_config_yaml_wins_over_config_pbtxt(tmp_path: Path) -> None:
    path = write(tmp_path, 'backend: "onnxruntime"', "m")
    assert find_config(path.parent) == path
    (path.parent / "config.yaml").write_text("runtime: sklearn\n")
    assert find_config(path.parent) == path.parent / "config.yaml"
    assert find_config(tmp_path) is None


def test_triton_view_gives_back_the_pbtxt_fields(tmp_path: Path) -> None:
    config = read_config(write(tmp_path, FULL), "simple")
    document = config_document(triton_config("simple", config, None), config)
    assert document["name"] == "simple"
    assert document["platform"] == "onnxruntime_onnx"
    assert document["backend"] == "onnxruntime"
    assert document["max_batch_size"] == 8
    assert document["default_model_filename"] == "simple.onnx"
    assert [(t["name"], t["data_type"], t["dims"]) for t in document["input"]] == [
        ("INPUT0", "TYPE_INT32", [16]),
        ("INPUT1", "TYPE_STRING", [-1]),
    ]
    assert [(t["name"], t["data_type"], t["dims"]) for t in document["output"]] == [
        ("OUTPUT0", "TYPE_FP32", [16])
    ]
    batching = document["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == 1500
    assert batching["preferred_batch_size"] == [4, 8]
    assert batching["priority_levels"] == 3
    assert batching["default_priority_level"] == 2
    assert batching["default_queue_policy"]["max_queue_size"] == 10
    assert batching["default_queue_policy"]["default_timeout_microseconds"] == 5000
    group = document["instance_group"][0]
    assert (group["count"], group["kind"], group["gpus"]) == (2, "KIND_GPU", [1])
    assert document["version_policy"] == {"specific": {"versions": [1, 3]}}
    assert document["parameters"]["intra_op_num_threads"] == {"string_value": "2"}
    own = document["inferbridge"]
    assert own["runtime"] == "onnx" and own["max_batch_size"] == 8
    assert "optimization" in own["ignored_triton_fields"]


def test_triton_view_of_a_config_yaml_model(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "runtime: sklearn\nparameters: {steps: [{a: 1}]}\n"
        "inputs: [{name: x, datatype: FP64, shape: [3]}]\n"
    )
    config = read_config(tmp_path / "config.yaml", "iris")
    document = config_document(triton_config("iris", config, None), config)
    assert (document["platform"], document["backend"]) == ("sklearn", "sklearn")
    assert document["max_batch_size"] == 0
    assert document["input"][0]["dims"] == [3]
    assert document["version_policy"] == {"latest": {"num_versions": 1}}
    assert document["instance_group"][0]["kind"] == "KIND_CPU"
    assert orjson.loads(document["parameters"]["steps"]["string_value"]) == [{"a": 1}]
    assert "ignored_triton_fields" not in document["inferbridge"]


def test_load_config_parameter_in_triton_json_shape() -> None:
    triton = {
        "backend": "onnxruntime",
        "max_batch_size": 8,
        "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]}],
        "dynamic_batching": {"max_queue_delay_microseconds": "200"},
    }
    request = parse_load_parameters(
        {"config": orjson.dumps(triton).decode()}, base64_files=True, model="simple"
    )
    assert request.config is not None
    assert request.config.runtime == "onnx"
    assert request.config.inputs[0].shape == [-1, 16]
    assert request.config.dynamic_batching is not None
    assert request.config.dynamic_batching.max_queue_delay_ms == 0.2
    # Shared keys only, no runtime: Triton's shape too.
    shared = parse_load_parameters(
        {"config": '{"platform": "onnxruntime_onnx", "max_batch_size": 2}'}, base64_files=True
    )
    assert shared.config is not None and shared.config.runtime == "onnx"
    ours = parse_load_parameters(
        {"config": '{"runtime": "onnx", "max_batch_size": 2}'}, base64_files=True
    )
    assert ours.config is not None and ours.config.max_batch_size == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"backend": "onnxruntime", "input": [{"nme": "x"}]}', "nme"),
        ('{"backend": "python"}', "parameter 'config': model 'm': 'python' is not served"),
        ('{"name": "other", "backend": "onnxruntime"}', "field 'name'"),
        ('{"runtime": "onnx", "inputs": [], "input": []}', "mixes inferbridge fields (inputs)"),
        ('{"runtime": "onnx", "bogus": 1}', "field 'bogus'"),
    ],
)
def test_bad_config_parameters_name_the_field(config: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_load_parameters({"config": config}, base64_files=True, model="m")
    assert message in caught.value.message


def test_a_config_pbtxt_file_parameter_is_refused() -> None:
    with pytest.raises(InvalidInput, match="send the model config as the 'config' parameter"):
        parse_load_parameters(
            {"config": '{"runtime": "onnx"}', "file:config.pbtxt": "AA=="}, base64_files=True
        )
