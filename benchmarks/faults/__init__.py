"""A fault-injecting proxy for the gateway's tests and benchmarks (see `proxy`)."""

from benchmarks.faults.proxy import FaultProxy, Faults

__all__ = ["FaultProxy", "Faults"]
