"""Diagnostics between control-plane replicas: a `fleet diagnose NODE` / `fleet logs NODE`
sent to a replica that does not hold the node's agent channel is forwarded over HTTP to
the replica that does (the one named in the node's record, by its advertised URL), with
the caller's own credential, and the answer passed back as it came.

Why replica-to-replica HTTP and not requests through etcd: the holder is known (its
record names it), one hop costs no etcd writes, and a dead holder is seen at once
(connection refused) instead of after a timeout; the replicas' URLs are reachable
already, since followers send clients to the leader's. Forwarding the caller's own
credential keeps the holder's checks (scopes, node ownership) exactly as if it had been
asked directly, and needs no credential between replicas. A forwarded request carries
`x-inferbridge-fleet-relayed`, so the holder answers itself or fails: never a second
hop, never a loop when an agent moves between replicas.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson

__all__ = ["RELAYED_HEADER", "Relay"]

logger = logging.getLogger(__name__)

RELAYED_HEADER = "x-inferbridge-fleet-relayed"
#: Credential headers passed on to the holding replica.
_FORWARDED = ("authorization", "x-api-key")


class Relay:
    """Forwards diagnostic requests to the replica holding a node's agent channel. Create
    inside the running loop; `close` ends its connections."""

    def __init__(
        self,
        identity: str,
        answer_within_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.identity = identity
        #: The holder waits this long for the agent; the relay a little longer for it.
        self.timeout_s = answer_within_s + 5.0
        self._transport = transport  # tests: an in-memory holder
        self._client: httpx.AsyncClient | None = None

    async def forward(
        self,
        holder: str,
        node: str,
        method: str,
        path: str,
        params: dict[str, str],
        headers: dict[str, str],
    ) -> tuple[int, Any]:
        """(status, body) of the holder's answer, or a 503/504 naming the node and the
        holder when it cannot be reached or does not answer in time."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s, connect=5.0), transport=self._transport
            )
        sent = {k: v for k, v in headers.items() if k in _FORWARDED}
        sent[RELAYED_HEADER] = self.identity or "a replica"
        url = holder.rstrip("/") + path
        try:
            response = await self._client.request(method, url, params=params, headers=sent)
        except httpx.TimeoutException:
            return 504, {
                "error": f"node {node}'s agent talks to the control plane at {holder}, which "
                f"did not answer within {self.timeout_s:g} s",
                "control_plane": holder,
            }
        except httpx.HTTPError as exc:
            logger.warning("relaying %s for node %s to %s: %s", path, node, holder, exc)
            return 503, {
                "error": f"node {node}'s agent talks to the control plane at {holder}, which "
                f"cannot be reached ({type(exc).__name__}: {exc}); if that replica is gone, "
                "the agent moves to another within a liveness window: try again then",
                "control_plane": holder,
            }
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return 502, {
                "error": f"the control plane at {holder} (holding node {node}'s agent) "
                f"answered HTTP {response.status_code} without JSON",
                "control_plane": holder,
            }
        return response.status_code, body

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
