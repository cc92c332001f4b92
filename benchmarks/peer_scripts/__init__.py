"""Scripts that run inside the peers' own virtual environments (not imported by the harness)."""
