"""How control-plane replicas on etcd share what they see, so that every replica serves
reads and agents, not only the leader.

Each replica keeps a copy of the fleet's documents, taken once and then followed with an
etcd watch. Agent traffic is served from that copy: registrations are written to etcd by
whichever replica receives them; heartbeats stay with the replica that receives them, which
judges the node's liveness itself and publishes a record of the node's state
(`observed/<node>`: Ready or not, the server's readiness, per-model states, figures) when
that state changes, and every few seconds for its figures. The records are attached to
the publishing replica's own lease: when a replica dies they expire with it, and the node
gets one liveness window to reach another replica. The leader reads the records of nodes
that talk to the others as if it had their heartbeats, so a thousand heartbeats a second
cost etcd no writes, only their changes do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from inferbridge.fleet.errors import Unavailable
from inferbridge.fleet.etcd import Compacted, EtcdStore

if TYPE_CHECKING:
    from inferbridge.fleet.controlplane import ControlPlane

__all__ = ["Replication"]

logger = logging.getLogger(__name__)


class Replication:
    """Follows the store into a `ControlPlane` and publishes its nodes' records."""

    def __init__(self, store: EtcdStore, ttl_s: int = 5, publish_every_s: float = 0.25) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.publish_every_s = publish_every_s

    async def run(self, plane: ControlPlane) -> None:
        await asyncio.gather(self._follow(plane), self._publish(plane))

    async def _follow(self, plane: ControlPlane) -> None:
        revision = 0
        while True:
            try:
                if revision == 0:
                    revision, events = await self.store.snapshot()
                    plane.apply_events(events, snapshot=True)
                async for batch in self.store.watch(revision + 1):
                    plane.apply_events(batch)
                    revision = max(revision, *(e.revision for e in batch))
            except Compacted:
                logger.warning("replication: etcd compacted the watched revision; reloading")
                revision = 0
            except Unavailable as exc:
                logger.warning("replication: %s", exc.message)
            await asyncio.sleep(0.5)

    async def _publish(self, plane: ControlPlane) -> None:
        loop = asyncio.get_running_loop()
        lease, renewed = "", 0.0
        while True:
            await asyncio.sleep(self.publish_every_s)
            names: list[str] = []
            try:
                if not lease or loop.time() - renewed >= self.ttl_s / 3:
                    if not lease or not await self.store.keepalive(lease):
                        # A new lease: whatever the old one held is gone, publish it all.
                        lease = await self.store.grant(self.ttl_s)
                        plane.mark_unpublished()
                    renewed = loop.time()
                records = plane.take_published()
                names = [name for name, _ in records]
                if records:
                    await self.store.apply(
                        [("observed", name, record) for name, record in records], lease=lease
                    )
            except Unavailable as exc:
                plane.mark_unpublished(names)
                if loop.time() - renewed > self.ttl_s:
                    lease = ""
                logger.warning("replication: publishing node records: %s", exc.message)
