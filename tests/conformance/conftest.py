"""A server on the conformance repository, shared by the conformance tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.build_repo import build_repository
from tests.serverproc import ServerProcess, start_server


@pytest.fixture(scope="session")
def conformance_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = build_repository(tmp_path_factory.mktemp("conformance-repo"))
    proc = start_server(repository)
    yield proc
    proc.stop()
