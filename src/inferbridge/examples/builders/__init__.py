"""Builders of the per-runtime example models, each skipping itself when its tool is missing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["SkipExample", "child_main", "run_in_child"]

_SKIPPED = 3


class SkipExample(Exception):
    """A builder cannot run here (framework or tool not installed); the build goes on without it."""


def run_in_child(module: str, root: Path) -> None:
    """Run `python -m module root` (a builder using child_main) in a fresh interpreter.

    torch and TensorFlow each bundle LLVM; training with torch after TensorFlow is imported
    aborts the process ("Option registered more than once"), and the caller (a test run, a
    server) may have imported either. A child process keeps every builder independent.
    """
    done = subprocess.run(
        [sys.executable, "-m", module, str(root)], capture_output=True, text=True, check=False
    )
    if done.returncode == _SKIPPED:
        raise SkipExample(done.stdout.strip() or f"{module} skipped")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"example builder {module} failed ({done.returncode}):\n{tail}")


def child_main(build: Callable[[Path], None]) -> None:
    """The `__main__` of a builder module run by run_in_child."""
    try:
        build(Path(sys.argv[1]))
    except SkipExample as exc:
        print(exc)
        raise SystemExit(_SKIPPED) from None
