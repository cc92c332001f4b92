"""Kubernetes objects (as decoded JSON) to placement nodes and requests.

GPU conventions, those of Alibaba's GPU-sharing scheduler as used by the FGD paper's
simulator (open-gpu-share):

- pod annotations `alibabacloud.com/gpu-milli` (share of each GPU, 1-1000),
  `alibabacloud.com/gpu-count` (number of GPUs) and `alibabacloud.com/gpu-card-model`
  (allowed GPU types, `|`-separated); whole GPUs may instead be asked the device-plugin way,
  `nvidia.com/gpu` in a container's requests or limits;
- node label `alibabacloud.com/gpu-card-model` (GPU type), allocatable
  `alibabacloud.com/gpu-count` (or `nvidia.com/gpu`), and the simulator's node annotation
  `simon/node-gpu-share` (JSON, `DevsBrief` per device with `GpuUsedMilli`) for GPUs in use;
- node annotations `inferbridge.io/cpu-free-milli` and `inferbridge.io/memory-free-mib`
  give free CPU and memory when something maintains them (kube-scheduler's extender call
  carries nodes, not their pods); otherwise the allocatable amounts are taken as free.

Every malformed field raises `PlacementInputError` naming its path, e.g.
`Pod.spec.containers[0].resources.requests.cpu`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from inferbridge.placement.model import MILLI, Node, PlacementInputError, Request, Taint, Toleration

__all__ = [
    "ANNOTATION_CPU_FREE",
    "ANNOTATION_GPU_COUNT",
    "ANNOTATION_GPU_MILLI",
    "ANNOTATION_GPU_MODEL",
    "ANNOTATION_MEMORY_FREE",
    "ANNOTATION_NODE_GPU_SHARE",
    "node_from_object",
    "parse_quantity",
    "request_from_pod",
]

ANNOTATION_GPU_MILLI = "alibabacloud.com/gpu-milli"
ANNOTATION_GPU_COUNT = "alibabacloud.com/gpu-count"
ANNOTATION_GPU_MODEL = "alibabacloud.com/gpu-card-model"
ANNOTATION_NODE_GPU_SHARE = "simon/node-gpu-share"
ANNOTATION_CPU_FREE = "inferbridge.io/cpu-free-milli"
ANNOTATION_MEMORY_FREE = "inferbridge.io/memory-free-mib"
DEVICE_PLUGIN_GPU = "nvidia.com/gpu"

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SUFFIX = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def parse_quantity(value: object, where: str) -> float:
    """A Kubernetes resource quantity (`500m`, `2`, `16Gi`) as a plain number."""
    if isinstance(value, bool):
        raise PlacementInputError(f"{where}: not a quantity: {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _QUANTITY.match(value.strip())
        if not match:
            raise PlacementInputError(f"{where}: not a quantity: {value!r}")
        try:
            number = float(match.group(1)) * _SUFFIX[match.group(2)]
        except ValueError:
            raise PlacementInputError(f"{where}: not a quantity: {value!r}") from None
    else:
        raise PlacementInputError(f"{where}: not a quantity: {value!r}")
    if number < 0:
        raise PlacementInputError(f"{where}: must not be negative: {value!r}")
    return number


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PlacementInputError(f"{where}: must be an object")
    return value


def _str_map(value: object, where: str) -> dict[str, str]:
    out = {}
    for key, item in _mapping(value, where).items():
        if not isinstance(item, str):
            raise PlacementInputError(f"{where}.{key}: must be a string")
        out[str(key)] = item
    return out


def _int_annotation(annotations: Mapping[str, str], key: str, where: str) -> int | None:
    if key not in annotations:
        return None
    text = annotations[key]
    try:
        value = int(parse_quantity(text, f"{where}.annotations[{key}]"))
    except PlacementInputError:
        raise PlacementInputError(
            f"{where}.annotations[{key}]: must be a non-negative integer, got {text!r}"
        ) from None
    return value


def _name(metadata: Mapping[str, Any], where: str) -> str:
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise PlacementInputError(f"{where}.name: required")
    return name


def request_from_pod(pod: object, where: str = "Pod") -> Request:
    """The placement request of a Pod object."""
    body = _mapping(pod, where)
    if not body:
        raise PlacementInputError(f"{where}: required")
    metadata = _mapping(body.get("metadata"), f"{where}.metadata")
    name = _name(metadata, f"{where}.metadata")
    namespace = metadata.get("namespace") or "default"
    annotations = _str_map(metadata.get("annotations"), f"{where}.metadata.annotations")
    spec = _mapping(body.get("spec"), f"{where}.spec")
    containers = spec.get("containers") or []
    if not isinstance(containers, list):
        raise PlacementInputError(f"{where}.spec.containers: must be a list")
    cpu = memory = 0.0
    plugin_gpus = 0
    for index, container in enumerate(containers):
        at = f"{where}.spec.containers[{index}].resources"
        resources = _mapping(_mapping(container, at[:-10]).get("resources"), at)
        requests = _mapping(resources.get("requests"), f"{at}.requests")
        limits = _mapping(resources.get("limits"), f"{at}.limits")
        # Kubernetes defaults a missing request to the limit.
        merged = {**limits, **requests}
        if "cpu" in merged:
            cpu += parse_quantity(merged["cpu"], f"{at}.requests.cpu")
        if "memory" in merged:
            memory += parse_quantity(merged["memory"], f"{at}.requests.memory")
        if DEVICE_PLUGIN_GPU in merged:
            count = parse_quantity(merged[DEVICE_PLUGIN_GPU], f"{at}.requests[{DEVICE_PLUGIN_GPU}]")
            plugin_gpus += int(count)
    meta_at = f"{where}.metadata"
    gpu_milli = _int_annotation(annotations, ANNOTATION_GPU_MILLI, meta_at)
    gpu_count = _int_annotation(annotations, ANNOTATION_GPU_COUNT, meta_at)
    if gpu_milli is not None or gpu_count is not None:
        gpus = 1 if gpu_count is None else gpu_count
        milli = MILLI if gpu_milli is None else min(gpu_milli, MILLI)
        if gpus == 0 or milli == 0:
            gpus, milli = 0, 0
    else:
        gpus, milli = plugin_gpus, MILLI if plugin_gpus else 0
    model = annotations.get(ANNOTATION_GPU_MODEL, "")
    types = tuple(t for t in model.split("|") if t) if gpus else ()
    tolerations = tuple(
        _toleration(item, f"{where}.spec.tolerations[{i}]")
        for i, item in enumerate(spec.get("tolerations") or [])
    )
    try:
        return Request(
            name=f"{namespace}/{name}",
            cpu_milli=round(cpu * 1000),
            memory_mib=int(-(-memory // 2**20)),
            gpus=gpus,
            gpu_milli=milli,
            gpu_types=types,
            node_selector=_str_map(spec.get("nodeSelector"), f"{where}.spec.nodeSelector"),
            tolerations=tolerations,
        )
    except PlacementInputError as exc:
        raise PlacementInputError(f"{where}: {exc.message}") from None


def _toleration(item: object, where: str) -> Toleration:
    body = _mapping(item, where)
    operator = body.get("operator") or "Equal"
    if operator not in ("Equal", "Exists"):
        raise PlacementInputError(f"{where}.operator: must be Equal or Exists, got {operator!r}")
    return Toleration(
        key=str(body.get("key") or ""),
        operator="Exists" if operator == "Exists" else "Equal",
        value=str(body.get("value") or ""),
        effect=str(body.get("effect") or ""),
    )


def node_from_object(node: object, where: str = "Node") -> Node:
    """The placement node of a Node object."""
    body = _mapping(node, where)
    metadata = _mapping(body.get("metadata"), f"{where}.metadata")
    name = _name(metadata, f"{where}.metadata")
    labels = _str_map(metadata.get("labels"), f"{where}.metadata.labels")
    annotations = _str_map(metadata.get("annotations"), f"{where}.metadata.annotations")
    status = _mapping(body.get("status"), f"{where}.status")
    allocatable = _mapping(status.get("allocatable"), f"{where}.status.allocatable")
    at = f"{where}.status.allocatable"
    cpu = round(parse_quantity(allocatable.get("cpu", 0), f"{at}.cpu") * 1000)
    memory = int(parse_quantity(allocatable.get("memory", 0), f"{at}.memory") // 2**20)
    gpu_text = allocatable.get(ANNOTATION_GPU_COUNT, allocatable.get(DEVICE_PLUGIN_GPU, 0))
    gpus = int(parse_quantity(gpu_text, f"{at}[gpu-count]"))
    gpu_type = labels.get(ANNOTATION_GPU_MODEL, "") or ("gpu" if gpus else "")
    spec = _mapping(body.get("spec"), f"{where}.spec")
    taints = [
        _taint(item, f"{where}.spec.taints[{i}]") for i, item in enumerate(spec.get("taints") or [])
    ]
    if spec.get("unschedulable"):
        taints.append(Taint("node.kubernetes.io/unschedulable", "", "NoSchedule"))
    meta_at = f"{where}.metadata"
    cpu_free = _int_annotation(annotations, ANNOTATION_CPU_FREE, meta_at)
    memory_free = _int_annotation(annotations, ANNOTATION_MEMORY_FREE, meta_at)
    gpu_free = _gpu_free(annotations, gpus, meta_at)
    try:
        return Node(
            name=name,
            cpu_milli=cpu,
            memory_mib=memory,
            gpus=gpus,
            gpu_type=gpu_type if gpus else "",
            labels=labels,
            taints=tuple(taints),
            gpu_free=gpu_free,
            cpu_free_milli=None if cpu_free is None else min(cpu_free, cpu),
            memory_free_mib=None if memory_free is None else min(memory_free, memory),
        )
    except PlacementInputError as exc:
        raise PlacementInputError(f"{where}: {exc.message}") from None


def _taint(item: object, where: str) -> Taint:
    body = _mapping(item, where)
    key = body.get("key")
    effect = body.get("effect") or "NoSchedule"
    if not isinstance(key, str) or not key:
        raise PlacementInputError(f"{where}.key: required")
    if effect not in ("NoSchedule", "NoExecute", "PreferNoSchedule"):
        raise PlacementInputError(f"{where}.effect: unknown effect {effect!r}")
    value = str(body.get("value") or "")
    if effect == "NoExecute":
        return Taint(key, value, "NoExecute")
    return Taint(key, value, "PreferNoSchedule" if effect == "PreferNoSchedule" else "NoSchedule")


def _gpu_free(annotations: Mapping[str, str], gpus: int, where: str) -> tuple[int, ...] | None:
    text = annotations.get(ANNOTATION_NODE_GPU_SHARE)
    if not text or not gpus:
        return None
    at = f"{where}.annotations[{ANNOTATION_NODE_GPU_SHARE}]"
    try:
        info = json.loads(text)
    except ValueError:
        raise PlacementInputError(f"{at}: not JSON") from None
    devices = _mapping(_mapping(info, at).get("DevsBrief"), f"{at}.DevsBrief")
    free = [MILLI] * gpus
    for key, device in devices.items():
        body = _mapping(device, f"{at}.DevsBrief[{key}]")
        index, used = body.get("Idx", key), body.get("GpuUsedMilli", 0)
        try:
            index, used = int(index), int(used)
        except (TypeError, ValueError):
            raise PlacementInputError(
                f"{at}.DevsBrief[{key}]: Idx and GpuUsedMilli must be integers"
            ) from None
        if not 0 <= index < gpus or not 0 <= used <= MILLI:
            raise PlacementInputError(
                f"{at}.DevsBrief[{key}]: device {index} of {gpus} with {used} milli used"
            )
        free[index] = MILLI - used
    return tuple(free)
