"""Triton's model configuration (`config.pbtxt`, or its JSON in a load request) mapped onto
ours. What maps is listed in TRITON_MAPPED; every other field that is set is reported by
name, once per distinct config, in one warning, and kept on the config (`ignored_fields`).

protobuf's generated `model_config_pb2` is imported inside the functions: tritonclient
registers a different `model_config.proto` in the same descriptor pool, and a process that
only reads config.yaml must not have to choose between them.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from inferbridge.errors import ConfigError
from inferbridge.repository.config import TRITON_CONFIG_FILE, ModelConfig

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = [
    "SUPPORTED_PLATFORMS",
    "TRITON_CONFIG_FILE",
    "from_triton",
    "load_pbtxt",
    "parse_triton_json",
]

logger = logging.getLogger(__name__)


#: Triton platform or backend -> (our runtime, Triton's platform name for metadata).
SUPPORTED_PLATFORMS: dict[str, tuple[str, str]] = {
    "onnxruntime_onnx": ("onnx", "onnxruntime_onnx"),
    "onnxruntime": ("onnx", "onnxruntime_onnx"),
    "pytorch_libtorch": ("torchscript", "pytorch_libtorch"),
    "pytorch": ("torchscript", "pytorch_libtorch"),
    "tensorflow_savedmodel": ("tensorflow", "tensorflow_savedmodel"),
    "tensorflow": ("tensorflow", "tensorflow_savedmodel"),
}

_REFUSED = {
    "python": (
        "Triton's Python backend runs the repository's model.py inside the server with no "
        "isolation, and inferbridge has no safe equivalent; port it to an inferbridge Runtime "
        "(config.yaml `runtime: package.module:Class`)"
    ),
    "tensorflow_graphdef": (
        "the tensorflow runtime loads SavedModel directories only; export the graph as a "
        "SavedModel (platform tensorflow_savedmodel)"
    ),
    "ensemble": "Triton ensembles are not served; an inferbridge pipeline (runtime: pipeline) "
    "chains models in the server",
}

# Triton's DataType enum names -> ours. TYPE_STRING carries bytes; BF16 has no datatype here.
_DATATYPES = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
}

_TENSOR: dict[str, Any] = {"name": None, "data_type": None, "dims": None}

#: The fields that map, as a tree: None is a leaf taken whole.
TRITON_MAPPED: dict[str, Any] = {
    "name": None,
    "platform": None,
    "backend": None,
    "max_batch_size": None,
    "input": _TENSOR,
    "output": _TENSOR,
    "default_model_filename": None,
    "parameters": None,
    "model_warmup": None,  # approximated: reported apart
    "version_policy": {
        "latest": {"num_versions": None},
        "all": None,
        "specific": {"versions": None},
    },
    "instance_group": {"count": None, "kind": None, "gpus": None},
    "dynamic_batching": {
        "preferred_batch_size": None,
        "max_queue_delay_microseconds": None,
        "priority_levels": None,
        "default_priority_level": None,
        "default_queue_policy": {"max_queue_size": None, "default_timeout_microseconds": None},
    },
}

_reported: set[str] = set()  # digests of configs whose ignored fields were logged already


def load_pbtxt(path: Path, model: str) -> ModelConfig:
    """Read a Triton `config.pbtxt` into our ModelConfig. Parse errors name the file, line
    and field; unsupported platforms and backends are refused naming the model."""
    from google.protobuf import text_format

    from inferbridge.protocol.generated import model_config_pb2

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    message = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        where = f"{path}:{line}:{column}" if line is not None else str(path)
        detail = str(exc).split(" : ", 1)[-1]
        raise ConfigError(f"{where}: not a Triton model config (config.pbtxt): {detail}") from None
    return from_triton(message, model, str(path), digest=text)


def parse_triton_json(document: dict[str, Any], model: str, where: str) -> ModelConfig:
    """A Triton ModelConfig in its JSON shape (a load request's `config`) into ours."""
    from google.protobuf import json_format

    from inferbridge.protocol.generated import model_config_pb2

    message = model_config_pb2.ModelConfig()
    try:
        json_format.ParseDict(document, message)
    except json_format.ParseError as exc:
        raise ConfigError(f"{where}: not a valid Triton model config: {exc}") from None
    return from_triton(message, model, where, digest=orjson.dumps(document).decode())


def from_triton(message: Message, model: str, where: str, *, digest: str = "") -> ModelConfig:
    """Map a model_config_pb2.ModelConfig onto ours; ConfigError names `where` and the field."""
    m: Any = message
    if m.name and model and m.name != model:
        raise ConfigError(f"{where}: field 'name': '{m.name}' is not the model's name '{model}'")
    model = model or m.name
    runtime, platform = _runtime(m, model, where)
    document: dict[str, Any] = {"runtime": runtime, "platform": platform}
    if m.default_model_filename:
        document["model_file"] = m.default_model_filename
    if m.max_batch_size < 0:
        raise ConfigError(f"{where}: field 'max_batch_size': must be >= 0")
    document["max_batch_size"] = m.max_batch_size
    batched = m.max_batch_size > 0
    document["inputs"] = [_tensor(t, batched, where, "input") for t in m.input]
    document["outputs"] = [_tensor(t, batched, where, "output") for t in m.output]
    if m.HasField("version_policy"):
        document["version_policy"] = _version_policy(m.version_policy)
    if m.HasField("dynamic_batching"):
        document["dynamic_batching"] = _dynamic_batching(m.dynamic_batching)
    approximated: list[str] = []
    if m.instance_group:
        document["instance_group"] = [_instance_group(g, approximated) for g in m.instance_group]
    if m.model_warmup:
        document["warmup"] = True
        approximated.append("model_warmup (as warmup: zeros of each preferred batch size)")
    if m.parameters:
        parameters = {k: _parameter(v.string_value) for k, v in m.parameters.items()}
        # Triton has no fields for these: parameters `trust_pickle` and `sha256:<file>`.
        if "trust_pickle" in parameters:
            document["trust_pickle"] = parameters.pop("trust_pickle")
        pins = {k: parameters.pop(k) for k in [k for k in parameters if k.startswith("sha256:")]}
        if pins:
            document["sha256"] = {k.removeprefix("sha256:"): str(v) for k, v in pins.items()}
        document["parameters"] = parameters
    try:
        config = ModelConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(root)'}': {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None
    ignored = ignored_fields(message)
    config._triton_ignored = tuple(ignored + approximated)
    _report(model, where, ignored, approximated, digest)
    return config


def ignored_fields(message: Message) -> list[str]:
    """The dotted names of every set field that TRITON_MAPPED does not cover, in order."""
    found: list[str] = []
    _walk(message, TRITON_MAPPED, "", found)
    return found


def _walk(message: Message, mapped: dict[str, Any], prefix: str, found: list[str]) -> None:
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.name not in mapped:
            if name not in found:
                found.append(name)
            continue
        below = mapped[field.name]
        if below is None or field.message_type is None:
            continue
        items = value if field.is_repeated else [value]
        for item in items:
            _walk(item, below, f"{name}.", found)


def _runtime(m: Any, model: str, where: str) -> tuple[str, str]:
    chosen = m.platform or m.backend
    if not chosen:
        raise ConfigError(
            f"{where}: model '{model}': set 'platform' or 'backend' "
            f"(supported: {', '.join(SUPPORTED_PLATFORMS)})"
        )
    for key in (m.platform, m.backend):
        if key in _REFUSED:
            raise ConfigError(f"{where}: model '{model}': '{key}' is not served: {_REFUSED[key]}")
    if m.platform and m.platform not in SUPPORTED_PLATFORMS:
        raise _unsupported(where, model, "platform", m.platform)
    if m.backend and m.backend not in SUPPORTED_PLATFORMS:
        raise _unsupported(where, model, "backend", m.backend)
    runtime, platform = SUPPORTED_PLATFORMS[chosen]
    if m.platform and m.backend and SUPPORTED_PLATFORMS[m.backend][0] != runtime:
        raise ConfigError(
            f"{where}: model '{model}': platform '{m.platform}' and backend '{m.backend}' disagree"
        )
    return runtime, platform


def _unsupported(where: str, model: str, field: str, value: str) -> ConfigError:
    return ConfigError(
        f"{where}: model '{model}': field '{field}': '{value}' is not supported; supported "
        f"platforms and backends: {', '.join(SUPPORTED_PLATFORMS)}"
    )


def _tensor(t: Any, batched: bool, where: str, kind: str) -> dict[str, Any]:
    from inferbridge.protocol.generated import model_config_pb2

    type_name = model_config_pb2.DataType.Name(t.data_type)
    datatype = _DATATYPES.get(type_name)
    if datatype is None:
        raise ConfigError(
            f"{where}: field '{kind}' '{t.name}': data_type {type_name} is not supported "
            f"(supported: {', '.join(_DATATYPES)})"
        )
    dims = [int(d) for d in t.dims]
    return {"name": t.name, "datatype": datatype, "shape": [-1, *dims] if batched else dims}


def _version_policy(policy: Any) -> dict[str, Any]:
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return {"all": {}}
    if which == "specific":
        return {"specific": {"versions": [int(v) for v in policy.specific.versions]}}
    if which == "latest":
        return {"latest": {"num_versions": policy.latest.num_versions or 1}}
    return {}


def _dynamic_batching(batching: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "max_queue_delay_ms": batching.max_queue_delay_microseconds / 1000,
        "preferred_batch_sizes": list(batching.preferred_batch_size),
        "default_priority_level": batching.default_priority_level,
        # A Triton model gets Triton's batcher: a batch waits out the delay for a
        # preferred size instead of leaving once arrivals go quiet.
        "hold_for_delay": True,
    }
    if batching.priority_levels:
        document["priority_levels"] = batching.priority_levels
    if batching.HasField("default_queue_policy"):
        policy = batching.default_queue_policy
        document["max_queue_size"] = policy.max_queue_size  # 0: unbounded, as in Triton
        document["default_timeout_ms"] = policy.default_timeout_microseconds / 1000
    return document


def _instance_group(group: Any, approximated: list[str]) -> dict[str, Any]:
    from inferbridge.protocol.generated import model_config_pb2

    kinds = model_config_pb2.ModelInstanceGroup.Kind
    gpus = [int(g) for g in group.gpus]
    if group.kind == kinds.Value("KIND_GPU"):
        kind = "gpu"
    elif group.kind == kinds.Value("KIND_CPU"):
        kind = "cpu"
    else:  # KIND_AUTO (the default) and KIND_MODEL: GPU when GPUs are named, else CPU
        kind = "gpu" if gpus else "cpu"
        note = f"instance_group.kind {kinds.Name(group.kind)} (as KIND_{kind.upper()})"
        if group.kind != kinds.Value("KIND_AUTO") and note not in approximated:
            approximated.append(note)
    return {"count": group.count or 1, "kind": kind, "gpus": gpus}


def _parameter(text: str) -> Any:
    """A Triton parameter is text; numbers and booleans become values, the rest stays text."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, (bool, int, float)) else text


def _report(
    model: str, where: str, ignored: list[str], approximated: list[str], digest: str
) -> None:
    if not ignored and not approximated:
        return
    key = hashlib.sha256(f"{where}\0{digest}".encode()).hexdigest()
    if key in _reported:
        return  # poll mode re-reads configs; one warning per distinct config is enough
    _reported.add(key)
    parts = []
    if ignored:
        parts.append(f"ignored (not supported): {', '.join(ignored)}")
    if approximated:
        parts.append(f"approximated: {', '.join(approximated)}")
    logger.warning("model '%s' (%s): Triton config fields %s", model, where, "; ".join(parts))
