"""Fixtures of the pool gateway's tests: two real servers shared by the module's tests
(`a` serves echo and only_a, `b` serves echo), built gateway binary once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inferbridge.frontends.gateway.build import GatewayBuildError, build_gateway
from tests.gateway.procs import echo_repository
from tests.serverproc import ServerProcess, start_server


@pytest.fixture(scope="session", autouse=True)
def gateway_binary() -> Path:
    try:
        return build_gateway()
    except GatewayBuildError as exc:  # CI has Go; a machine without it cannot build
        pytest.skip(f"the Go gateway cannot be built here: {exc}")


@pytest.fixture(scope="package")
def server_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = echo_repository(tmp_path_factory.mktemp("repo-a"), {"echo": "", "only_a": ""})
    proc = start_server(repo)
    yield proc
    proc.stop()


@pytest.fixture(scope="package")
def server_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = echo_repository(
        tmp_path_factory.mktemp("repo-b"), {"echo": "", "slow": "parameters: {sleep_s: 3}\n"}
    )
    proc = start_server(repo)
    yield proc
    proc.stop()


def upstream(name: str, server: ServerProcess) -> dict[str, str]:
    return {"name": name, "rest": server.base_url, "grpc": server.grpc_url}
