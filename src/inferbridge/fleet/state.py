"""The control plane's in-memory state: its copy of the desired state (nodes, deployments,
artefacts, assignments, rollouts), the deployments' status, what each node's agent
reports (`Observed`), and the few helpers every part of the control plane shares (waking
a node's long poll, a node's assignment payload and its etag, Ready/NotReady).

`ControlPlane` is a `FleetState`; the views, the replication between replicas and the
rollout checks read and change it through this class alone, so none of them imports
the control plane.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from inferbridge.fleet.conditions import DEFAULT_GRACE_S, DEFAULT_SETTLE_S, server_trouble
from inferbridge.fleet.observed import Observed
from inferbridge.fleet.reconciler import DeploymentStatus
from inferbridge.fleet.spec import Capacity, DeploymentSpec, Manifest

__all__ = ["FleetState"]

logger = logging.getLogger("inferbridge.fleet.controlplane")


class FleetState:
    """The documents and observations one replica holds (see the module's docstring)."""

    def __init__(
        self,
        *,
        identity: str,
        replicating: bool,
        server_down_grace_s: float = DEFAULT_GRACE_S,
        server_settle_s: float = DEFAULT_SETTLE_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        #: This replica's name among several (its advertised URL); "" alone.
        self.identity = identity
        #: The ServerDown condition's grace and settle periods (fleet.conditions).
        self.server_down_grace_s = server_down_grace_s
        self.server_settle_s = server_settle_s
        self.wall_clock = wall_clock
        #: Whether other replicas follow this one's records (etcd replication).
        self.replicating = replicating
        self.nodes: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, DeploymentSpec] = {}
        self.artifacts: dict[str, Manifest] = {}
        self.assignments: dict[str, dict[str, int]] = {}
        self.rollouts: dict[str, dict[str, Any]] = {}
        self.status: dict[str, DeploymentStatus] = {}
        self.observed: dict[str, Observed] = {}
        #: Set on every change worth a reconciliation pass.
        self.dirty = asyncio.Event()
        #: Nodes whose observed state this replica must publish for the others.
        self.to_publish: set[str] = set()
        #: Per node: its assignment payload's etag, and its parsed capacity (caches).
        self.etags: dict[str, str] = {}
        self.capacities: dict[str, Capacity] = {}

    def wake(self, name: str) -> None:
        """Answer the node's waiting long poll (its assignments or requests changed)."""
        observed = self.observed.get(name)
        if observed is not None:
            observed.wake.set()
            observed.wake = asyncio.Event()

    def set_ready(self, name: str, observed: Observed, ready: bool) -> None:
        if observed.ready != ready:
            observed.ready = ready
            observed.ready_since = time.monotonic()
            logger.warning(
                "node %s is %s", name, "Ready again" if ready else "NotReady (missed heartbeats)"
            )
            if observed.direct and self.replicating:
                self.to_publish.add(name)
            self.dirty.set()

    def observe_server(self, name: str, observed: Observed) -> None:
        """Take the server's health from the node's latest report (a heartbeat or a
        relayed record) into its ServerDown condition."""
        watch = observed.server_watch
        watch.grace_s, watch.settle_s = self.server_down_grace_s, self.server_settle_s
        was_down, was_back = watch.down_since is not None, watch.up_since is not None
        trouble = server_trouble(observed.server)
        changed = watch.observe(trouble, time.monotonic())
        if trouble and not was_down:
            logger.warning(
                "node %s is ServerDown: %s (its replicas move after %g s down)",
                name,
                trouble,
                watch.grace_s,
            )
        elif not trouble and was_down and watch.down_since is None:
            logger.warning("node %s: the server is back within the grace period", name)
        elif not trouble and watch.up_since is not None and not was_back:
            logger.warning(
                "node %s: the server is back; the node takes replicas again after %g s up",
                name,
                watch.settle_s,
            )
        if changed:
            self._server_usable_changed(name, observed)

    def check_servers(self) -> None:
        """Let time pass for every node's ServerDown condition (its grace and settle
        periods end without a heartbeat saying so)."""
        now = time.monotonic()
        for name, observed in self.observed.items():
            if observed.server_watch.tick(now):
                self._server_usable_changed(name, observed)

    def _server_usable_changed(self, name: str, observed: Observed) -> None:
        watch = observed.server_watch
        if watch.usable:
            # As for a node Ready again: it is the newest, so it is the one that gives
            # up a surplus replica (the ones placed elsewhere meanwhile stay).
            observed.ready_since = time.monotonic()
            logger.warning(
                "node %s: the server has been up %g s: the node takes replicas again",
                name,
                watch.settle_s,
            )
        else:
            logger.warning(
                "node %s: the server has been down %g s (%s): its replicas are placed elsewhere",
                name,
                watch.grace_s,
                watch.reason,
            )
        self.dirty.set()

    def node_capacity(self, name: str, doc: dict[str, Any]) -> Capacity:
        capacity = self.capacities.get(name)
        if capacity is None:
            capacity = self.capacities[name] = Capacity.model_validate(doc.get("capacity", {}))
        return capacity

    def payload(self, name: str) -> list[dict[str, Any]]:
        """What the node's agent is told to serve: its assignments with their artefacts."""
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

    def etag(self, name: str) -> str:
        etag = self.etags.get(name)
        if etag is None:
            etag = hashlib.sha256(orjson.dumps(self.payload(name))).hexdigest()[:16]
            self.etags[name] = etag
        return etag
