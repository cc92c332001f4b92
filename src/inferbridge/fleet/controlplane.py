"""The control plane's state and loops: registration, heartbeats, liveness, the
reconciliation loop, assignment long polls and diagnostics over the agent channel.

Desired state (nodes, deployments, artefacts, assignments, rollouts) lives in the store;
what agents report (heartbeats) lives in memory and is rebuilt within a heartbeat after a
restart. A restarted control plane treats every known node as Ready for one liveness
window, so a restart alone moves no replica.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from inferbridge.fleet.errors import (
    Conflict,
    Forbidden,
    InvalidSpec,
    NotFound,
    Unauthorized,
    Unavailable,
)
from inferbridge.fleet.etcd import Leadership
from inferbridge.fleet.policy import PlacementPolicy, SpreadPolicy
from inferbridge.fleet.reconciler import (
    DeploymentStatus,
    ModelObservation,
    NodeState,
    Outcome,
    VersionFigures,
    reconcile_steps,
    rollout_wave_nodes,
)
from inferbridge.fleet.spec import (
    Capacity,
    DeploymentSpec,
    Manifest,
    Registration,
    RolloutSpec,
)
from inferbridge.fleet.store import Change, Store

if TYPE_CHECKING:
    from inferbridge.fleet.etcd import Event

__all__ = ["AgentCaller", "ControlPlane"]

logger = logging.getLogger(__name__)

_EVENTS_KEPT = 50
_LAG_PROBE_S = 0.05
#: How often a replica republishes an unchanged node's record (its figures), seconds.
_REPUBLISH_S = 5.0
#: Nodes handled between two yields to the event loop in passes over the whole fleet.
_CHUNK = 200
_MODEL_STATES = {"DOWNLOADING", "VERIFYING", "LOADING", "READY", "FAILED", "UNLOADING"}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AgentCaller:
    """An agent the API's Authority has let through (authentication on): the principal's
    name, and whether it holds `admin` (which may act as any node)."""

    principal: str
    admin: bool = False


@dataclass
class _Observed:
    """What the latest heartbeats of one node said (memory only)."""

    last_seen: float
    interval_s: float
    ready: bool = True
    ready_since: float = 0.0
    heartbeats: int = 0
    server: dict[str, Any] = field(default_factory=dict)
    models: dict[str, ModelObservation] = field(default_factory=dict)
    #: Per model, the reported version's request counters (when the agent sends them).
    figures: dict[str, VersionFigures] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    disk: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Its agent heartbeats to this replica (with several replicas on etcd).
    direct: bool = False
    #: Else the replica whose published record this copy follows ("" when none does).
    relayed_by: str = ""
    published_at: float = 0.0


class Replicator(Protocol):
    """What keeps a replica in step with the others (etcd.Replication): applies their
    changes with `apply_events` and publishes `take_published` records."""

    async def run(self, plane: ControlPlane) -> None: ...


class ControlPlane:
    """Everything behind the fleet API. Create inside the running loop; `start` loads the
    store and starts the loops, `stop` ends them."""

    def __init__(
        self,
        store: Store,
        *,
        admin_token: str | None,
        bootstrap_token: str | None,
        policy: PlacementPolicy | None = None,
        missed_heartbeats: int = 3,
        long_poll_s: float = 25.0,
        wall_clock: Callable[[], float] = time.time,
        leadership: Leadership | None = None,
        replicator: Replicator | None = None,
    ) -> None:
        self.leadership = leadership
        self.replicator = replicator
        #: This replica's name among several (its advertised URL); "" alone.
        self.identity = leadership.identity if leadership is not None else ""
        #: Nodes whose observed state this replica must publish for the others.
        self._publish: set[str] = set()
        #: Set when the server begins to shut down: long polls answer at once.
        self.closing = False
        self.store = store
        # None with authentication on: the API's Authority decides, no token is accepted.
        self._admin = _hash(admin_token) if admin_token else None
        self._bootstrap = _hash(bootstrap_token) if bootstrap_token else None
        self.policy: PlacementPolicy = policy or SpreadPolicy()
        self.missed_heartbeats = missed_heartbeats
        self.long_poll_s = long_poll_s
        self._now = wall_clock
        self.nodes: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, DeploymentSpec] = {}
        self.artifacts: dict[str, Manifest] = {}
        self.assignments: dict[str, dict[str, int]] = {}
        self.rollouts: dict[str, dict[str, Any]] = {}
        self.status: dict[str, DeploymentStatus] = {}
        self.observed: dict[str, _Observed] = {}
        self._dirty = asyncio.Event()
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        #: Per node: its assignment payload's etag, and its parsed capacity (caches).
        self._etags: dict[str, str] = {}
        #: Recent heartbeat handling times and event-loop lags, seconds (for /health).
        self._heartbeat_s: collections.deque[float] = collections.deque(maxlen=20000)
        self._loop_lag_s: collections.deque[float] = collections.deque(maxlen=4000)
        self._loop_cpu_s: collections.deque[float] = collections.deque(maxlen=4000)
        #: Per reconciliation pass, the longest CPU time it held the loop without yielding.
        self._pass_hold_s: collections.deque[float] = collections.deque(maxlen=4000)
        self._segment_began = self._segment_max = 0.0
        #: Pauses of Python's cyclic garbage collector (full collections hold the loop too).
        self._gc_pause_s: collections.deque[float] = collections.deque(maxlen=4000)
        self._gc_began = 0.0
        self._capacity: dict[str, Capacity] = {}

    # -- life cycle ------------------------------------------------------------------

    async def _load(self) -> None:
        """(Re)read the desired state from the store; nodes get one liveness window."""
        self.nodes = await self.store.list("nodes")
        self.deployments = {
            k: DeploymentSpec.model_validate(v)
            for k, v in (await self.store.list("deployments")).items()
        }
        self.artifacts = {
            k: Manifest.model_validate(v) for k, v in (await self.store.list("artifacts")).items()
        }
        self.assignments = {
            k: {m: int(v) for m, v in doc.get("models", {}).items()}
            for k, doc in (await self.store.list("assignments")).items()
        }
        self.rollouts = await self.store.list("rollouts")
        self._etags.clear()
        self._capacity.clear()
        started = time.monotonic()
        for name, doc in self.nodes.items():
            observed = self.observed.get(name)
            if observed is None:
                self.observed[name] = _Observed(
                    started, float(doc.get("heartbeat_interval_s", 1.0))
                )
            elif not observed.relayed_by:  # a relayed one follows its record
                observed.last_seen, observed.ready = started, True

    @property
    def serving(self) -> bool:
        """Whether this replica runs the fleet now (always, without leader election)."""
        return self.leadership is None or self.leadership.is_leader

    @property
    def leader(self) -> str:
        return "" if self.leadership is None else self.leadership.leader

    def _time_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
        elif info.get("generation") == 2:
            self._gc_pause_s.append(time.perf_counter() - self._gc_began)

    async def start(self) -> None:
        gc.callbacks.append(self._time_gc)
        await self._load()
        self._tasks = [
            asyncio.create_task(self._loop(), name="fleet-reconcile"),
            asyncio.create_task(self._sample_loop_lag(), name="fleet-loop-lag"),
        ]
        if self.leadership is not None:
            self._tasks.append(asyncio.create_task(self.leadership.run(), name="fleet-election"))
        if self.replicator is not None:
            self._tasks.append(
                asyncio.create_task(self.replicator.run(self), name="fleet-replication")
            )
        self._dirty.set()

    def close_polls(self) -> None:
        """Answer every waiting long poll now (the server is shutting down)."""
        self.closing = True
        for name in list(self.observed):
            self._wake(name)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._time_gc)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- authentication --------------------------------------------------------------

    def check_admin(self, token: str | None) -> None:
        if (
            token is None
            or self._admin is None
            or not hmac.compare_digest(_hash(token), self._admin)
        ):
            raise Unauthorized("a valid admin token is required (Authorization: Bearer ...)")

    def _check_node(
        self, name: str, token: str | None, caller: AgentCaller | None = None
    ) -> _Observed:
        doc = self.nodes.get(name)
        if doc is None:
            raise NotFound(f"unknown node {name!r}: register it first")
        if caller is not None:
            self._check_owner(name, doc, caller)
        elif token is None or not hmac.compare_digest(
            _hash(token), str(doc.get("token_sha256", ""))
        ):
            raise Unauthorized(f"wrong token for node {name!r}")
        return self.observed[name]

    @staticmethod
    def _check_owner(name: str, doc: dict[str, Any], caller: AgentCaller) -> None:
        """A node answers the principal that registered it, or an admin."""
        owner = doc.get("principal")
        if owner is None:
            # Registered with tokens, before authentication was turned on.
            raise Unauthorized(
                f"node {name!r} was registered without authentication: register again"
            )
        if owner != caller.principal and not caller.admin:
            raise Forbidden(
                f"principal {caller.principal!r} may not act as node {name!r}: principal "
                f"{owner!r} registered it (an admin may)"
            )

    # -- the agent channel -----------------------------------------------------------

    async def register(
        self, registration: Registration, token: str | None, caller: AgentCaller | None = None
    ) -> str:
        """Register (or re-register) a node; answers its new node token. Without
        authentication the bootstrap token or the node's current token is accepted; with
        it (`caller`), a new node or one the same principal registered (any node for an
        admin), and the answer's token is "" (the agent's API key is its credential)."""
        existing = self.nodes.get(registration.name)
        if caller is not None:
            if existing is not None and existing.get("principal") is not None:
                self._check_owner(registration.name, existing, caller)
            node_token = ""
            credential: dict[str, Any] = {"principal": caller.principal}
        else:
            presented = _hash(token) if token is not None else ""
            bootstrap = self._bootstrap is not None and hmac.compare_digest(
                presented, self._bootstrap
            )
            own = existing is not None and hmac.compare_digest(
                presented, str(existing.get("token_sha256", ""))
            )
            if not (bootstrap or own):
                raise Unauthorized("registration needs the bootstrap token or the node's own token")
            node_token = secrets.token_urlsafe(32)
            credential = {"token_sha256": _hash(node_token)}
        doc = {
            **registration.model_dump(),
            **credential,
            "registered_at": (existing or {}).get("registered_at", self._now()),
        }
        await self.store.apply([("nodes", registration.name, doc)])
        self.nodes[registration.name] = doc
        self._capacity.pop(registration.name, None)
        observed = self.observed.get(registration.name)
        if observed is None:
            observed = self.observed[registration.name] = _Observed(
                time.monotonic(), registration.heartbeat_interval_s
            )
        observed.last_seen = time.monotonic()
        observed.interval_s = registration.heartbeat_interval_s
        self._heard_directly(registration.name, observed, True)
        logger.info(
            "node %s registered (%s, labels %s%s)",
            registration.name,
            "new" if existing is None else "again",
            registration.labels,
            f", principal {caller.principal}" if caller is not None else "",
        )
        self._set_ready(registration.name, observed, True)
        self._dirty.set()
        return node_token

    async def heartbeat(
        self,
        name: str,
        token: str | None,
        body: dict[str, Any],
        caller: AgentCaller | None = None,
    ) -> dict[str, Any]:
        began = time.perf_counter()
        try:
            return self._heartbeat(name, token, body, caller)
        finally:
            self._heartbeat_s.append(time.perf_counter() - began)

    def _heartbeat(
        self, name: str, token: str | None, body: dict[str, Any], caller: AgentCaller | None
    ) -> dict[str, Any]:
        observed = self._check_node(name, token, caller)
        models = _parse_models(body.get("models", []))
        figures = _parse_figures(body.get("models", []))
        for model, seen in _parse_version_stats(body.get("version_stats"), models).items():
            figures.setdefault(model, seen)
        server = body.get("server") or {}
        if not isinstance(server, dict):
            raise InvalidSpec("heartbeat: 'server' must be an object")
        changed = models != observed.models or bool(server.get("ready")) != bool(
            observed.server.get("ready")
        )
        observed.last_seen = time.monotonic()
        observed.heartbeats += 1
        observed.server = server
        observed.models = models
        observed.figures = figures
        observed.metrics = body.get("metrics") or {}
        observed.disk = body.get("disk") or {}
        for event in body.get("events") or []:
            if isinstance(event, dict):
                observed.events.append(event)
        del observed.events[:-_EVENTS_KEPT]
        self._set_ready(name, observed, True)
        self._heard_directly(name, observed, changed)
        if changed:
            self._dirty.set()
        return {"etag": self._etag(name)}

    def _heard_directly(self, name: str, observed: _Observed, changed: bool) -> None:
        """The node's agent talks to this replica: publish its state for the others when
        it changed, when it just moved here, and every `_REPUBLISH_S` (fresh figures)."""
        if self.replicator is None:
            return
        moved = not observed.direct
        observed.direct, observed.relayed_by = True, ""
        if changed or moved or time.monotonic() - observed.published_at >= _REPUBLISH_S:
            self._publish.add(name)

    async def assignments_for(
        self,
        name: str,
        token: str | None,
        etag: str,
        wait_s: float | None = None,
        caller: AgentCaller | None = None,
    ) -> dict[str, Any]:
        """Long poll: answers when the node's assignments differ from `etag`, when a
        diagnostic request is waiting, or after `wait_s`."""
        observed = self._check_node(name, token, caller)
        deadline = time.monotonic() + (self.long_poll_s if wait_s is None else wait_s)
        while True:
            wake = observed.wake
            current = self._etag(name)
            if current != etag or observed.requests or self.closing or time.monotonic() >= deadline:
                requests, observed.requests = observed.requests, []
                return {
                    "etag": current,
                    "assignments": self._payload(name),
                    "requests": requests,
                    "heartbeat_interval_s": observed.interval_s,
                }
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), max(0.0, deadline - time.monotonic()))

    async def answer(
        self,
        name: str,
        token: str | None,
        request_id: str,
        body: dict[str, Any],
        caller: AgentCaller | None = None,
    ) -> None:
        self._check_node(name, token, caller)
        future = self._answers.get(request_id)
        if future is None:
            raise NotFound(f"no diagnostic request {request_id!r} is waiting (too late?)")
        if not future.done():
            future.set_result(body)

    def _wake(self, name: str) -> None:
        observed = self.observed.get(name)
        if observed is not None:
            observed.wake.set()
            observed.wake = asyncio.Event()

    def _payload(self, name: str) -> list[dict[str, Any]]:
        out = []
        for model, version in sorted(self.assignments.get(name, {}).items()):
            manifest = self.artifacts.get(f"{model}/{version}")
            if manifest is not None:
                out.append(
                    {
                        "model": model,
                        "version": version,
                        "uri": manifest.uri,
                        "sha256": manifest.sha256,
                        "size": manifest.size,
                        "format": manifest.format,
                    }
                )
        return out

    def _etag(self, name: str) -> str:
        etag = self._etags.get(name)
        if etag is None:
            etag = hashlib.sha256(orjson.dumps(self._payload(name))).hexdigest()[:16]
            self._etags[name] = etag
        return etag

    # -- operator actions ------------------------------------------------------------

    async def push_manifest(self, manifest: Manifest) -> None:
        key = f"{manifest.model}/{manifest.version}"
        await self.store.apply([("artifacts", key, manifest.model_dump())])
        self.artifacts[key] = manifest
        self._etags.clear()
        logger.info(
            "artefact %s registered (%s, sha256 %s)", key, manifest.uri, manifest.sha256[:12]
        )
        self._dirty.set()

    def _check_deployable(self, spec: DeploymentSpec) -> None:
        if f"{spec.model}/{spec.version}" not in self.artifacts:
            raise NotFound(
                f"no artefact for {spec.model} version {spec.version}: push it first "
                f"(inferbridge fleet push models/{spec.model} --version {spec.version} --to s3://...)"
            )
        rollout = self.rollouts.get(spec.model)
        current = self.deployments.get(spec.model)
        if (
            rollout is not None
            and rollout.get("state") == "Running"
            and current is not None
            and current.version != spec.version
        ):
            raise Conflict(
                f"a rollout of {spec.model} to version {rollout['version']} is running; "
                "wait for it to finish before deploying another version"
            )

    async def apply(self, specs: list[DeploymentSpec]) -> None:
        """Deploy several models at once: all are checked first, then written together."""
        names = [s.model for s in specs]
        if len(set(names)) != len(names):
            raise InvalidSpec("the same model is declared twice")
        async with self._lock:
            for spec in specs:
                self._check_deployable(spec)
            await self.store.apply([("deployments", s.model, s.model_dump()) for s in specs])
            for spec in specs:
                self.deployments[spec.model] = spec
                logger.info(
                    "deployment %s: version %d, replicas %s, selector %s, resources %s",
                    spec.model,
                    spec.version,
                    spec.replicas,
                    spec.selector,
                    spec.resources.describe(),
                )
        self._dirty.set()

    async def delete_deployment(self, model: str) -> None:
        async with self._lock:
            if model not in self.deployments:
                raise NotFound(f"no deployment {model!r}")
            changes: list[Change] = [("deployments", model, None)]
            if model in self.rollouts:
                changes.append(("rollouts", model, None))
            await self.store.apply(changes)
            self.deployments.pop(model)
            self.rollouts.pop(model, None)
        logger.info("deployment %s deleted", model)
        self._dirty.set()

    async def start_rollout(self, spec: RolloutSpec) -> dict[str, Any]:
        async with self._lock:
            deployment = self.deployments.get(spec.model)
            if deployment is None:
                raise NotFound(f"no deployment {spec.model!r}: deploy it before rolling out")
            if f"{spec.model}/{spec.version}" not in self.artifacts:
                raise NotFound(
                    f"no artefact for {spec.model} version {spec.version}: push it first"
                )
            if deployment.version == spec.version:
                raise Conflict(f"{spec.model} is at version {spec.version} already")
            running = self.rollouts.get(spec.model)
            if running is not None and running.get("state") == "Running":
                raise Conflict(
                    f"a rollout of {spec.model} to version {running['version']} is running"
                )
            hosts = sorted(n for n, models in self.assignments.items() if spec.model in models)
            if not hosts:
                raise Conflict(f"no node serves {spec.model} yet (status says why)")
            now = self._now()
            rollout = {
                **spec.model_dump(),
                "from_version": deployment.version,
                "nodes": hosts,
                "wave": 0,
                "wave_started": now,
                "started": now,
                "healthy_since": {},
                "state": "Running",
                "reason": "",
            }
            await self.store.apply([("rollouts", spec.model, rollout)])
            self.rollouts[spec.model] = rollout
        logger.info(
            "rollout %s: version %d -> %d over %d node(s), waves %s",
            spec.model,
            deployment.version,
            spec.version,
            len(hosts),
            spec.waves,
        )
        self._dirty.set()
        return rollout

    async def ask(
        self, name: str, kind: str, timeout_s: float = 30.0, **args: Any
    ) -> dict[str, Any]:
        """A diagnostic request answered by the node's agent over its channel."""
        if name not in self.nodes:
            raise NotFound(f"unknown node {name!r}")
        relayed_by = self.observed[name].relayed_by
        if relayed_by:
            # Its long poll is held by another replica: only that one can reach it.
            raise Unavailable(
                f"node {name}'s agent talks to the control plane at {relayed_by}: ask there"
            )
        request_id = f"r{next(self._ids)}-{secrets.token_hex(4)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[request_id] = future
        self.observed[name].requests.append({"id": request_id, "kind": kind, **args})
        self._wake(name)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise Unavailable(f"node {name} did not answer within {timeout_s:g} s") from None
        finally:
            self._answers.pop(request_id, None)
            with contextlib.suppress(ValueError):
                self.observed[name].requests.remove({"id": request_id, "kind": kind, **args})

    async def _sample_loop_lag(self) -> None:
        # 20 samples a second: the largest lag seen is close to the longest time one
        # callback held the loop (what delays every heartbeat queued behind it), plus the
        # time the OS did not run the process. The loop thread's CPU time in each window
        # counts only the first, whatever the machine's load.
        while True:
            began, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(_LAG_PROBE_S)
            self._loop_lag_s.append(max(0.0, time.perf_counter() - began - _LAG_PROBE_S))
            self._loop_cpu_s.append(time.thread_time() - cpu)

    def figures(self) -> dict[str, Any]:
        """Recent heartbeat handling time and event-loop lag, p50/p99/max in ms."""

        def summary(values: collections.deque[float]) -> dict[str, float]:
            ordered = sorted(values)
            if not ordered:
                return {"count": 0}
            p50 = ordered[int(0.5 * (len(ordered) - 1))]
            p99 = ordered[int(0.99 * (len(ordered) - 1))]
            return {
                "count": len(ordered),
                "p50_ms": round(p50 * 1000, 3),
                "p99_ms": round(p99 * 1000, 3),
                "max_ms": round(ordered[-1] * 1000, 3),
            }

        return {
            "heartbeat": summary(self._heartbeat_s),
            "loop_lag": summary(self._loop_lag_s),
            # CPU time the loop's thread used in one probe window (50 ms plus its lag).
            "loop_cpu_per_window": summary(self._loop_cpu_s),
            "reconcile_hold": summary(self._pass_hold_s),
            "gc_full_collection": summary(self._gc_pause_s),
        }

    # -- replication (several replicas on etcd) --------------------------------------

    def take_published(self) -> list[tuple[str, dict[str, Any]]]:
        """The records of the nodes heard here whose state the others have not seen yet
        (`mark_unpublished` puts them back when writing them failed)."""
        now = time.monotonic()
        records = []
        for name in sorted(self._publish):
            observed = self.observed.get(name)
            if observed is None or not observed.direct:
                continue
            observed.published_at = now
            records.append(
                (
                    name,
                    {
                        "by": self.identity,
                        "ready": observed.ready,
                        "interval_s": observed.interval_s,
                        "server": observed.server,
                        "models": [
                            {"model": m, **o.as_record(), **_stats_record(observed.figures, m)}
                            for m, o in sorted(observed.models.items())
                        ],
                        "metrics": observed.metrics,
                        "disk": observed.disk,
                        "events": observed.events[-10:],
                        "published_at": self._now(),
                    },
                )
            )
        self._publish.clear()
        return records

    def mark_unpublished(self, names: list[str] | None = None) -> None:
        """Publish these nodes (all heard here when None) again at the next round."""
        if names is None:
            names = [n for n, o in self.observed.items() if o.direct]
        self._publish.update(names)

    def apply_events(self, events: Sequence[Event], snapshot: bool = False) -> None:
        """Changes another replica made in the store (or all of it, `snapshot`). Nodes and
        the records of what their agents report are taken from anyone; a leader takes
        nothing else (it wrote the rest itself and keeps it in memory)."""
        leading = self.serving
        assignments: dict[str, dict[str, int]] | None = None
        changed_nodes: set[str] = set()
        recorded: set[str] = set()
        for event in events:
            if event.kind == "observed":
                recorded.add(event.key)
                self._apply_record(event.key, event.doc)
            elif event.kind == "nodes":
                if event.doc is not None:
                    self._apply_node(event.key, event.doc)
            elif leading:
                continue
            elif event.kind == "assignments":
                if assignments is None:
                    assignments = dict(self.assignments)  # copied once a batch, not swapped
                if event.doc is None:
                    assignments.pop(event.key, None)
                else:
                    raw = event.doc.get("models", {})
                    assignments[event.key] = {m: int(v) for m, v in raw.items()}
                changed_nodes.add(event.key)
            elif event.kind == "artifacts":
                if event.doc is None:
                    self.artifacts.pop(event.key, None)
                else:
                    self.artifacts[event.key] = Manifest.model_validate(event.doc)
                changed_nodes.update(self.observed)
            elif event.kind == "deployments":
                if event.doc is None:
                    self.deployments.pop(event.key, None)
                else:
                    self.deployments[event.key] = DeploymentSpec.model_validate(event.doc)
            elif event.kind == "rollouts":
                if event.doc is None:
                    self.rollouts.pop(event.key, None)
                else:
                    self.rollouts[event.key] = event.doc
        if snapshot:  # records gone while this replica did not watch
            for name, observed in self.observed.items():
                if observed.relayed_by and name not in recorded:
                    self._apply_record(name, None)
        if assignments is not None:
            self.assignments = assignments
        for name in changed_nodes:
            if self._etags.pop(name, None) is not None or name in self.observed:
                self._wake(name)
        self._dirty.set()

    def _apply_node(self, name: str, doc: dict[str, Any]) -> None:
        self.nodes[name] = doc
        self._capacity.pop(name, None)
        if name not in self.observed:
            # Registered through another replica: its record tells how it is.
            self.observed[name] = _Observed(
                time.monotonic(), float(doc.get("heartbeat_interval_s", 1.0))
            )

    def _apply_record(self, name: str, record: dict[str, Any] | None) -> None:
        observed = self.observed.get(name)
        if record is None:
            # The relaying replica is gone (its lease expired) or the agent moved: the
            # node gets one liveness window to show up somewhere.
            if observed is not None and observed.relayed_by:
                observed.relayed_by = ""
                observed.last_seen = time.monotonic()
            return
        by = str(record.get("by", ""))
        if by == self.identity:
            return  # its own record, read back
        if observed is None:
            observed = self.observed[name] = _Observed(
                time.monotonic(), float(record.get("interval_s", 1.0))
            )
        try:
            models = _parse_models(record.get("models", []))
            figures = _parse_figures(record.get("models", []))
        except InvalidSpec as exc:
            logger.warning("node %s: a malformed record from %s: %s", name, by, exc.message)
            return
        before = (observed.models, bool(observed.server.get("ready")))
        observed.direct, observed.relayed_by = False, by
        observed.last_seen = time.monotonic()
        observed.interval_s = float(record.get("interval_s", observed.interval_s))
        observed.server = dict(record.get("server") or {})
        observed.models = models
        observed.figures = figures
        observed.metrics = dict(record.get("metrics") or {})
        observed.disk = dict(record.get("disk") or {})
        observed.events = list(record.get("events") or [])
        self._set_ready(name, observed, bool(record.get("ready")))
        if before != (observed.models, bool(observed.server.get("ready"))):
            self._dirty.set()

    # -- views -----------------------------------------------------------------------

    def node_view(self, name: str) -> dict[str, Any]:
        doc = self.nodes.get(name)
        if doc is None:
            raise NotFound(f"unknown node {name!r}")
        observed = self.observed[name]
        return {
            "name": name,
            "state": "Ready" if observed.ready else "NotReady",
            "labels": doc.get("labels", {}),
            "capacity": doc.get("capacity", {}),
            "server_url": doc.get("server_url", ""),
            **({"principal": doc["principal"]} if "principal" in doc else {}),
            "last_heartbeat_s": round(time.monotonic() - observed.last_seen, 3),
            "heartbeat_interval_s": observed.interval_s,
            "server": observed.server,
            "assigned": self.assignments.get(name, {}),
            "models": {
                m: {"version": o.version, "state": o.state, "reason": o.reason}
                for m, o in sorted(observed.models.items())
            },
            "metrics": observed.metrics,
            "disk": observed.disk,
            "events": observed.events[-10:],
            # The replica its agent talks to ("" while no replica has said yet).
            **({"control_plane": self._reached_through(observed)} if self.identity else {}),
        }

    def status_view(self) -> dict[str, Any]:
        deployments = []
        for model, spec in sorted(self.deployments.items()):
            status = self.status.get(model)
            entry = {**spec.model_dump(), **(status.as_dict() if status else {"state": "Pending"})}
            rollout = self.rollouts.get(model)
            if rollout is not None:
                entry["rollout"] = self._rollout_view(rollout)
            deployments.append(entry)
        return {
            "deployments": deployments,
            "nodes": {
                "total": len(self.nodes),
                "ready": sum(1 for o in self.observed.values() if o.ready),
            },
        }

    def _reached_through(self, observed: _Observed) -> str:
        return self.identity if observed.direct else observed.relayed_by

    def rollout_view(self, model: str) -> dict[str, Any]:
        rollout = self.rollouts.get(model)
        if rollout is None:
            raise NotFound(f"no rollout of {model!r}")
        return self._rollout_view(rollout)

    def _rollout_view(self, rollout: dict[str, Any]) -> dict[str, Any]:
        model, target = rollout["model"], int(rollout["version"])
        wave = int(rollout["wave"])
        upgraded = set(rollout_wave_nodes(rollout, min(wave, len(rollout["waves"]) - 1)))
        done, pending = [], []
        failed: dict[str, str] = dict(rollout.get("failed_nodes", {}))
        for name in rollout["nodes"]:
            seen = self.observed[name].models.get(model) if name in self.observed else None
            if name in failed:
                continue
            if seen is not None and seen.version == target and seen.state == "FAILED":
                failed[name] = seen.reason
            elif seen is not None and seen.version == target and seen.state == "READY":
                done.append(name)
            elif name in upgraded:
                pending.append(name)
        return {
            "model": model,
            "from_version": rollout["from_version"],
            "version": target,
            "state": rollout["state"],
            "reason": rollout.get("reason", ""),
            "wave": wave + 1,
            "waves": rollout["waves"],
            "health_gate_s": rollout["health_gate_s"],
            "nodes": len(rollout["nodes"]),
            "done": done,
            "pending": pending,
            "failed": failed,
            **({"analysis": rollout["analysis_result"]} if "analysis_result" in rollout else {}),
        }

    def routing_view(self) -> dict[str, Any]:
        """Which Ready nodes serve which model versions right now (for the gateway)."""
        models: dict[str, list[dict[str, Any]]] = {}
        for name, observed in sorted(self.observed.items()):
            if not observed.ready or not observed.server.get("ready"):
                continue
            url = self.nodes[name].get("server_url", "")
            for model, seen in sorted(observed.models.items()):
                if seen.state == "READY":
                    models.setdefault(model, []).append(
                        {"node": name, "version": seen.version, "url": url}
                    )
        return {"models": models}

    # -- the loop --------------------------------------------------------------------

    def _set_ready(self, name: str, observed: _Observed, ready: bool) -> None:
        if observed.ready != ready:
            observed.ready = ready
            observed.ready_since = time.monotonic()
            logger.warning(
                "node %s is %s", name, "Ready again" if ready else "NotReady (missed heartbeats)"
            )
            if observed.direct and self.replicator is not None:
                self._publish.add(name)
            self._dirty.set()

    def _check_liveness(self) -> None:
        now = time.monotonic()
        for name, observed in self.observed.items():
            if (
                not observed.relayed_by  # the relaying replica judges it
                and observed.ready
                and now - observed.last_seen > self.missed_heartbeats * observed.interval_s
            ):
                self._set_ready(name, observed, False)

    async def _loop(self) -> None:
        last = 0.0
        was_serving = self.serving
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), 0.2)
            leading = self.serving
            if not leading:
                was_serving = False
                if self.replicator is None:
                    continue  # a hot standby: it takes over from the store
                # A follower judges the liveness of the nodes that talk to it and works out
                # the status from its copy of the store, but changes nothing.
            elif not was_serving:
                logger.warning("taking over as the leader: reloading the fleet from the store")
                await self._load()
                was_serving = True
                self._dirty.set()
            self._check_liveness()
            # Level-triggered: a pass on every change, and once a second while a rollout
            # runs (its health gates and wave timeouts are time-based).
            timed = any(r.get("state") == "Running" for r in self.rollouts.values())
            # Passes are at least 0.2 s apart: a storm of changes (a thousand nodes
            # reporting a new deployment) costs a few passes, not one per heartbeat.
            spacing = 0.2 - (time.monotonic() - last)
            if spacing > 0:
                await asyncio.sleep(spacing)
            if self._dirty.is_set() or (timed and time.monotonic() - last >= 1.0):
                self._dirty.clear()
                last = time.monotonic()
                try:
                    await self.reconcile_once(dry_run=not leading)
                except Exception:
                    logger.exception("reconciliation failed; retrying")

    def _node_capacity(self, name: str, doc: dict[str, Any]) -> Capacity:
        capacity = self._capacity.get(name)
        if capacity is None:
            capacity = self._capacity[name] = Capacity.model_validate(doc.get("capacity", {}))
        return capacity

    async def _pause(self) -> None:
        """Yield to the loop between two chunks of a pass (and note how long the chunk
        held it, in CPU time: the figure does not depend on the machine's load)."""
        self._lap()
        await asyncio.sleep(0)
        self._segment_began = time.thread_time()

    def _lap(self) -> None:
        held = time.thread_time() - self._segment_began
        self._segment_max = max(self._segment_max, held)

    async def _node_states(self) -> dict[str, NodeState]:
        """A snapshot of every node for the reconciler, built a chunk at a time."""
        states: dict[str, NodeState] = {}
        for index, (name, doc) in enumerate(list(self.nodes.items())):
            if index and index % _CHUNK == 0:
                await self._pause()  # let heartbeats in between chunks
            observed = self.observed.get(name)
            if observed is None:
                continue
            states[name] = NodeState(
                name=name,
                labels=doc.get("labels", {}),
                capacity=self._node_capacity(name, doc),
                ready=observed.ready,
                server_ready=bool(observed.server.get("ready")),
                models=observed.models,
                ready_since=observed.ready_since,
                figures=observed.figures,
            )
        return states

    async def reconcile_once(self, dry_run: bool = False) -> None:
        """One pass, in chunks: the snapshot, the pure pass (`reconcile_steps`) and the
        comparison with the current assignments each yield to the loop every `_CHUNK`
        nodes (a thousand nodes take 5-30 ms, which would otherwise hold every heartbeat
        queued behind them); SQLite transactions yield every 100 rows. Not a worker thread
        for the pass: a CPU-bound thread makes the loop wait for the GIL at every socket
        call. `dry_run` (a follower) keeps only the deployments' status."""
        async with self._lock:
            self._segment_began, self._segment_max = time.thread_time(), 0.0
            try:
                changed_nodes = await self._reconcile_locked(dry_run)
            finally:
                held = time.thread_time() - self._segment_began
                self._pass_hold_s.append(max(self._segment_max, held))
        for index, name in enumerate(changed_nodes):
            if index and index % _CHUNK == 0:
                await asyncio.sleep(0)
            self._wake(name)

    async def _reconcile_locked(self, dry_run: bool) -> list[str]:
        nodes = await self._node_states()
        deployments, rollouts = dict(self.deployments), dict(self.rollouts)
        current = self.assignments
        steps = reconcile_steps(deployments, rollouts, nodes, current, self.policy, self._now())
        while True:
            try:
                next(steps)
            except StopIteration as done:
                outcome: Outcome = done.value
                break
            await self._pause()
        if dry_run:
            self.status = outcome.status
            return []
        changed_nodes = []
        for index, (name, models) in enumerate(outcome.assignments.items()):
            if index and index % _CHUNK == 0:
                await self._pause()
            before = current.get(name, {})
            if models != before:
                changed_nodes.append(name)
                _log_assignment(name, before, models)
        changes: list[Change] = [
            ("assignments", name, {"models": outcome.assignments[name]}) for name in changed_nodes
        ]
        for model, rollout in outcome.rollouts.items():
            changes.append(("rollouts", model, rollout))
            if rollout["state"] != rollouts[model].get("state"):
                logger.warning(
                    "rollout %s to version %s: %s %s",
                    model,
                    rollout["version"],
                    rollout["state"],
                    rollout.get("reason", ""),
                )
            elif rollout["wave"] != rollouts[model]["wave"]:
                logger.info("rollout %s: wave %d starts", model, rollout["wave"] + 1)
        for model, spec in outcome.promoted.items():
            changes.append(("deployments", model, spec.model_dump()))
        self._lap()
        await self.store.apply(changes)  # it yields on its own; not counted as the pass's
        self._segment_began = time.thread_time()
        self.assignments = outcome.assignments
        for name in changed_nodes:
            self._etags.pop(name, None)
        self.rollouts.update(outcome.rollouts)
        self.deployments.update(outcome.promoted)
        self.status = outcome.status
        for model, status in outcome.status.items():
            if status.pending_reason:
                logger.debug("deployment %s pending: %s", model, status.pending_reason)
        return changed_nodes


def _log_assignment(node: str, before: dict[str, int], after: dict[str, int]) -> None:
    for model in sorted(set(before) | set(after)):
        old, new = before.get(model), after.get(model)
        if old == new:
            continue
        if old is None:
            logger.info("node %s: assign %s version %s", node, model, new)
        elif new is None:
            logger.info("node %s: remove %s (was version %s)", node, model, old)
        else:
            logger.info("node %s: %s version %s -> %s", node, model, old, new)


def _parse_figures(raw: Any) -> dict[str, VersionFigures]:
    """The optional `stats` of each model entry: the `inference_stats` of Triton's
    statistics document for the reported version, `{"success": {"count", "ns"}, "fail":
    {"count", ...}}` (what a wave's in-server analysis judges)."""
    figures = {}
    for item in raw:
        stats = item.get("stats")
        if stats is None:
            continue
        try:
            success, fail = stats["success"], stats["fail"]
            figures[item["model"]] = VersionFigures(
                int(item.get("version", 0)),
                int(success["count"]),
                int(success["ns"]),
                int(fail["count"]),
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidSpec(
                f"heartbeat: model {item['model']!r}: 'stats' must be "
                '{"success": {"count": N, "ns": N}, "fail": {"count": N, ...}} '
                "(the inference_stats of /v2/models/{m}/versions/{v}/stats)"
            ) from None
    return figures


def _parse_version_stats(
    raw: Any, models: dict[str, ModelObservation]
) -> dict[str, VersionFigures]:
    """The Go agent's `version_stats`: `[{"model", "version", "success", "fail",
    "success_ns", "fail_ns"}, ...]` for every version its server reports (read from
    /v2/models/stats every --figures-every); the entry of each model's reported version
    is that model's figures."""
    if raw is None:
        return {}
    problem = (
        "heartbeat: 'version_stats' must be a list of "
        '{"model": str, "version": int, "success": N, "fail": N, "success_ns": N}'
    )
    if not isinstance(raw, list):
        raise InvalidSpec(problem)
    figures = {}
    for item in raw:
        try:
            model, version = item["model"], int(item["version"])
            seen = VersionFigures(
                version, int(item["success"]), int(item["success_ns"]), int(item["fail"])
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidSpec(problem) from None
        observed = models.get(model) if isinstance(model, str) else None
        if observed is not None and observed.version == version:
            figures[model] = seen
    return figures


def _stats_record(figures: dict[str, VersionFigures], model: str) -> dict[str, Any]:
    seen = figures.get(model)
    if seen is None:
        return {}
    return {
        "stats": {
            "success": {"count": seen.success, "ns": seen.success_ns},
            "fail": {"count": seen.fail},
        }
    }


def _parse_models(raw: Any) -> dict[str, ModelObservation]:
    if not isinstance(raw, list):
        raise InvalidSpec("heartbeat: 'models' must be a list")
    models = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("model"), str):
            raise InvalidSpec("heartbeat: each model needs 'model', 'version' and 'state'")
        state = str(item.get("state", "")).upper()
        if state not in _MODEL_STATES:
            raise InvalidSpec(
                f"heartbeat: model state {state!r} is not one of {sorted(_MODEL_STATES)}"
            )
        try:
            version = int(item.get("version", 0))
        except (TypeError, ValueError):
            raise InvalidSpec("heartbeat: model 'version' must be an integer") from None
        models[item["model"]] = ModelObservation(version, state, str(item.get("reason", "")))
    return models
