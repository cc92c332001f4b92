"""Scheduling between the dataplane and a runtime: queue, dynamic batching, instances."""

from inferbridge.batching.scheduler import BatchPolicy, ExecutionMode, Scheduler

__all__ = ["BatchPolicy", "ExecutionMode", "Scheduler"]
