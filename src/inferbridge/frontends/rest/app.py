"""The REST front end: a raw ASGI application, thin over the dataplane.

Raw ASGI rather than a framework: on small models the HTTP layer is most of the cost of a
request, and a routing framework's per-request overhead is larger than the model call.
"""

from __future__ import annotations

import functools
import logging
import math
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.errors import (
    CallerGoneError,
    InferBridgeError,
    InvalidInput,
    PayloadTooLarge,
    QueueFull,
)
from inferbridge.frontends import compat
from inferbridge.frontends.rest import extensions, generate
from inferbridge.frontends.rest.errors import http_status
from inferbridge.frontends.rest.index import index_ready_only
from inferbridge.protocol.rest_codec import (
    decode_headerless_request,
    decode_infer_request,
    encode_infer_response,
    parse_json_body,
)

if TYPE_CHECKING:
    from inferbridge.observability.metrics import MetricsEndpoint

__all__ = ["CANCELS_ON_DISCONNECT", "RestApp"]

logger = logging.getLogger(__name__)

#: ASGI scope extension of a server that cancels the request's task when its client goes
#: away (the Go gateway's backend does): no watch for http.disconnect is needed then.
CANCELS_ON_DISCONNECT = "inferbridge.cancels_on_disconnect"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_HEADER_LENGTH = "inference-header-content-length"


class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or [_JSON]


def _json(status: int, document: Any) -> _Response:
    return _Response(status, orjson.dumps(document))


class RestApp:
    """ASGI callable serving OIP v2 REST plus the seed-compatible shortcuts."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        max_body_bytes: int,
        default_model: str,
        metrics: MetricsEndpoint | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.default_model = default_model
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            response = await self._route(scope, receive)
        except CallerGoneError:
            return  # nobody is left to answer
        except InferBridgeError as error:
            status = 405 if isinstance(error, _MethodNotAllowed) else http_status(error)
            response = _json(status, {"error": error.message})
            if isinstance(error, QueueFull):
                response.headers.append(
                    (b"retry-after", str(max(1, math.ceil(error.retry_after_s))).encode())
                )
        except Exception:  # never let one request take the server down, nor leak a traceback
            logger.exception("unhandled error serving %s %s", scope["method"], scope["path"])
            response = _json(500, {"error": "internal server error; see the server log"})
        if isinstance(response, generate.EventStream):  # its errors are events from here on
            cancels = CANCELS_ON_DISCONNECT in scope.get("extensions", ())
            await response.write(send, receive, watch_disconnect=not cancels)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    *response.headers,
                    (b"content-length", str(len(response.body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _route(self, scope: Scope, receive: Receive) -> _Response | generate.EventStream:
        method: str = scope["method"]
        parts = scope["path"].rstrip("/").split("/")[1:]
        if parts and parts[0] == "v2":
            return await self._v2(method, parts[1:], scope, receive)
        if parts[:2] == ["v1", "rollouts"]:
            return await self._rollouts(method, parts[2:], scope, receive)
        if parts == ["v1", "rollout-audit"]:
            _require(method, "GET")
            if self.dataplane.release is None:
                return _json(404, {"error": "rollouts are not enabled on this server"})
            from inferbridge.release import api

            answer = api.audit(self.dataplane.release, scope.get("query_string", b""))
            return _Response(answer.status, answer.body, [(b"content-type", answer.content_type)])
        if parts == ["openapi.json"]:  # the document scripts/openapi.py writes
            _require(method, "GET")
            return _Response(200, _openapi_document())
        if parts == ["predict"]:
            _require(method, "POST")
            return await self._predict(scope, receive)
        if parts == ["metrics"]:
            _require(method, "GET")
            return await self._metrics()
        if len(parts) == 3 and parts[:2] == ["v1", "models"] and parts[2].endswith(":predict"):
            _require(method, "POST")
            return await self._v1_predict(parts[2].removesuffix(":predict"), scope, receive)
        if len(parts) == 3 and parts[0] == "v1" and parts[1] in ("vision", "text"):
            from inferbridge.frontends.rest import services  # issue #4: image and text services

            _require(method, "POST")
            body = await self._read_body(scope, receive, _headers(scope))
            route = (parts[1], parts[2])
            return _json(200, await services.handle(self.dataplane, route, scope, body))
        return _json(404, {"error": f"no route for {method} {scope['path']}"})

    async def _v2(
        self, method: str, parts: list[str], scope: Scope, receive: Receive
    ) -> _Response | generate.EventStream:
        dp = self.dataplane
        if not parts:
            _require(method, "GET")
            meta = dp.server_metadata()
            document: dict[str, Any] = {
                "name": meta.name,
                "version": meta.version,
                "extensions": list(meta.extensions),
            }
            if meta.model_errors:
                document["model_errors"] = meta.model_errors
            return _json(200, document)
        if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            _require(method, "GET")
            if parts[1] == "live":
                return _json(200, {"live": dp.live()})
            ready = dp.ready()
            return _json(200 if ready else 503, {"ready": ready})
        if parts[0] == "repository":
            return await self._repository(method, parts[1:], scope, receive)
        if parts == ["models", "stats"]:
            _require(method, "GET")
            return _json(200, {"model_stats": dp.model_statistics()})
        if parts[0] == "models" and len(parts) >= 2:
            name, rest = parts[1], parts[2:]
            version: str | None = None
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = rest[1], rest[2:]
            if not rest:
                _require(method, "GET")
                m = dp.model_metadata(name, version)
                return _json(
                    200,
                    {
                        "name": m.name,
                        "versions": m.versions,
                        "platform": m.platform,
                        "inputs": [s.to_json() for s in m.inputs],
                        "outputs": [s.to_json() for s in m.outputs],
                    },
                )
            if rest == ["ready"]:
                _require(method, "GET")
                ready = dp.model_ready(name, version)
                return _json(200 if ready else 503, {"name": name, "ready": ready})
            if rest == ["infer"]:
                _require(method, "POST")
                return await self._infer(name, version, scope, receive)
            if rest in (["generate"], ["generate_stream"]):
                _require(method, "POST")
                return await self._generate(name, version, rest[0], scope, receive)
            if rest == ["config"]:
                _require(method, "GET")
                return _json(200, dp.model_config(name, version))
            if rest == ["stats"]:
                _require(method, "GET")
                return _json(200, {"model_stats": dp.model_statistics(name, version)})
        extension = extensions.route(parts)  # shared memory, logging, trace settings
        if extension is not None:
            if method not in extension.methods:
                raise _MethodNotAllowed(
                    f"method {method} not allowed here; use {' or '.join(extension.methods)}"
                )
            body = None
            if method == "POST":
                body = await self._json_object(scope, receive, "the request")
            return _json(200, extension.handler(dp, body))
        return _json(404, {"error": f"no route for {method} {scope['path']}"})

    async def _repository(
        self, method: str, parts: list[str], scope: Scope, receive: Receive
    ) -> _Response:
        """Triton's model repository extension: index, load, unload."""
        dp = self.dataplane
        if parts == ["index"]:
            _require(method, "POST")
            body = await self._read_body(scope, receive, _headers(scope))
            ready = index_ready_only(body)
            return _json(
                200,
                [
                    {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
                    for e in dp.repository_index(ready_only=ready)
                ],
            )
        if len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload"):
            _require(method, "POST")
            name, action = parts[1], parts[2]
            document = await self._json_object(scope, receive, f"the {action} request")
            unknown = sorted(set(document) - {"parameters"})
            if unknown:
                raise InvalidInput(
                    f"unknown field(s) {unknown} in the {action} request; expected 'parameters'"
                )
            parameters = document.get("parameters", {})
            if not isinstance(parameters, dict):
                raise InvalidInput(f"'parameters' must be a JSON object, got {parameters!r}")
            if action == "load":
                await dp.load_model(name, parameters, base64_files=True)
            else:
                await dp.unload_model(name, parameters)
            return _json(200, {})
        return _json(404, {"error": f"no route for {method} {scope['path']}"})

    async def _rollouts(
        self, method: str, parts: list[str], scope: Scope, receive: Receive
    ) -> _Response:
        """Our rollout management API (inferbridge.release.api)."""
        controller = self.dataplane.release
        if controller is None:
            return _json(404, {"error": "rollouts are not enabled on this server"})
        from inferbridge.release import api

        allowed = api.methods_for(parts)
        if allowed and method not in allowed:
            raise _MethodNotAllowed(f"method {method} not allowed here; use {' or '.join(allowed)}")
        body = await self._json_object(scope, receive, "the request") if method == "POST" else None
        answer = await api.handle(controller, method, parts, body, scope.get("query_string", b""))
        return _Response(answer.status, answer.body, [(b"content-type", answer.content_type)])

    async def _generate(
        self, name: str, version: str | None, route: str, scope: Scope, receive: Receive
    ) -> _Response | generate.EventStream:
        """Triton's generate extension (rest/generate.py)."""
        body = await self._read_body(scope, receive, _headers(scope))
        if route == "generate_stream":
            return await generate.generate_stream(self.dataplane, name, version, body)
        gone = None
        if CANCELS_ON_DISCONNECT not in scope.get("extensions", ()):
            gone = functools.partial(_disconnected, receive)
        return _Response(200, await generate.generate(self.dataplane, name, version, body, gone))

    async def _json_object(self, scope: Scope, receive: Receive, what: str) -> dict[str, Any]:
        """An optional JSON object body: {} when empty."""
        body = await self._read_body(scope, receive, _headers(scope))
        if not body.strip():
            return {}
        document = parse_json_body(body)
        if not isinstance(document, dict):
            raise InvalidInput(f"{what} must be a JSON object, got {type(document).__name__}")
        return document

    async def _infer(
        self, name: str, version: str | None, scope: Scope, receive: Receive
    ) -> _Response:
        headers = _headers(scope)
        body = await self._read_body(scope, receive, headers)
        self.dataplane.check_admission(name, version)  # shed load before decoding it
        header_length = _header_length(headers)
        if header_length == 0:
            inputs = self.dataplane.model_metadata(name, version).inputs
            batch = self.dataplane.model_settings(name, version).get("max_batch_size", 0)
            request = decode_headerless_request(body, name, version, inputs, int(batch))
        else:
            request = decode_infer_request(
                body, header_length, name, version, self.dataplane.shared_memory
            )
        if CANCELS_ON_DISCONNECT not in scope.get("extensions", ()):
            request.caller_gone = functools.partial(_disconnected, receive)
        request.header = functools.partial(_scope_header, scope)
        response = await self.dataplane.infer(request)
        payload, json_length = encode_infer_response(
            response, request, self.dataplane.shared_memory
        )
        if json_length is None:
            return _Response(200, payload)
        return _Response(
            200,
            payload,
            [
                (b"content-type", b"application/octet-stream"),
                (_HEADER_LENGTH.encode(), str(json_length).encode()),
            ],
        )

    async def _metrics(self) -> _Response:
        if self.metrics is None:
            return _json(
                404, {"error": "metrics are off: the server was started with --no-metrics"}
            )
        from inferbridge.observability.metrics import CONTENT_TYPE

        body = await self.metrics.render()
        return _Response(200, body, [(b"content-type", CONTENT_TYPE.encode())])

    async def _predict(self, scope: Scope, receive: Receive) -> _Response:
        body = await self._read_body(scope, receive, _headers(scope))
        features = parse_json_body(body)
        if isinstance(features, dict):
            features = features.get("features", features.get("values"))
        classes, single = await compat.predict_classes(self.dataplane, self.default_model, features)
        return _json(200, {"class": classes[0] if single else classes})

    async def _v1_predict(self, name: str, scope: Scope, receive: Receive) -> _Response:
        body = await self._read_body(scope, receive, _headers(scope))
        document = parse_json_body(body)
        if not isinstance(document, dict) or "instances" not in document:
            raise InvalidInput("body must be a JSON object with an 'instances' list")
        predictions = await compat.predict_instances(self.dataplane, name, document["instances"])
        return _json(200, {"predictions": predictions})

    async def _read_body(self, scope: Scope, receive: Receive, headers: dict[str, str]) -> bytes:
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(_too_large(f"request body of {declared} bytes", limit))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidInput("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(_too_large(f"request body of {size} bytes", limit))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding in ("", "identity"):
            return body
        return _decompress(body, encoding, limit)


@functools.cache
def _openapi_document() -> bytes:
    return (Path(__file__).parent / "openapi.json").read_bytes()


def _too_large(what: str, limit: int) -> str:
    # Triton's phrase first (its QA matches it), then ours.
    return (
        f"{what} exceeds the maximum allowed input size of {limit} bytes: it is over the "
        f"limit of {limit} bytes (--max-request-bytes)"
    )


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    windows = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
    if encoding not in windows:
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    decompressor = zlib.decompressobj(windows[encoding])
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"request body is not valid {encoding} data: {exc}") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"decompressed request body is over the limit of {limit} bytes")
    return data


_WANTED_HEADERS = frozenset({b"content-length", b"content-encoding", _HEADER_LENGTH.encode()})


def _scope_header(scope: Scope, name: str) -> str | None:
    """One request header by its lower-case name (read only when a rollout routes by it)."""
    wanted = name.encode("latin-1")
    for key, value in scope["headers"]:
        if key == wanted:
            return str(value.decode("latin-1"))
    return None


def _headers(scope: Scope) -> dict[str, str]:
    """The few request headers the REST API reads (ASGI servers give lower-case names)."""
    return {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in scope["headers"]
        if k in _WANTED_HEADERS
    }


def _header_length(headers: dict[str, str]) -> int | None:
    value = headers.get(_HEADER_LENGTH)
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()):  # "²".isdigit() is true, int("²") fails
        raise InvalidInput(f"Inference-Header-Content-Length must be a byte count, got {value!r}")
    return int(value)


def _require(method: str, allowed: str) -> None:
    if method != allowed:
        raise _MethodNotAllowed(f"method {method} not allowed here; use {allowed}")


class _MethodNotAllowed(InvalidInput):
    pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
