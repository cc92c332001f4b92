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


@pytest.fixture(scope="session")
def grpcio_server(examples_dir: Path) -> Iterator[ServerProcess]:
    """The same server with gRPC served by grpc.aio in-process instead of the Go gateway."""
    proc = start_server(examples_dir, "--grpc-frontend", "grpcio")
    yield proc
    proc.stop()


@pytest.fixture(scope="session", params=["gateway", "grpcio"])
def grpc_server(request: pytest.FixtureRequest) -> ServerProcess:
    """Each gRPC front end in turn; the gRPC tests run against both."""
    name = "server" if request.param == "gateway" else "grpcio_server"
    proc: ServerProcess = request.getfixturevalue(name)
    return proc
