"""A node's `ServerDown` condition: its agent heartbeats, but the inferbridge server beside
it reports not live or not ready (it crashed, hangs, or was stopped). The agent does not
start or restart the server (it only talks to `--server`), so a dead server stays dead
until someone (systemd, the operator) brings it back.

The decision is a small state machine over the node's heartbeats and a clock, so it can
be tested with a fake one:

- the server reports down: the condition starts (`since`, `reason`); the gateway already
  routes around the node (the routing table lists only ready servers);
- down for `grace_s` without a break: the node's replicas are placed elsewhere, exactly
  as for a NotReady node (`replaced`); the node keeps its own assignments meanwhile;
- back up before the grace period ends: the condition ends and nothing moved;
- back up after its replicas moved: the node takes replicas again only once its server
  has stayed up for `settle_s`; then the reconciler sees a node that just became Ready
  (surplus replicas leave the nodes Ready the shortest time), as after NotReady.

A server that comes and goes faster than the grace period never moves a replica, and one
that comes back for less than `settle_s` never gets one back: no churn either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_GRACE_S", "DEFAULT_SETTLE_S", "ServerWatch", "server_trouble"]

#: How long a node's server may be down before its replicas are placed elsewhere.
DEFAULT_GRACE_S = 30.0
#: How long a recovered server must stay up before its node takes replicas again.
DEFAULT_SETTLE_S = 10.0


def server_trouble(server: dict[str, Any]) -> str:
    """Why the agent's `server` report says the server is down ("" when it is not). A
    report without `live`/`ready` (an agent that does not say) is not counted as down."""
    if server.get("live") is False:
        return "the server is not live (its /v2/health/live does not answer 200)"
    if "ready" in server and not server["ready"]:
        return "the server is not ready (its /v2/health/ready does not answer 200)"
    return ""


@dataclass
class ServerWatch:
    """One node's ServerDown state; times are on one monotonic clock."""

    grace_s: float = DEFAULT_GRACE_S
    settle_s: float = DEFAULT_SETTLE_S
    #: When the server was first seen down in the current outage (None: it is up).
    down_since: float | None = None
    reason: str = ""
    #: The grace period has passed: the node's replicas are placed elsewhere.
    replaced: bool = False
    #: While `replaced`, since when the server has been up again (None: still down).
    up_since: float | None = None

    @property
    def usable(self) -> bool:
        """Whether the node may hold (and be counted for) replicas."""
        return not self.replaced

    def observe(self, trouble: str, now: float) -> bool:
        """Take one report (`server_trouble`'s answer); answers whether `usable`
        changed."""
        if trouble:
            if self.down_since is None:
                self.down_since = now
            self.reason, self.up_since = trouble, None
        elif self.replaced:
            if self.up_since is None:
                self.up_since = now
        else:
            self.down_since, self.reason = None, ""  # back within the grace period
        return self.tick(now)

    def tick(self, now: float) -> bool:
        """Let time pass; answers whether `usable` changed."""
        if not self.replaced:
            if self.down_since is not None and now - self.down_since >= self.grace_s:
                self.replaced = True
                return True
            return False
        if self.up_since is not None and now - self.up_since >= self.settle_s:
            self.replaced, self.down_since, self.up_since, self.reason = False, None, None, ""
            return True
        return False

    def condition(self, now: float, wall_now: float) -> dict[str, Any] | None:
        """The condition as `fleet nodes` shows it (None: the server is up and usable).
        `since` is wall-clock seconds since the epoch (`wall_now` is the wall clock at
        `now`)."""
        if self.down_since is None:
            return None
        down_for = now - self.down_since
        condition: dict[str, Any] = {
            "type": "ServerDown",
            "since": round(wall_now - down_for, 3),
            "for_s": round(down_for, 3),
            "reason": self.reason,
            "replaced": self.replaced,
        }
        if self.up_since is not None:
            condition["reason"] = (
                f"the server is back (for {now - self.up_since:.1f} s); the node takes "
                f"replicas again after {self.settle_s:g} s up (was: {self.reason})"
            )
        elif self.replaced:
            condition["reason"] += (
                f"; its replicas are placed elsewhere (down > {self.grace_s:g} s)"
            )
        else:
            condition["reason"] += (
                f"; its replicas move after {self.grace_s:g} s down "
                f"({max(0.0, self.grace_s - down_for):.1f} s left)"
            )
        return condition
