"""A kube-scheduler extender: `filter` and `prioritize` over HTTP, scored by our policies.

The wire format is `k8s.io/kube-scheduler/extender/v1` as kube-scheduler encodes it: Go
structs without JSON tags, so the keys are the field names (`Pod`, `Nodes`, `NodeNames`;
`Nodes`, `NodeNames`, `FailedNodes`, `FailedAndUnresolvableNodes`, `Error`; `Host`,
`Score`). Decoding in Go is case-insensitive, so lower-case keys are accepted too.
Prioritize scores are 0-10 (`MaxExtenderPriority`), the best node 10.

POST <prefix>/filter and <prefix>/prioritize; GET /healthz. A malformed payload is
answered 400 with `{"Error": "..."}` naming the field.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from inferbridge.placement.kube import node_from_object, request_from_pod
from inferbridge.placement.model import Node, PlacementInputError
from inferbridge.placement.placer import Placer

__all__ = ["MAX_EXTENDER_PRIORITY", "Extender", "ExtenderServer"]

MAX_EXTENDER_PRIORITY = 10
MAX_BODY = 64 * 2**20
UNRESOLVABLE = {"node-selector", "taints", "gpu-type"}
REASONS = {
    "node-selector": "node(s) didn't match Pod's node selector",
    "taints": "node(s) had untolerated taint",
    "anti-affinity": "node(s) already host a replica of the deployment",
    "gpu-type": "node(s) didn't have an allowed GPU type",
    "cpu": "Insufficient cpu",
    "memory": "Insufficient memory",
    "gpu": "Insufficient GPU (no GPU with the asked free share)",
}


def _field(body: Mapping[str, Any], name: str) -> Any:
    for key, value in body.items():
        if key.lower() == name.lower():
            return value
    return None


class Extender:
    """Answers extender calls; `nodes` is the node cache for `nodeCacheCapable: true`."""

    def __init__(self, placer: Placer, nodes: Sequence[Node] = ()) -> None:
        self.placer = placer
        self.cache = {node.name: node for node in nodes}

    def _inputs(self, args: object) -> tuple[Any, list[Node], list[Any] | None]:
        if not isinstance(args, Mapping):
            raise PlacementInputError("ExtenderArgs: must be a JSON object")
        request = request_from_pod(_field(args, "Pod"), "ExtenderArgs.Pod")
        node_list = _field(args, "Nodes")
        names = _field(args, "NodeNames")
        if node_list is not None:
            if not isinstance(node_list, Mapping):
                raise PlacementInputError("ExtenderArgs.Nodes: must be a NodeList object")
            items = node_list.get("items") or []
            if not isinstance(items, list):
                raise PlacementInputError("ExtenderArgs.Nodes.items: must be a list")
            nodes = [
                node_from_object(item, f"ExtenderArgs.Nodes.items[{i}]")
                for i, item in enumerate(items)
            ]
            return request, nodes, items
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise PlacementInputError("ExtenderArgs.NodeNames: must be a list of strings")
            unknown = [n for n in names if n not in self.cache]
            if unknown:
                raise PlacementInputError(
                    f"ExtenderArgs.NodeNames: node {unknown[0]!r} is not in the extender's "
                    "node cache (start it with --nodes, or set nodeCacheCapable: false)"
                )
            return request, [self.cache[n] for n in names], None
        raise PlacementInputError("ExtenderArgs: neither Nodes nor NodeNames is given")

    def filter(self, args: object) -> dict[str, Any]:
        """An ExtenderFilterResult."""
        request, nodes, items = self._inputs(args)
        if not nodes:
            return {
                "NodeNames": [],
                "FailedNodes": {},
                "FailedAndUnresolvableNodes": {},
                "Error": "",
            }
        session = self.placer.session(nodes)
        failures = session.first_failures(request)
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        passed = []
        for index, (node, reason) in enumerate(zip(nodes, failures, strict=True)):
            if reason is None:
                passed.append(index)
            elif reason in UNRESOLVABLE:
                unresolvable[node.name] = REASONS[reason]
            else:
                failed[node.name] = REASONS[reason]
        result: dict[str, Any] = {
            "FailedNodes": failed,
            "FailedAndUnresolvableNodes": unresolvable,
            "Error": "",
        }
        if items is not None:
            result["Nodes"] = {
                "kind": "NodeList",
                "apiVersion": "v1",
                "metadata": {},
                "items": [items[i] for i in passed],
            }
        else:
            result["NodeNames"] = [nodes[i].name for i in passed]
        return result

    def prioritize(self, args: object) -> list[dict[str, Any]]:
        """A HostPriorityList: 0-10 per node, the policy's best node(s) 10."""
        request, nodes, _ = self._inputs(args)
        if not nodes:
            return []
        scores = self.placer.session(nodes).scores(request)
        if scores:
            low, high = min(scores.values()), max(scores.values())
        out = []
        for node in nodes:
            value = scores.get(node.name)
            if value is None:
                score = 0
            elif high == low:
                score = MAX_EXTENDER_PRIORITY
            else:
                score = round(MAX_EXTENDER_PRIORITY * (value - low) / (high - low))
            out.append({"Host": node.name, "Score": score})
        return out


class _Handler(BaseHTTPRequestHandler):
    server: ExtenderServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # access logs would flood kube-scheduler's hot path; errors are in the answers

    def _send(self, status: HTTPStatus, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("healthz"):
            self._send(HTTPStatus.OK, {"status": "ok"})
        else:
            self._send(HTTPStatus.NOT_FOUND, {"Error": f"no route {self.path}"})

    def do_POST(self) -> None:
        verb = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        if verb not in ("filter", "prioritize"):
            self._send(HTTPStatus.NOT_FOUND, {"Error": f"no route {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._send(
                HTTPStatus.BAD_REQUEST, {"Error": "a JSON body with Content-Length is required"}
            )
            return
        try:
            args = json.loads(self.rfile.read(length))
        except ValueError as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"Error": f"ExtenderArgs: not JSON: {exc}"})
            return
        extender = self.server.extender
        try:
            with self.server.lock:
                result: object = (
                    extender.filter(args) if verb == "filter" else extender.prioritize(args)
                )
        except PlacementInputError as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"Error": exc.message})
            return
        self._send(HTTPStatus.OK, result)


class ExtenderServer(ThreadingHTTPServer):
    """The extender on `host:port` (port 0: any free port; see `server_address`)."""

    daemon_threads = True

    def __init__(self, extender: Extender, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.extender = extender
        self.lock = threading.Lock()  # numpy work is not worth interleaving; calls are short

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"
