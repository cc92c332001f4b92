"""The control plane's loops and actions: registration, heartbeat intake, liveness, the
reconciliation loop, assignment long polls, operator actions and diagnostics over the
agent channel.

Desired state (nodes, deployments, artefacts, assignments, rollouts) lives in the store;
what agents report (heartbeats) lives in memory and is rebuilt within a heartbeat after a
restart. A restarted control plane treats every known node as Ready for one liveness
window, so a restart alone moves no replica.

The parts live beside it, each importing none of this module: `state` (the in-memory
state every part shares), `observed` (what an agent reports, parsed), `views` (the
read-only answers), `peers` (replication between replicas), `rollouts` (the operator's
checks), `credentials` (who may act as a node) and `loopstats` (the health figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from inferbridge.fleet import peers, views
from inferbridge.fleet.conditions import DEFAULT_GRACE_S, DEFAULT_SETTLE_S
from inferbridge.fleet.credentials import AgentCaller, check_owner, hash_token
from inferbridge.fleet.errors import (
    InvalidSpec,
    NotFound,
    Unauthorized,
    Unavailable,
)
from inferbridge.fleet.etcd import Leadership
from inferbridge.fleet.loopstats import LoopFigures, PassTimer
from inferbridge.fleet.observed import Observed
from inferbridge.fleet.policy import PlacementPolicy, SpreadPolicy
from inferbridge.fleet.reconciler import NodeState, Outcome, reconcile_steps
from inferbridge.fleet.rollouts import check_deployable, new_rollout
from inferbridge.fleet.spec import DeploymentSpec, Manifest, Registration, RolloutSpec
from inferbridge.fleet.state import FleetState
from inferbridge.fleet.store import Change, Store

if TYPE_CHECKING:
    from inferbridge.fleet.etcd import Event

__all__ = ["AgentCaller", "ControlPlane"]

logger = logging.getLogger(__name__)

#: Nodes handled between two yields to the event loop in passes over the whole fleet.
_CHUNK = 200


class Replicator(Protocol):
    """What keeps a replica in step with the others (etcd.Replication): applies their
    changes with `apply_events` and publishes `take_published` records."""

    async def run(self, plane: ControlPlane) -> None: ...


class ControlPlane(FleetState):
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
        server_down_grace_s: float | None = None,
        server_settle_s: float | None = None,
    ) -> None:
        """`server_down_grace_s` and `server_settle_s` (fleet.conditions) default to
        $INFERBRIDGE_FLEET_SERVER_DOWN_GRACE_S and $INFERBRIDGE_FLEET_SERVER_SETTLE_S,
        else 30 and 10 seconds."""
        super().__init__(
            identity=leadership.identity if leadership is not None else "",
            replicating=replicator is not None,
            server_down_grace_s=_seconds(
                server_down_grace_s, "INFERBRIDGE_FLEET_SERVER_DOWN_GRACE_S", DEFAULT_GRACE_S
            ),
            server_settle_s=_seconds(
                server_settle_s, "INFERBRIDGE_FLEET_SERVER_SETTLE_S", DEFAULT_SETTLE_S
            ),
            wall_clock=wall_clock,
        )
        self.leadership = leadership
        self.replicator = replicator
        #: Set when the server begins to shut down: long polls answer at once.
        self.closing = False
        self.store = store
        # None with authentication on: the API's Authority decides, no token is accepted.
        self._admin = hash_token(admin_token) if admin_token else None
        self._bootstrap = hash_token(bootstrap_token) if bootstrap_token else None
        self.policy: PlacementPolicy = policy or SpreadPolicy()
        self.missed_heartbeats = missed_heartbeats
        self.long_poll_s = long_poll_s
        self._now = wall_clock
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._loop_figures = LoopFigures()
        self._pass_timer = PassTimer()

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
        self.etags.clear()
        self.capacities.clear()
        started = time.monotonic()
        for name, doc in self.nodes.items():
            observed = self.observed.get(name)
            if observed is None:
                self.observed[name] = Observed(started, float(doc.get("heartbeat_interval_s", 1.0)))
            elif not observed.relayed_by:  # a relayed one follows its record
                observed.last_seen, observed.ready = started, True

    @property
    def serving(self) -> bool:
        """Whether this replica runs the fleet now (always, without leader election)."""
        return self.leadership is None or self.leadership.is_leader

    @property
    def leader(self) -> str:
        return "" if self.leadership is None else self.leadership.leader

    async def start(self) -> None:
        self._loop_figures.watch_gc()
        await self._load()
        self._tasks = [
            asyncio.create_task(self._loop(), name="fleet-reconcile"),
            asyncio.create_task(self._loop_figures.sample_loop_lag(), name="fleet-loop-lag"),
        ]
        if self.leadership is not None:
            self._tasks.append(asyncio.create_task(self.leadership.run(), name="fleet-election"))
        if self.replicator is not None:
            self._tasks.append(
                asyncio.create_task(self.replicator.run(self), name="fleet-replication")
            )
        self.dirty.set()

    def close_polls(self) -> None:
        """Answer every waiting long poll now (the server is shutting down)."""
        self.closing = True
        for name in list(self.observed):
            self.wake(name)

    async def stop(self) -> None:
        self._loop_figures.unwatch_gc()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def figures(self) -> dict[str, Any]:
        """Recent heartbeat handling time and event-loop lag, p50/p99/max in ms."""
        return self._loop_figures.as_dict()

    # -- authentication --------------------------------------------------------------

    def check_admin(self, token: str | None) -> None:
        if (
            token is None
            or self._admin is None
            or not hmac.compare_digest(hash_token(token), self._admin)
        ):
            raise Unauthorized("a valid admin token is required (Authorization: Bearer ...)")

    def _check_node(
        self, name: str, token: str | None, caller: AgentCaller | None = None
    ) -> Observed:
        doc = self.nodes.get(name)
        if doc is None:
            raise NotFound(f"unknown node {name!r}: register it first")
        if caller is not None:
            check_owner(name, doc, caller)
        elif token is None or not hmac.compare_digest(
            hash_token(token), str(doc.get("token_sha256", ""))
        ):
            raise Unauthorized(f"wrong token for node {name!r}")
        return self.observed[name]

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
                check_owner(registration.name, existing, caller)
            node_token = ""
            credential: dict[str, Any] = {"principal": caller.principal}
        else:
            presented = hash_token(token) if token is not None else ""
            bootstrap = self._bootstrap is not None and hmac.compare_digest(
                presented, self._bootstrap
            )
            own = existing is not None and hmac.compare_digest(
                presented, str(existing.get("token_sha256", ""))
            )
            if not (bootstrap or own):
                raise Unauthorized("registration needs the bootstrap token or the node's own token")
            node_token = secrets.token_urlsafe(32)
            credential = {"token_sha256": hash_token(node_token)}
        doc = {
            **registration.model_dump(),
            **credential,
            "registered_at": (existing or {}).get("registered_at", self._now()),
        }
        await self.store.apply([("nodes", registration.name, doc)])
        self.nodes[registration.name] = doc
        self.capacities.pop(registration.name, None)
        observed = self.observed.get(registration.name)
        if observed is None:
            observed = self.observed[registration.name] = Observed(
                time.monotonic(), registration.heartbeat_interval_s
            )
        observed.last_seen = time.monotonic()
        observed.interval_s = registration.heartbeat_interval_s
        peers.heard_directly(self, registration.name, observed, True)
        logger.info(
            "node %s registered (%s, labels %s%s)",
            registration.name,
            "new" if existing is None else "again",
            registration.labels,
            f", principal {caller.principal}" if caller is not None else "",
        )
        self.set_ready(registration.name, observed, True)
        self.dirty.set()
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
            observed = self._check_node(name, token, caller)
            changed = observed.take_heartbeat(body, time.monotonic())
            self.set_ready(name, observed, True)
            self.observe_server(name, observed)
            peers.heard_directly(self, name, observed, changed)
            if changed:
                self.dirty.set()
            return {"etag": self.etag(name)}
        finally:
            self._loop_figures.heartbeat_s.append(time.perf_counter() - began)

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
            current = self.etag(name)
            if current != etag or observed.requests or self.closing or time.monotonic() >= deadline:
                requests, observed.requests = observed.requests, []
                return {
                    "etag": current,
                    "assignments": self.payload(name),
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

    def channel_holder(self, name: str) -> str:
        """The replica holding the node's agent channel when it is another one (its
        URL), else "" (this replica, or none known yet)."""
        if name not in self.nodes:
            raise NotFound(f"unknown node {name!r}")
        return self.observed[name].relayed_by

    async def ask(
        self, name: str, kind: str, timeout_s: float = 30.0, **args: Any
    ) -> dict[str, Any]:
        """A diagnostic request answered by the node's agent over its channel (held
        here; the API forwards it to the replica that holds it otherwise)."""
        if name not in self.nodes:
            raise NotFound(f"unknown node {name!r}")
        relayed_by = self.observed[name].relayed_by
        if relayed_by:
            # Relayed here, but the record says another replica holds it (the agent
            # moved meanwhile): no second hop.
            raise Unavailable(
                f"node {name}'s agent talks to the control plane at {relayed_by} now: ask again"
            )
        request_id = f"r{next(self._ids)}-{secrets.token_hex(4)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[request_id] = future
        self.observed[name].requests.append({"id": request_id, "kind": kind, **args})
        self.wake(name)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise Unavailable(f"node {name} did not answer within {timeout_s:g} s") from None
        finally:
            self._answers.pop(request_id, None)
            with contextlib.suppress(ValueError):
                self.observed[name].requests.remove({"id": request_id, "kind": kind, **args})

    # -- operator actions ------------------------------------------------------------

    async def push_manifest(self, manifest: Manifest) -> None:
        key = f"{manifest.model}/{manifest.version}"
        await self.store.apply([("artifacts", key, manifest.model_dump())])
        self.artifacts[key] = manifest
        self.etags.clear()
        logger.info(
            "artefact %s registered (%s, sha256 %s)", key, manifest.uri, manifest.sha256[:12]
        )
        self.dirty.set()

    async def apply(self, specs: list[DeploymentSpec]) -> None:
        """Deploy several models at once: all are checked first, then written together."""
        names = [s.model for s in specs]
        if len(set(names)) != len(names):
            raise InvalidSpec("the same model is declared twice")
        async with self._lock:
            for spec in specs:
                check_deployable(self, spec)
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
        self.dirty.set()

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
        self.dirty.set()

    async def start_rollout(self, spec: RolloutSpec) -> dict[str, Any]:
        async with self._lock:
            rollout = new_rollout(self, spec, self._now())
            await self.store.apply([("rollouts", spec.model, rollout)])
            self.rollouts[spec.model] = rollout
        logger.info(
            "rollout %s: version %d -> %d over %d node(s), waves %s",
            spec.model,
            rollout["from_version"],
            spec.version,
            len(rollout["nodes"]),
            spec.waves,
        )
        self.dirty.set()
        return rollout

    # -- views -----------------------------------------------------------------------

    def node_view(self, name: str) -> dict[str, Any]:
        return views.node_view(self, name)

    def status_view(self) -> dict[str, Any]:
        return views.status_view(self)

    def rollout_view(self, model: str) -> dict[str, Any]:
        return views.rollout_view(self, model)

    def routing_view(self) -> dict[str, Any]:
        return views.routing_view(self)

    # -- replication (several replicas on etcd) --------------------------------------

    def take_published(self) -> list[tuple[str, dict[str, Any]]]:
        """The records of the nodes heard here whose state the others have not seen yet
        (`mark_unpublished` puts them back when writing them failed)."""
        return peers.take_published(self, self._now())

    def mark_unpublished(self, names: list[str] | None = None) -> None:
        """Publish these nodes (all heard here when None) again at the next round."""
        peers.mark_unpublished(self, names)

    def apply_events(self, events: Sequence[Event], snapshot: bool = False) -> None:
        """Changes another replica made in the store (or all of it, `snapshot`)."""
        peers.apply_events(self, events, leading=self.serving, snapshot=snapshot)

    # -- the loop --------------------------------------------------------------------

    def _check_liveness(self) -> None:
        now = time.monotonic()
        for name, observed in self.observed.items():
            if (
                not observed.relayed_by  # the relaying replica judges it
                and observed.ready
                and now - observed.last_seen > self.missed_heartbeats * observed.interval_s
            ):
                self.set_ready(name, observed, False)

    async def _loop(self) -> None:
        last = 0.0
        was_serving = self.serving
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can lose the
            # cancellation `stop` sends when its inner task is mid-wake, and hang stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self.dirty.wait()
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
                self.dirty.set()
            self._check_liveness()
            self.check_servers()
            # Level-triggered: a pass on every change, and once a second while a rollout
            # runs (its health gates and wave timeouts are time-based).
            timed = any(r.get("state") == "Running" for r in self.rollouts.values())
            # Passes are at least 0.2 s apart: a storm of changes (a thousand nodes
            # reporting a new deployment) costs a few passes, not one per heartbeat.
            spacing = 0.2 - (time.monotonic() - last)
            if spacing > 0:
                await asyncio.sleep(spacing)
            if self.dirty.is_set() or (timed and time.monotonic() - last >= 1.0):
                self.dirty.clear()
                last = time.monotonic()
                try:
                    await self.reconcile_once(dry_run=not leading)
                except Exception:
                    logger.exception("reconciliation failed; retrying")

    async def _node_states(self) -> dict[str, NodeState]:
        """A snapshot of every node for the reconciler, built a chunk at a time."""
        states: dict[str, NodeState] = {}
        for index, (name, doc) in enumerate(list(self.nodes.items())):
            if index and index % _CHUNK == 0:
                await self._pass_timer.pause()  # let heartbeats in between chunks
            observed = self.observed.get(name)
            if observed is None:
                continue
            states[name] = NodeState(
                name=name,
                labels=doc.get("labels", {}),
                capacity=self.node_capacity(name, doc),
                ready=observed.schedulable,
                server_ready=observed.server_ready,
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
            self._pass_timer.begin()
            try:
                changed_nodes = await self._reconcile_locked(dry_run)
            finally:
                self._loop_figures.pass_hold_s.append(self._pass_timer.longest())
        for index, name in enumerate(changed_nodes):
            if index and index % _CHUNK == 0:
                await asyncio.sleep(0)
            self.wake(name)

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
            await self._pass_timer.pause()
        if dry_run:
            self.status = outcome.status
            return []
        changed_nodes = []
        for index, (name, models) in enumerate(outcome.assignments.items()):
            if index and index % _CHUNK == 0:
                await self._pass_timer.pause()
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
        self._pass_timer.lap()
        await self.store.apply(changes)  # it yields on its own; not counted as the pass's
        self._pass_timer.resume()
        self.assignments = outcome.assignments
        for name in changed_nodes:
            self.etags.pop(name, None)
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


def _seconds(given: float | None, variable: str, default: float) -> float:
    """`given`, else the environment variable's value, else `default`; each checked."""
    source = "the argument"
    if given is None:
        raw = os.environ.get(variable, "")
        if not raw:
            return default
        source = f"${variable}"
        try:
            given = float(raw)
        except ValueError:
            raise InvalidSpec(f"{source} must be a number of seconds, not {raw!r}") from None
    if not 0 <= given <= 86400:
        raise InvalidSpec(f"{source} must be between 0 and 86400 seconds, not {given:g}")
    return given
