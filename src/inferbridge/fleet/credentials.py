"""Who may act as a node: node tokens (stored as SHA-256 digests) without
authentication, the principal that registered the node (or an admin) with it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from inferbridge.fleet.errors import Forbidden, Unauthorized

__all__ = ["AgentCaller", "check_owner", "hash_token"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AgentCaller:
    """An agent the API's Authority has let through (authentication on): the principal's
    name, and whether it holds `admin` (which may act as any node)."""

    principal: str
    admin: bool = False


def check_owner(name: str, doc: dict[str, Any], caller: AgentCaller) -> None:
    """A node answers the principal that registered it, or an admin."""
    owner = doc.get("principal")
    if owner is None:
        # Registered with tokens, before authentication was turned on.
        raise Unauthorized(f"node {name!r} was registered without authentication: register again")
    if owner != caller.principal and not caller.admin:
        raise Forbidden(
            f"principal {caller.principal!r} may not act as node {name!r}: principal "
            f"{owner!r} registered it (an admin may)"
        )
