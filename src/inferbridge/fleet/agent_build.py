"""Find or build the Go node agent (`inferbridge-agent`).

Its source ships inside the package (`fleet/agent/`) and is built once per source version
with the local Go toolchain into the user cache, like the gateway.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from inferbridge.frontends.gateway.build import build_go_program, cache_dir, source_hash

__all__ = ["AGENT_LDFLAGS", "AGENT_SOURCE", "AgentBuildError", "agent_binary", "build_agent"]

AGENT_SOURCE = Path(__file__).resolve().parent / "agent"
_BINARY_NAME = "inferbridge-agent"

#: Stripped (-s -w): the agent's resident memory is a target, and its binary's pages count.
#: The runtime default gcshrinkstackoff=1 (GODEBUG in the environment still wins; -X is
#: how `go build` itself stores a binary's default GODEBUG) keeps the collector from
#: halving idle goroutines' stacks: the next heartbeat grew them again, and each growth
#: walks every frame through the runtime's tables, faulting about 1.4 MB of the binary back
#: into the resident set after each trim (issue #13's 8 MB).
AGENT_LDFLAGS = "-s -w -X=runtime.godebugDefault=gcshrinkstackoff=1"


class AgentBuildError(RuntimeError):
    """The agent could not be built; the message says why."""


def agent_binary() -> Path:
    """The cached binary for this source version and these link flags (it may not exist
    yet)."""
    flags = hashlib.sha256(AGENT_LDFLAGS.encode()).hexdigest()[:8]
    return cache_dir("agent") / f"{source_hash(AGENT_SOURCE)}-{flags}" / _BINARY_NAME


def build_agent(*, force: bool = False) -> Path:
    """Return the agent binary, building it first when it is missing (file lock + atomic
    rename, so concurrent callers are safe), with AGENT_LDFLAGS."""
    return build_go_program(
        AGENT_SOURCE,
        agent_binary(),
        what="agent",
        error=AgentBuildError,
        force=force,
        ldflags=AGENT_LDFLAGS,
    )
