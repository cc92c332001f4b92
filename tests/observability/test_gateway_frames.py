"""The gateway backend's frames (isolated_gateway_frames.py), in a process of its own."""

from __future__ import annotations

from pathlib import Path

from tests.isolated import run_isolated


def test_gateway_backend_frames_in_their_own_process() -> None:
    output = run_isolated(Path(__file__).with_name("isolated_gateway_frames.py"))
    assert "3 passed" in output, output
