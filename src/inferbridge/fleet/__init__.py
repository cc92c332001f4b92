"""The fleet: a control plane that places model versions on nodes, each run by a Go agent.

`inferbridge fleet serve` runs the control plane (`fleet.api`, `fleet.controlplane`); the
agent's Go source ships in `fleet/agent/` and is built by `fleet.agent_build`. See
docs/fleet.md.
"""

from __future__ import annotations

__all__: list[str] = []
