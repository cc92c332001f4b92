"""Run a test module in a pytest process of its own.

Modules that import inferbridge's generated gRPC stubs cannot share a process with
tritonclient's, which register the same protobuf file names (see tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_isolated(module: Path) -> str:
    """Run `module` with pytest in a fresh interpreter; fail with its output unless every
    test in it passed. Returns pytest's output."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout, result.stdout
    return result.stdout
