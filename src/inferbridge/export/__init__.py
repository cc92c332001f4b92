"""`inferbridge export`: framework models -> verified repository entries.

Each exporter writes `<repository>/<name>/config.yaml` and version 1, loads the result with
the runtime the server would use, runs it and the original on sample inputs, and raises
ExportMismatch when the max absolute difference is above the tolerance.
"""

from __future__ import annotations

from inferbridge.export.verify import ExportMismatch, Verification, compare, verify_entry

__all__ = ["ExportMismatch", "Verification", "compare", "verify_entry"]
