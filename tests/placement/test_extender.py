"""The kube-scheduler extender over real HTTP, with payloads in kube-scheduler's wire format
(k8s.io/kube-scheduler/extender/v1 as Go encodes it: field names as keys, full objects)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from inferbridge.placement import Node, Placer
from inferbridge.placement.extender import Extender, ExtenderServer
from inferbridge.placement.kube import node_from_object, request_from_pod
from inferbridge.placement.state import Shape


def kube_node(
    name: str,
    gpus: int,
    model: str,
    cpu: str = "64",
    used: dict[int, int] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    annotations = {"node.alpha.kubernetes.io/ttl": "0"}
    if used:
        annotations["simon/node-gpu-share"] = json.dumps(
            {
                "DevsBrief": {
                    str(i): {"Idx": i, "GpuUsedMilli": m, "PodList": ["ns/p"]}
                    for i, m in used.items()
                },
                "GpuCount": gpus,
                "GpuModel": model,
                "GpuUsedMilli": sum(used.values()),
                "NumPods": 1,
            }
        )
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "4711",
            "creationTimestamp": "2026-11-30T10:00:00Z",
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "alibabacloud.com/gpu-card-model": model,
            },
            "annotations": annotations,
        },
        "spec": {"podCIDR": "10.244.1.0/24", "taints": taints or []},
        "status": {
            "capacity": {
                "cpu": cpu,
                "memory": "263856424Ki",
                "pods": "110",
                "alibabacloud.com/gpu-count": str(gpus),
            },
            "allocatable": {
                "cpu": cpu,
                "memory": "263754024Ki",
                "pods": "110",
                "alibabacloud.com/gpu-count": str(gpus),
                "alibabacloud.com/gpu-milli": str(gpus * 1000),
            },
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {"kubeletVersion": "v1.29.4", "architecture": "amd64"},
        },
    }


def kube_pod(
    milli: int | None = 500,
    count: int | None = 1,
    model: str | None = None,
    cpu: str = "4",
    memory: str = "16Gi",
) -> dict[str, Any]:
    annotations: dict[str, str] = {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
    if milli is not None:
        annotations["alibabacloud.com/gpu-milli"] = str(milli)
    if count is not None:
        annotations["alibabacloud.com/gpu-count"] = str(count)
    if model:
        annotations["alibabacloud.com/gpu-card-model"] = model
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": "llm-7b-6d9f8c-x2kq",
            "generateName": "llm-7b-6d9f8c-",
            "namespace": "serving",
            "uid": "0b7c4c1e-6f0e-4a51-9d55-3f6e2b1a9c11",
            "labels": {"app": "llm-7b", "pod-template-hash": "6d9f8c"},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "llm-7b-6d9f8c",
                    "uid": "f1",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "schedulerName": "default-scheduler",
            "containers": [
                {
                    "name": "server",
                    "image": "inferbridge:latest",
                    "resources": {
                        "requests": {"cpu": cpu, "memory": memory},
                        "limits": {"memory": memory},
                    },
                },
                {
                    "name": "sidecar",
                    "image": "envoy",
                    "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
                },
            ],
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "priority": 0,
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }


def nodes() -> list[dict[str, Any]]:
    return [
        kube_node("node-split", 4, "A10", used={0: 500}),
        kube_node("node-idle", 4, "A10"),
        kube_node("node-t4", 2, "T4"),
        kube_node(
            "node-tainted",
            8,
            "A10",
            taints=[{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}],
        ),
        kube_node("node-small", 1, "A10", cpu="2"),
    ]


@pytest.fixture(scope="module")
def server() -> Iterator[ExtenderServer]:
    cache = [
        Node("cached-1", 32000, 65536, 2, "T4"),
        Node("cached-2", 32000, 65536, 2, "T4", gpu_free=(300, 300)),
    ]
    # The arrival distribution FGD expects: half-GPU shares and whole GPUs.
    workload = [Shape(4000, 0, 1, 500), Shape(8000, 0, 1, 1000)]
    srv = ExtenderServer(Extender(Placer("fgd", workload), cache), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def call(server: ExtenderServer, verb: str, body: object) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{server.url}/scheduler/{verb}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_objects_translate_with_the_gpushare_conventions() -> None:
    request = request_from_pod(kube_pod(milli=500, count=1, model="A10|V100M32"))
    assert (request.name, request.cpu_milli, request.memory_mib) == (
        "serving/llm-7b-6d9f8c-x2kq",
        4500,
        16640,
    )
    assert (request.gpus, request.gpu_milli, request.gpu_types) == (1, 500, ("A10", "V100M32"))
    node = node_from_object(nodes()[0])
    assert (node.cpu_milli, node.gpus, node.gpu_type, node.gpu_free) == (
        64000,
        4,
        "A10",
        (500, 1000, 1000, 1000),
    )
    plugin = kube_pod(milli=None, count=None)
    plugin["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "2"
    assert (request_from_pod(plugin).gpus, request_from_pod(plugin).gpu_milli) == (2, 1000)


def test_filter_with_full_node_objects(server: ExtenderServer) -> None:
    status, result = call(
        server,
        "filter",
        {"Pod": kube_pod(model="A10"), "Nodes": {"items": nodes()}, "NodeNames": None},
    )
    assert status == 200
    assert result["Error"] == ""
    assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["node-split", "node-idle"]
    assert result["Nodes"]["items"][0] == nodes()[0]  # passed through untouched
    assert result["FailedAndUnresolvableNodes"] == {
        "node-t4": "node(s) didn't have an allowed GPU type",
        "node-tainted": "node(s) had untolerated taint",
    }
    assert result["FailedNodes"] == {"node-small": "Insufficient cpu"}


def test_prioritize_prefers_the_split_gpu(server: ExtenderServer) -> None:
    args = {"Pod": kube_pod(milli=500), "Nodes": {"items": nodes()[:2]}}
    status, result = call(server, "prioritize", args)
    assert status == 200
    assert result == [{"Host": "node-split", "Score": 10}, {"Host": "node-idle", "Score": 0}]


def test_node_cache_mode_with_node_names(server: ExtenderServer) -> None:
    status, result = call(
        server, "filter", {"Pod": kube_pod(milli=800), "NodeNames": ["cached-1", "cached-2"]}
    )
    assert status == 200
    assert result["NodeNames"] == ["cached-1"]
    assert result["FailedNodes"] == {
        "cached-2": "Insufficient GPU (no GPU with the asked free share)"
    }
    status, scores = call(
        server, "prioritize", {"pod": kube_pod(milli=300), "nodenames": ["cached-1", "cached-2"]}
    )
    assert status == 200
    assert scores[1] == {"Host": "cached-2", "Score": 10}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "ExtenderArgs: not JSON"),
        ({"Nodes": {"items": []}}, "ExtenderArgs.Pod: required"),
        (
            {"Pod": kube_pod(), "NodeNames": ["ghost"]},
            "node 'ghost' is not in the extender's node cache",
        ),
        ({"Pod": kube_pod()}, "neither Nodes nor NodeNames"),
        (
            {"Pod": kube_pod(cpu="four"), "Nodes": {"items": nodes()}},
            r"ExtenderArgs.Pod.spec.containers\[0\].resources.requests.cpu: not a quantity: 'four'",
        ),
        (
            {
                "Pod": kube_pod(milli=None, count=None)
                | {"metadata": {"name": "p", "annotations": {"alibabacloud.com/gpu-milli": "x"}}},
                "Nodes": {"items": nodes()},
            },
            r"annotations\[alibabacloud.com/gpu-milli\]: must be a non-negative integer",
        ),
        (
            {"Pod": kube_pod(), "Nodes": {"items": [{"metadata": {}}]}},
            r"ExtenderArgs.Nodes.items\[0\].metadata.name: required",
        ),
    ],
)
def test_malformed_payloads_are_400_naming_the_field(
    server: ExtenderServer, body: object, message: str
) -> None:
    status, result = call(server, "filter", body)
    assert status == 400
    assert pytest.importorskip("re").search(message, result["Error"]), result["Error"]


def test_health_and_unknown_routes(server: ExtenderServer) -> None:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=30) as answer:
        assert json.loads(answer.read()) == {"status": "ok"}
    status, _ = call(server, "bind", {})
    assert status == 404
