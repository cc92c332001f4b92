"""Any served model as Triton's ModelConfig message (`model_config.proto`), for
`GET /v2/models/{m}/config` and gRPC `ModelConfig`, filled from our config and the loaded
version's tensors. Our own fields travel beside it in the REST JSON under `inferbridge`.

`model_config_pb2` is imported inside the functions (see `inferbridge.repository.triton`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from inferbridge.repository.config import ModelConfig

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from inferbridge.protocol.generated.model_config_pb2 import ModelConfig as TritonConfig
    from inferbridge.repository.repository import LoadedVersion

__all__ = ["OWN_FIELDS_KEY", "config_document", "triton_config"]

OWN_FIELDS_KEY = "inferbridge"
"""The key of the REST config document that holds our own config (config.yaml's schema)."""

#: Our runtime -> (Triton platform, Triton backend); other runtimes use their own name.
_TRITON_NAMES = {
    "onnx": ("onnxruntime_onnx", "onnxruntime"),
    "torchscript": ("pytorch_libtorch", "pytorch"),
    "tensorflow": ("tensorflow_savedmodel", "tensorflow"),
}

_TYPES = {"BYTES": "TYPE_STRING"}


def triton_config(name: str, config: ModelConfig, loaded: LoadedVersion | None) -> TritonConfig:
    """A model_config_pb2.ModelConfig describing `name` as served: tensors from the loaded
    version when there is one (dims without the batch dimension when max_batch_size > 0)."""
    from inferbridge.protocol.generated import model_config_pb2 as mc

    platform, backend = _TRITON_NAMES.get(config.runtime, (config.runtime, config.runtime))
    platform = config.platform or platform  # as model metadata reports it
    message = mc.ModelConfig(
        name=name,
        platform=platform,
        backend=backend,
        max_batch_size=config.max_batch_size,
    )
    model_file = config.model_file
    if model_file is None and loaded is not None and loaded.runtime is not None:
        model_file = loaded.runtime.default_model_file
    if model_file:
        message.default_model_filename = model_file
    inputs = loaded.inputs if loaded is not None and loaded.inputs else config.input_specs()
    outputs = loaded.outputs if loaded is not None and loaded.outputs else config.output_specs()
    batched = config.max_batch_size > 0
    for spec in inputs:
        message.input.add(
            name=spec.name, data_type=_type(spec.datatype), dims=_dims(spec.shape, batched)
        )
    for spec in outputs:
        message.output.add(
            name=spec.name, data_type=_type(spec.datatype), dims=_dims(spec.shape, batched)
        )
    policy = config.version_policy
    if policy.all is not None:
        message.version_policy.all.SetInParent()
    elif policy.specific is not None:
        message.version_policy.specific.versions.extend(policy.specific.versions)
    else:
        count = policy.latest.num_versions if policy.latest is not None else 1
        message.version_policy.latest.num_versions = count
    batching = config.dynamic_batching
    if batching is not None:
        dynamic = message.dynamic_batching
        dynamic.preferred_batch_size.extend(batching.preferred_batch_sizes)
        dynamic.max_queue_delay_microseconds = round(batching.max_queue_delay_ms * 1000)
        dynamic.priority_levels = batching.priority_levels
        dynamic.default_priority_level = batching.default_priority_level
        dynamic.default_queue_policy.max_queue_size = batching.max_queue_size
        dynamic.default_queue_policy.default_timeout_microseconds = round(
            batching.default_timeout_ms * 1000
        )
    kinds = mc.ModelInstanceGroup.Kind
    for index, group in enumerate(config.instance_group):
        message.instance_group.add(
            name=f"{name}_{index}",
            count=group.count,
            kind=kinds.Value("KIND_GPU" if group.kind == "gpu" else "KIND_CPU"),
            gpus=group.gpus,
        )
    for key, value in config.parameters.items():
        text = value if isinstance(value, str) else json.dumps(value)
        message.parameters[key].string_value = text
    return message


def config_document(message: Message, config: ModelConfig) -> dict[str, Any]:
    """Triton's ModelConfig JSON (proto field names, every field, int64s as numbers as
    Triton writes them) plus our config under OWN_FIELDS_KEY."""
    from google.protobuf import json_format

    document = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    _numbers(message, document)
    own = config.model_dump(mode="json")
    if config.ignored_fields:
        own["ignored_triton_fields"] = list(config.ignored_fields)
    document[OWN_FIELDS_KEY] = own
    return document


_INT64_TYPES = frozenset({3, 4, 6, 16, 18})  # INT64, UINT64, FIXED64, SFIXED64, SINT64


def _numbers(message: Any, document: dict[str, Any]) -> None:
    """protobuf's JSON writes 64-bit integers as strings; Triton's config JSON has numbers."""
    for field in message.DESCRIPTOR.fields:
        if field.name not in document:
            continue
        value = document[field.name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                for key, item in getattr(message, field.name).items():
                    _numbers(item, value[str(key)])
            continue
        if field.message_type is not None:
            if field.is_repeated:
                for item, sub in zip(getattr(message, field.name), value, strict=True):
                    _numbers(item, sub)
            else:
                _numbers(getattr(message, field.name), value)
        elif field.type in _INT64_TYPES:
            document[field.name] = (
                [int(v) for v in value] if isinstance(value, list) else int(value)
            )


def _type(datatype: str) -> int:
    from inferbridge.protocol.generated import model_config_pb2 as mc

    return mc.DataType.Value(_TYPES.get(datatype, f"TYPE_{datatype}"))


def _dims(shape: tuple[int, ...], batched: bool) -> list[int]:
    return list(shape[1:] if batched and shape else shape)
