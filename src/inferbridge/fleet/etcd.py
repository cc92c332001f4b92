"""The fleet's state in an etcd cluster (`--store etcd:http://h1:2379,http://h2:2379,...`),
and leader election through an etcd lease.

Talks to etcd's own JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/*`, base64 keys
and values), so no client library is needed; any member answers, and a member that fails is
skipped. Documents live under `/inferbridge/fleet/<kind>/<key>`; `apply` is one etcd
transaction (up to 100 documents; more take several). One control-plane replica holds the
leader key, attached to a lease it keeps alive; it runs reconciliation and serves the
agents. When it stops keeping the lease alive the key expires and another replica takes it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from inferbridge.fleet.errors import InvalidSpec, Unavailable
from inferbridge.fleet.store import Change

__all__ = ["Compacted", "EtcdStore", "Event", "Leadership", "parse_endpoints"]

logger = logging.getLogger(__name__)

_PREFIX = "/inferbridge/fleet/"
_LEADER_KEY = "/inferbridge/fleet-leader"
_MAX_TXN_OPS = 100


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


def parse_endpoints(text: str) -> list[str]:
    endpoints = [e.strip().rstrip("/") for e in text.split(",") if e.strip()]
    if not endpoints or not all(e.startswith(("http://", "https://")) for e in endpoints):
        raise InvalidSpec(f"--store etcd:{text!r}: expected etcd:http://host:port[,http://...]")
    return endpoints


@dataclass(frozen=True, slots=True)
class Event:
    """One document written (`doc`) or deleted (`doc` None) at etcd revision `revision`."""

    kind: str
    key: str
    doc: dict[str, Any] | None
    revision: int


class Compacted(Exception):
    """The revision a watch asked for is compacted away: take a new snapshot."""


def _event(kv: dict[str, Any], deleted: bool) -> Event | None:
    path = base64.b64decode(kv["key"]).decode()
    kind, _, key = path[len(_PREFIX) :].partition("/")
    if not key:
        return None
    doc = None if deleted else dict(orjson.loads(base64.b64decode(kv.get("value", ""))))
    return Event(kind, key, doc, int(kv.get("mod_revision", 0)))


class _Client:
    """POSTs to whichever etcd member answers, starting with the last one that did."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self._current = 0
        self._http = httpx.AsyncClient(timeout=5.0)
        # A watch stays open for as long as etcd has nothing to say.
        self._stream_http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=None))

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: Exception | None = None
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            try:
                response = await self._http.post(self.endpoints[index] + path, json=body)
            except httpx.HTTPError as exc:
                last = exc
                continue
            if response.status_code >= 500:
                last = RuntimeError(f"etcd {self.endpoints[index]}: HTTP {response.status_code}")
                continue
            self._current = index
            answer = response.json()
            if response.status_code >= 400:
                raise Unavailable(f"etcd refused {path}: {answer}")
            return dict(answer)
        raise Unavailable(f"no etcd member answered ({last})")

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The JSON messages of a streaming call (a watch), from the first member that
        accepts it; ends when the member closes the stream."""
        last: Exception | None = None
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            try:
                async with self._stream_http.stream(
                    "POST", self.endpoints[index] + path, json=body
                ) as response:
                    if response.status_code >= 400:
                        last = RuntimeError(
                            f"etcd {self.endpoints[index]}: HTTP {response.status_code}"
                        )
                        continue
                    async for line in response.aiter_lines():
                        if line.strip():
                            yield dict(orjson.loads(line))
                    return
            except httpx.HTTPError as exc:
                last = exc
                continue
        raise Unavailable(f"no etcd member accepted the watch ({last})")

    async def close(self) -> None:
        await self._http.aclose()
        await self._stream_http.aclose()


class EtcdStore:
    """The `Store` interface over etcd."""

    def __init__(self, endpoints: list[str]) -> None:
        self.client = _Client(endpoints)

    async def get(self, kind: str, key: str) -> dict[str, Any] | None:
        answer = await self.client.call("/v3/kv/range", {"key": _b64(f"{_PREFIX}{kind}/{key}")})
        kvs = answer.get("kvs", [])
        return dict(orjson.loads(base64.b64decode(kvs[0]["value"]))) if kvs else None

    async def list(self, kind: str) -> dict[str, dict[str, Any]]:
        prefix = f"{_PREFIX}{kind}/"
        answer = await self.client.call(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)}
        )
        out = {}
        for kv in answer.get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()[len(prefix) :]
            out[key] = dict(orjson.loads(base64.b64decode(kv["value"])))
        return dict(sorted(out.items()))

    async def apply(self, changes: Sequence[Change], lease: str = "") -> None:
        """Write the changes; with `lease`, the documents written are attached to it (they
        vanish when it expires)."""
        if not changes:
            return
        operations = []
        for kind, key, body in changes:
            name = _b64(f"{_PREFIX}{kind}/{key}")
            if body is None:
                operations.append({"request_delete_range": {"key": name}})
            else:
                put: dict[str, Any] = {"key": name, "value": _b64(orjson.dumps(body))}
                if lease:
                    put["lease"] = lease
                operations.append({"request_put": put})
        # etcd refuses transactions of more than 128 operations (--max-txn-ops): larger
        # change sets (a thousand nodes' assignments) go in several. Only the reconciler
        # writes that many, and it converges: a pass that failed half-way is redone whole.
        for start in range(0, len(operations), _MAX_TXN_OPS):
            chunk = operations[start : start + _MAX_TXN_OPS]
            await self.client.call("/v3/kv/txn", {"success": chunk})

    async def snapshot(self) -> tuple[int, Sequence[Event]]:
        """Every document of the fleet and the revision they are at."""
        answer = await self.client.call(
            "/v3/kv/range", {"key": _b64(_PREFIX), "range_end": _prefix_end(_PREFIX)}
        )
        revision = int(answer.get("header", {}).get("revision", 0))
        events = [e for kv in answer.get("kvs", []) if (e := _event(kv, False)) is not None]
        return revision, events

    async def watch(self, start_revision: int) -> AsyncIterator[Sequence[Event]]:
        """The fleet's changes from `start_revision` on, one list per etcd message; ends
        (the caller watches again from the last revision + 1) when the member goes away,
        raises `Compacted` when etcd no longer has that revision."""
        request = {
            "create_request": {
                "key": _b64(_PREFIX),
                "range_end": _prefix_end(_PREFIX),
                "start_revision": start_revision,
            }
        }
        async for message in self.client.stream("/v3/watch", request):
            result = message.get("result", {})
            if int(result.get("compact_revision", 0) or 0) > 0:
                raise Compacted(f"revision {start_revision} is compacted")
            events = []
            for raw in result.get("events", []):
                event = _event(raw["kv"], raw.get("type") == "DELETE")
                if event is not None:
                    events.append(event)
            if events:
                yield events

    async def grant(self, ttl_s: int) -> str:
        return str((await self.client.call("/v3/lease/grant", {"TTL": ttl_s}))["ID"])

    async def keepalive(self, lease: str) -> bool:
        """Whether the lease is still alive (renewed)."""
        answer = await self.client.call("/v3/lease/keepalive", {"ID": lease})
        return int(answer.get("result", {}).get("TTL", 0)) > 0

    async def close(self) -> None:
        await self.client.close()


class Leadership:
    """Campaigns for the leader key with a lease; `is_leader` says whether this replica
    holds it now, `leader` names the holder (its advertised URL)."""

    def __init__(self, store: EtcdStore, identity: str, ttl_s: int = 5) -> None:
        self._client = store.client
        self.identity = identity
        self.ttl_s = ttl_s
        self.is_leader = False
        self.leader = ""
        self._lease = ""
        self._renewed = 0.0
        self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self._step()
            except Unavailable as exc:
                # etcd may be electing its own leader: the lease still holds until its TTL
                # from the last keepalive, so leadership ends only shortly before that.
                held_s = asyncio.get_running_loop().time() - self._renewed
                if not self.is_leader or held_s > self.ttl_s * 0.6:
                    self._set(False, "")
                    self._lease = ""
                logger.warning("leader election: %s", exc.message)
            await asyncio.sleep(self.ttl_s / 5)

    async def _step(self) -> None:
        if self.is_leader:
            answer = await self._client.call("/v3/lease/keepalive", {"ID": self._lease})
            if int(answer.get("result", {}).get("TTL", 0)) > 0:
                self._renewed = asyncio.get_running_loop().time()
                return
            self._set(False, "")
            self._lease = ""
        if not self._lease:
            granted = await self._client.call("/v3/lease/grant", {"TTL": self.ttl_s})
            self._lease = str(granted["ID"])
        key = _b64(_LEADER_KEY)
        answer = await self._client.call(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}
                ],
                "success": [
                    {
                        "request_put": {
                            "key": key,
                            "value": _b64(self.identity),
                            "lease": self._lease,
                        }
                    }
                ],
                "failure": [{"request_range": {"key": key}}],
            },
        )
        if answer.get("succeeded"):
            self._renewed = asyncio.get_running_loop().time()
            self._set(True, self.identity)
            return
        holder = ""
        with contextlib.suppress(KeyError, IndexError):
            kvs = answer["responses"][0]["response_range"]["kvs"]
            holder = base64.b64decode(kvs[0]["value"]).decode()
        self._set(holder == self.identity, holder)
        # Keep the unused lease alive for the next campaign (it costs nothing).
        await self._client.call("/v3/lease/keepalive", {"ID": self._lease})

    def _set(self, leader: bool, holder: str) -> None:
        if leader != self.is_leader:
            logger.warning(
                "control plane %s %s", self.identity, "is the leader" if leader else "is a follower"
            )
            self.changed.set()
            self.changed = asyncio.Event()
        self.is_leader = leader
        self.leader = holder
