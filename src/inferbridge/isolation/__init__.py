"""Fault isolation: a model's runtime in a supervised worker process (docs/isolation.md)."""
