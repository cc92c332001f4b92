"""Shared fixtures: the example repository and one real server for the whole session.

Tests never import inferbridge's gRPC stubs in this process: tritonclient registers the
same protobuf names (package `inference`), and one process cannot hold both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inferbridge.examples.build import example_repository
from tests.serverproc import ServerProcess, start_server


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return example_repository()


@pytest.fixture(scope="session")
def server(examples_dir: Path) -> Iterator[ServerProcess]:
    """`inferbridge serve` on the example repository, shared by the session."""
    proc = start_server(examples_dir)
    yield proc
    proc.stop()
