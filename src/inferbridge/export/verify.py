"""Check an export against its original: same sample inputs, max absolute difference."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import InferBridgeError
from inferbridge.repository.config import load_config
from inferbridge.runtimes.base import Arrays, Runtime
from inferbridge.runtimes.registry import runtime_class

__all__ = ["ExportMismatch", "Verification", "compare", "load_entry", "verify_entry"]


class ExportMismatch(InferBridgeError):
    """The export's outputs differ from the original's by more than the tolerance."""


@dataclass(frozen=True, slots=True)
class Verification:
    """One export's agreement with its original on the sample inputs."""

    entry: str
    max_abs_diff: float
    tolerance: float
    per_output: dict[str, float]

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def line(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        detail = ", ".join(f"{k} {v:.3g}" for k, v in self.per_output.items())
        return (
            f"{self.entry}: max abs diff {self.max_abs_diff:.3g} "
            f"(tolerance {self.tolerance:g}) {verdict} [{detail}]"
        )


def compare(
    entry: str, original: Mapping[str, Any], exported: Mapping[str, Any], tolerance: float
) -> Verification:
    """Max abs difference per output named in `original`; labels (integers, strings) must be
    equal, counted as an infinite difference otherwise."""
    diffs: dict[str, float] = {}
    for name, want in original.items():
        if name not in exported:
            raise ExportMismatch(f"{entry}: the export has no output '{name}'")
        a, b = np.asarray(want), np.asarray(exported[name])
        if a.shape != b.shape:
            raise ExportMismatch(
                f"{entry}: output '{name}' has shape {list(b.shape)}, expected {list(a.shape)}"
            )
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            diffs[name] = float(diff.max()) if diff.size else 0.0
        else:
            diffs[name] = 0.0 if np.array_equal(a, b) else float("inf")
    return Verification(entry, max(diffs.values(), default=0.0), tolerance, diffs)


def load_entry(model_root: Path, version: int = 1) -> Runtime:
    """Load a repository entry with its configured runtime, as the server would."""
    config = load_config(model_root / "config.yaml")
    runtime = runtime_class(config.runtime)()
    runtime.load(model_root / str(version), config, "cpu")
    return runtime


def verify_entry(
    model_root: Path, inputs: Arrays, original: Mapping[str, Any], tolerance: float
) -> Verification:
    """Run a written entry on `inputs` through its runtime; ExportMismatch above tolerance."""
    runtime = load_entry(model_root)
    try:
        exported = runtime.infer(inputs)
    finally:
        runtime.unload()
    result = compare(model_root.name, original, exported, tolerance)
    if not result.ok:
        raise ExportMismatch(result.line())
    return result
