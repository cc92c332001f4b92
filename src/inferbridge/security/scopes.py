"""Scopes: what a principal may do, and whether a request's action is among it.

| scope | grants |
|---|---|
| `infer:<glob>` (`infer` = `infer:*`) | inference on the matching models; shared memory |
| `read` | metadata, readiness, statistics, metrics, rollout status; and health |
| `admin` | everything |
| `agent` | the fleet control plane's node-agent endpoints |
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "Action",
    "Kind",
    "ScopeError",
    "ScopeSet",
    "glob_match",
    "parse_scope",
    "refusal",
]

KNOWN_SCOPES = "infer, infer:<glob>, read, admin, agent"


class ScopeError(ValueError):
    """A scope that is not one of the known forms."""


class Kind(enum.Enum):
    """What a request does, as far as scopes are concerned."""

    HEALTH = "health"
    READ = "read"
    INFER = "infer"
    SHARED_MEMORY = "shared memory"
    ADMIN = "admin"
    AGENT = "agent"
    ANY = "any"  # routes the table does not name: any valid principal (then the usual 404)


@dataclass(frozen=True, slots=True)
class Action:
    """One request's need: its kind, and for INFER the model it runs."""

    kind: Kind
    model: str = ""


def glob_match(pattern: str, name: str) -> bool:
    """`*` matches any run of characters (also none), `?` exactly one; every other
    character only itself (no classes, no escapes, `/` not special)."""
    p = n = 0
    star = -1  # the pattern index after the last `*` seen
    star_n = 0  # the name index that `*` has consumed up to
    while n < len(name):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == name[n]):
            p += 1
            n += 1
        elif p < len(pattern) and pattern[p] == "*":
            star = p + 1
            star_n = n
            p += 1
        elif star >= 0:
            # Let the last `*` swallow one more character and retry from there.
            star_n += 1
            n = star_n
            p = star
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def parse_scope(text: object) -> str:
    """The scope in its canonical form (`infer` becomes `infer:*`); ScopeError names what
    is wrong."""
    if not isinstance(text, str):
        raise ScopeError(f"a scope must be a string, got {type(text).__name__}")
    if text in ("read", "admin", "agent"):
        return text
    if text == "infer":
        return "infer:*"
    if text.startswith("infer:"):
        glob = text[len("infer:") :]
        if not glob:
            raise ScopeError("scope 'infer:' needs a model glob after the colon (or use 'infer')")
        if any(c.isspace() or not c.isprintable() for c in glob):
            raise ScopeError(f"scope {text!r}: a model glob has no spaces or control characters")
        return text
    raise ScopeError(f"scope {text!r} is not one of {KNOWN_SCOPES}")


class ScopeSet:
    """A principal's scopes, as written (for messages) and parsed (for checks)."""

    __slots__ = ("_admin", "_agent", "_globs", "_read", "written")

    def __init__(self, scopes: Iterable[str]) -> None:
        self.written = tuple(scopes)
        parsed = [parse_scope(s) for s in self.written]
        self._admin = "admin" in parsed
        self._read = "read" in parsed
        self._agent = "agent" in parsed
        self._globs = tuple(s[len("infer:") :] for s in parsed if s.startswith("infer:"))

    @classmethod
    def lenient(cls, scopes: Iterable[str]) -> ScopeSet:
        """The known scopes among `scopes` (a JWT may carry other services' scopes too,
        which grant nothing here)."""
        known: list[str] = []
        for scope in scopes:
            try:
                parse_scope(scope)
            except ScopeError:
                continue
            known.append(scope)
        return cls(known)

    def grants(self, action: Action) -> bool:
        if self._admin:
            return True
        kind = action.kind
        if kind is Kind.ANY:
            return True
        if kind is Kind.HEALTH or kind is Kind.READ:
            return self._read
        if kind is Kind.INFER:
            return any(glob_match(glob, action.model) for glob in self._globs)
        if kind is Kind.SHARED_MEMORY:
            return bool(self._globs)
        if kind is Kind.AGENT:
            return self._agent
        return False  # ADMIN without admin

    def describe(self) -> str:
        return ", ".join(self.written) if self.written else "none"


def refusal(principal: str, scopes: ScopeSet, action: Action) -> str:
    """The 403 message: who, what they may not do, and the scopes they have (the Go
    front-end process's words, internal/auth/scope.go)."""
    kind = action.kind
    if kind is Kind.INFER:
        what = f"infer on model '{action.model}'"
    elif kind is Kind.SHARED_MEMORY:
        what = "use shared memory (it needs an infer: scope)"
    elif kind is Kind.HEALTH or kind is Kind.READ:
        what = "read server or model information (it needs the read scope)"
    elif kind is Kind.AGENT:
        what = "act as a node agent (it needs the agent or the admin scope)"
    else:
        what = "change the server (it needs the admin scope)"
    return f"principal '{principal}' may not {what} (its scopes: {scopes.describe()})"
