"""The gateway backend's streamed REST replies (isolated_gateway_stream_reply.py), in a
process of its own."""

from __future__ import annotations

from pathlib import Path

from tests.isolated import run_isolated


def test_gateway_backend_streamed_replies_in_their_own_process() -> None:
    output = run_isolated(Path(__file__).with_name("isolated_gateway_stream_reply.py"))
    assert "4 passed" in output, output
