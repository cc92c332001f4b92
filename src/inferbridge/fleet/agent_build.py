"""Find or build the Go node agent (`inferbridge-agent`).

Its source ships inside the package (`fleet/agent/`) and is built once per source version
with the local Go toolchain into the user cache, like the gateway.
"""

from __future__ import annotations

from pathlib import Path

from inferbridge.frontends.gateway.build import build_go_program, cache_dir, source_hash

__all__ = ["AGENT_SOURCE", "AgentBuildError", "agent_binary", "build_agent"]

AGENT_SOURCE = Path(__file__).resolve().parent / "agent"
_BINARY_NAME = "inferbridge-agent"


class AgentBuildError(RuntimeError):
    """The agent could not be built; the message says why."""


def agent_binary() -> Path:
    """The cached binary for this source version (it may not exist yet)."""
    return cache_dir("agent") / source_hash(AGENT_SOURCE) / _BINARY_NAME


def build_agent(*, force: bool = False) -> Path:
    """Return the agent binary, building it first when it is missing (file lock + atomic
    rename, so concurrent callers are safe). Stripped (-s -w): the agent's resident memory
    is a target, and its binary's pages count."""
    return build_go_program(
        AGENT_SOURCE,
        agent_binary(),
        what="agent",
        error=AgentBuildError,
        force=force,
        ldflags="-s -w",
    )
