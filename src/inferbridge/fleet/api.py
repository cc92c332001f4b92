"""The control plane's HTTP JSON API under `/v1/fleet/...`, as a raw ASGI application
(like the REST front end: no routing framework).

Without authentication (`--auth-keys`, `--auth-jwt-*`), operator routes need the admin
token and agent routes (`/v1/fleet/agent/...`) the bootstrap token (register) or the
node's own token. With it, the `Authority` of inferbridge.security decides before the body
is read: reads need scope `read`, changes `admin`, agent routes `agent` (or `admin`), and
a node's agent routes answer only the principal that registered it (or an admin). Every
error is JSON `{"error": "..."}` with the status of its `FleetError` or `Denial`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from inferbridge.fleet.controlplane import ControlPlane
from inferbridge.fleet.credentials import AgentCaller
from inferbridge.fleet.errors import FleetError, InvalidSpec, NotFound
from inferbridge.fleet.relay import RELAYED_HEADER, Relay
from inferbridge.fleet.spec import (
    DeploymentSpec,
    Manifest,
    Registration,
    RolloutSpec,
    parse_model,
)

if TYPE_CHECKING:
    from inferbridge.security import Authority, Kind, Principal

__all__ = ["FleetApp"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_MAX_BODY = 8 * 1024 * 1024
Headers = list[tuple[bytes, bytes]]


class _Request:
    def __init__(
        self,
        scope: Scope,
        body: bytes,
        params: dict[str, str],
        principal: Principal | None = None,
    ) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.params = params
        self.query = {
            k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()
        }
        self.body = body
        #: Who the Authority says is calling; None when authentication is off (tokens).
        self.principal = principal
        self.token: str | None = None
        #: The request's headers, by lower-case name (the last of a repeated one).
        self.headers: dict[str, str] = {}
        for key, value in scope.get("headers", []):
            self.headers[key.decode("latin-1").lower()] = value.decode("latin-1")
            if key == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token:
                    self.token = token.strip()

    @property
    def relayed(self) -> bool:
        """Forwarded by another replica (fleet.relay): answer here, never forward again."""
        return RELAYED_HEADER in self.headers

    @property
    def caller(self) -> AgentCaller | None:
        """The authenticated agent, for the control plane's node checks (None: tokens)."""
        if self.principal is None:
            return None
        from inferbridge.security import Action, Kind

        scopes = self.principal.scopes
        admin = scopes is not None and scopes.grants(Action(Kind.ADMIN))
        return AgentCaller(self.principal.name, admin)

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise InvalidSpec(f"the body is not valid JSON: {exc}") from None

    def number(self, name: str, default: float) -> float:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise InvalidSpec(f"query parameter {name!r} must be a number") from None


Handler = Callable[[_Request], Awaitable[tuple[int, Any]]]


class FleetApp:
    """ASGI application over one `ControlPlane`; `authority` (when it authenticates)
    replaces the admin, bootstrap and node tokens."""

    def __init__(self, plane: ControlPlane, authority: Authority | None = None) -> None:
        self.plane = plane
        self.authority = authority if authority is not None and authority.enabled else None
        self.relay = Relay(plane.identity)
        p = plane
        admin = self._admin
        self._routes: list[tuple[str, re.Pattern[str], Handler, Kind]] = []
        add = self._add
        add("GET", "/v1/fleet/health", self._health)
        add("POST", "/v1/fleet/agent/register", self._register)
        add("POST", "/v1/fleet/agent/{node}/heartbeat", self._heartbeat)
        add("GET", "/v1/fleet/agent/{node}/assignments", self._assignments)
        add("POST", "/v1/fleet/agent/{node}/requests/{id}", self._answer)
        add("GET", "/v1/fleet/nodes", admin(self._list_nodes))
        add("GET", "/v1/fleet/nodes/{node}", admin(lambda r: _ok(p.node_view(r.params["node"]))))
        add("GET", "/v1/fleet/nodes/{node}/logs", admin(self._logs))
        add("POST", "/v1/fleet/nodes/{node}/diagnose", admin(self._diagnose))
        add("GET", "/v1/fleet/status", admin(lambda r: _ok(p.status_view())))
        add("GET", "/v1/fleet/routing", admin(lambda r: _ok(p.routing_view())))
        add("GET", "/v1/fleet/artifacts", admin(self._list_artifacts))
        add("POST", "/v1/fleet/artifacts", admin(self._push))
        add("GET", "/v1/fleet/deployments", admin(self._list_deployments))
        add("PUT", "/v1/fleet/deployments/{model}", admin(self._deploy))
        add("GET", "/v1/fleet/deployments/{model}", admin(self._get_deployment))
        add("DELETE", "/v1/fleet/deployments/{model}", admin(self._delete))
        add("POST", "/v1/fleet/apply", admin(self._apply))
        add("POST", "/v1/fleet/rollouts", admin(self._rollout))
        add(
            "GET",
            "/v1/fleet/rollouts/{model}",
            admin(lambda r: _ok(p.rollout_view(r.params["model"]))),
        )

    def _add(self, method: str, template: str, handler: Handler) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self._routes.append((method, re.compile(f"^{pattern}$"), handler, _kind(method, template)))

    def _admin(
        self, handler: Callable[[_Request], Awaitable[tuple[int, Any]] | tuple[int, Any]]
    ) -> Handler:
        async def checked(request: _Request) -> tuple[int, Any]:
            if request.principal is None:  # tokens; else the Authority has decided
                self.plane.check_admin(request.token)
            result = handler(request)
            if isinstance(result, tuple):
                return result
            return await result

        return checked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers: Headers = []
        status, payload = await self._dispatch(scope, receive, headers)
        body = orjson.dumps(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *headers,
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.plane.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.plane.stop()
                await self.relay.close()
                await self.plane.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, scope: Scope, receive: Receive, headers: Headers) -> tuple[int, Any]:
        path: str = scope["path"]
        allowed = False
        for method, pattern, handler, kind in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            allowed = True
            if method != scope["method"]:
                continue
            principal = None
            if self.authority is not None:  # before the body is read
                decided = self._authorize(scope, kind, headers)
                if isinstance(decided, tuple):
                    return decided
                principal = decided
            try:
                if not self.plane.serving and _leader_only(method, path):
                    leader = self.plane.leader
                    return 503, {
                        "error": "this control plane is a follower; "
                        + (f"the leader is {leader}" if leader else "no leader is elected yet"),
                        "leader": leader,
                    }
                body = await _read_body(receive)
                return await handler(_Request(scope, body, match.groupdict(), principal))
            except FleetError as exc:
                return exc.status, {"error": exc.message}
            except Exception:
                logger.exception("fleet API %s %s failed", scope["method"], path)
                return 500, {"error": "internal error (see the control plane's log)"}
        if self.authority is not None:  # unknown routes need a valid credential too
            from inferbridge.security import Kind

            decided = self._authorize(scope, Kind.ANY, headers)
            if isinstance(decided, tuple):
                return decided
        if allowed:
            return 405, {"error": f"method {scope['method']} not allowed on {path}"}
        return 404, {"error": f"no route {path}"}

    def _authorize(self, scope: Scope, kind: Kind, headers: Headers) -> Principal | tuple[int, Any]:
        """The principal, or the refusal's (status, body) with its headers added."""
        from inferbridge.security import Action, Credentials, Denial

        assert self.authority is not None
        authorization = api_key = ""
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"x-api-key":
                api_key = value.decode("latin-1")
        decided = self.authority.check(Credentials(authorization, api_key), Action(kind))
        if not isinstance(decided, Denial):
            return decided
        if decided.www_authenticate is not None:
            headers.append((b"www-authenticate", decided.www_authenticate.encode()))
        if decided.retry_after is not None:
            headers.append((b"retry-after", str(decided.retry_after).encode()))
        return decided.status, {"error": decided.message}

    # -- handlers --------------------------------------------------------------------

    async def _health(self, request: _Request) -> tuple[int, Any]:
        return 200, {
            "status": "ok",
            "nodes": len(self.plane.nodes),
            "leader": self.plane.serving,
            **self.plane.figures(),
        }

    async def _register(self, request: _Request) -> tuple[int, Any]:
        registration = parse_model(Registration, request.json(), "registration")
        token = await self.plane.register(registration, request.token, request.caller)
        return 200, {"node": registration.name, "token": token}

    async def _heartbeat(self, request: _Request) -> tuple[int, Any]:
        body = request.json()
        if not isinstance(body, dict):
            raise InvalidSpec("a heartbeat must be a JSON object")
        return 200, await self.plane.heartbeat(
            request.params["node"], request.token, body, request.caller
        )

    async def _assignments(self, request: _Request) -> tuple[int, Any]:
        wait = min(max(request.number("wait_s", self.plane.long_poll_s), 0.0), 300.0)
        etag = request.query.get("etag", "")
        return 200, await self.plane.assignments_for(
            request.params["node"], request.token, etag, wait, request.caller
        )

    async def _answer(self, request: _Request) -> tuple[int, Any]:
        body = request.json()
        if not isinstance(body, dict):
            raise InvalidSpec("an answer must be a JSON object")
        await self.plane.answer(
            request.params["node"], request.token, request.params["id"], body, request.caller
        )
        return 200, {}

    async def _list_nodes(self, request: _Request) -> tuple[int, Any]:
        views = []
        for index, name in enumerate(sorted(self.plane.nodes)):
            if index and index % 200 == 0:
                await asyncio.sleep(0)  # a thousand nodes' views would hold the heartbeats
            if name in self.plane.nodes:
                views.append(self.plane.node_view(name))
        return 200, {"nodes": views}

    async def _logs(self, request: _Request) -> tuple[int, Any]:
        lines = int(request.number("lines", 200))
        if not 1 <= lines <= 10000:
            raise InvalidSpec("lines must be between 1 and 10000")
        return await self._ask(request, "logs", lines=lines)

    async def _diagnose(self, request: _Request) -> tuple[int, Any]:
        return await self._ask(request, "diagnose")

    async def _ask(self, request: _Request, kind: str, **args: Any) -> tuple[int, Any]:
        """A diagnostic request: over the agent's channel when this replica holds it,
        else forwarded to the replica that does (once: a relayed request is not)."""
        node = request.params["node"]
        holder = self.plane.channel_holder(node)
        if holder and not request.relayed:
            return await self.relay.forward(
                holder, node, request.method, request.path, request.query, request.headers
            )
        return 200, await self.plane.ask(node, kind, **args)

    async def _list_artifacts(self, request: _Request) -> tuple[int, Any]:
        return 200, {"artifacts": [m.model_dump() for _, m in sorted(self.plane.artifacts.items())]}

    async def _push(self, request: _Request) -> tuple[int, Any]:
        manifest = parse_model(Manifest, request.json(), "manifest")
        await self.plane.push_manifest(manifest)
        return 201, manifest.model_dump()

    async def _list_deployments(self, request: _Request) -> tuple[int, Any]:
        return 200, {
            "deployments": [d.model_dump() for _, d in sorted(self.plane.deployments.items())]
        }

    async def _deploy(self, request: _Request) -> tuple[int, Any]:
        data = request.json()
        if isinstance(data, dict):
            data = {**data, "model": data.get("model", request.params["model"])}
        spec = parse_model(DeploymentSpec, data, "deployment")
        if spec.model != request.params["model"]:
            raise InvalidSpec(
                f"the body names model {spec.model!r}, the path {request.params['model']!r}"
            )
        await self.plane.apply([spec])
        return 200, spec.model_dump()

    async def _get_deployment(self, request: _Request) -> tuple[int, Any]:
        spec = self.plane.deployments.get(request.params["model"])
        if spec is None:
            raise NotFound(f"no deployment {request.params['model']!r}")
        return 200, spec.model_dump()

    async def _delete(self, request: _Request) -> tuple[int, Any]:
        await self.plane.delete_deployment(request.params["model"])
        return 200, {}

    async def _apply(self, request: _Request) -> tuple[int, Any]:
        data = request.json()
        items = data.get("deployments") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise InvalidSpec("apply needs {'deployments': [...]} with at least one deployment")
        specs = [
            parse_model(DeploymentSpec, item, f"deployments[{i}]") for i, item in enumerate(items)
        ]
        await self.plane.apply(specs)
        return 200, {"applied": [s.model for s in specs]}

    async def _rollout(self, request: _Request) -> tuple[int, Any]:
        spec = parse_model(RolloutSpec, request.json(), "rollout")
        await self.plane.start_rollout(spec)
        return 201, self.plane.rollout_view(spec.model)


def _ok(payload: Any) -> tuple[int, Any]:
    return 200, payload


def _leader_only(method: str, path: str) -> bool:
    """The admin API's changes go to the leader; a follower serves reads, diagnostics
    and the agents from its copy of the store."""
    return not (
        method == "GET" or path.startswith("/v1/fleet/agent/") or path.endswith("/diagnose")
    )


def _kind(method: str, template: str) -> Kind:
    """What a route needs when authentication is on: health is open (while
    --auth-open-health), agent routes need `agent`, reads `read` (a diagnosis only reads
    the node), every change `admin`."""
    from inferbridge.security import Kind

    if template == "/v1/fleet/health":
        return Kind.HEALTH
    if template.startswith("/v1/fleet/agent/"):
        return Kind.AGENT
    if method == "GET" or template.endswith("/diagnose"):
        return Kind.READ
    return Kind.ADMIN


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise InvalidSpec(f"the body is over {_MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
