"""Builders of the per-runtime example models, each skipping itself when its tool is missing."""

from __future__ import annotations

__all__ = ["SkipExample"]


class SkipExample(Exception):
    """A builder cannot run here (framework or tool not installed); the build goes on without it."""
