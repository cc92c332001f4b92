"""Triton config mapping (isolated_triton_config.py), in a process of its own: it needs
inferbridge's model_config_pb2, which tritonclient's stubs exclude from this process."""

from __future__ import annotations

from pathlib import Path

from tests.isolated import run_isolated


def test_triton_config_mapping_in_its_own_process() -> None:
    run_isolated(Path(__file__).with_name("isolated_triton_config.py"))
