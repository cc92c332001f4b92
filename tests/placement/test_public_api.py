"""`inferbridge.placement` exports exactly its `__all__`."""

from __future__ import annotations

import subprocess
import sys
import types

import inferbridge.placement as placement


def test_public_api_is_exactly_all() -> None:
    public = {
        name
        for name in dir(placement)
        if not name.startswith("_") and not isinstance(getattr(placement, name), types.ModuleType)
    }
    assert public == set(placement.__all__)
    for name in placement.__all__:
        assert hasattr(placement, name), name


def test_importing_it_pulls_in_no_framework() -> None:
    # In a fresh interpreter: numpy and the placement modules, no fleet, no plotting.
    probe = (
        "import sys, inferbridge.placement; "
        "print(sorted(m for m in ('matplotlib', 'inferbridge.fleet.policy', 'uvicorn') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
