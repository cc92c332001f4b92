"""The gRPC codec's rules and properties (isolated_grpc_codec.py), in a process of its own."""

from __future__ import annotations

from pathlib import Path

from tests.isolated import run_isolated


def test_grpc_codec_in_its_own_process() -> None:
    output = run_isolated(Path(__file__).with_name("isolated_grpc_codec.py"))
    assert "8 passed" in output, output
