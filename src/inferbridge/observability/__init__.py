"""Metrics, statistics, tracing and logs: each configured explicitly at start-up."""
