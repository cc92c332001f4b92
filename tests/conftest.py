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
def python_frontends_server(examples_dir: Path) -> Iterator[ServerProcess]:
    """The same server without the Go gateway: gRPC on grpc.aio, REST on uvicorn."""
    proc = start_server(examples_dir, "--grpc-frontend", "grpcio", "--rest-frontend", "uvicorn")
    yield proc
    proc.stop()


def _by_frontend(request: pytest.FixtureRequest) -> ServerProcess:
    name = "server" if request.param == "gateway" else "python_frontends_server"
    proc: ServerProcess = request.getfixturevalue(name)
    return proc


@pytest.fixture(scope="session", params=["gateway", "grpcio"])
def grpc_server(request: pytest.FixtureRequest) -> ServerProcess:
    """Each gRPC front end in turn (the Go gateway, grpc.aio); gRPC suites run on both."""
    return _by_frontend(request)


@pytest.fixture(scope="session", params=["gateway", "uvicorn"])
def rest_server(request: pytest.FixtureRequest) -> ServerProcess:
    """Each REST front end in turn (the Go gateway, uvicorn); REST suites run on both."""
    return _by_frontend(request)
