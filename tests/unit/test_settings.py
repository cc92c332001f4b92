"""Settings that cannot work together are refused with a message naming both."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferbridge.settings import Settings


def test_rest_on_the_gateway_needs_the_gateway_for_grpc() -> None:
    with pytest.raises(ValidationError, match="rest_frontend 'gateway' needs grpc_frontend"):
        Settings(rest_frontend="gateway", grpc_frontend="grpcio")


@pytest.mark.parametrize(
    ("grpc", "rest"), [("auto", "gateway"), ("gateway", "gateway"), ("grpcio", "uvicorn")]
)
def test_compatible_front_ends_are_accepted(grpc: str, rest: str) -> None:
    settings = Settings(grpc_frontend=grpc, rest_frontend=rest)
    assert (settings.grpc_frontend, settings.rest_frontend) == (grpc, rest)


def test_grpc_queue_full_code_from_the_environment_and_its_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import grpc

    from inferbridge.errors import InvalidInput, QueueFull
    from inferbridge.frontends.grpc.errors import QUEUE_FULL_CODES, grpc_status

    assert Settings().grpc_queue_full_code == "resource_exhausted"
    monkeypatch.setenv("INFERBRIDGE_GRPC_QUEUE_FULL_CODE", "unavailable")
    code = QUEUE_FULL_CODES[Settings().grpc_queue_full_code]
    assert code is grpc.StatusCode.UNAVAILABLE
    full = QueueFull("full", retry_after_s=1.0)
    assert grpc_status(full) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_status(full, queue_full=code) is grpc.StatusCode.UNAVAILABLE
    assert grpc_status(InvalidInput("x"), queue_full=code) is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ValidationError):
        Settings(grpc_queue_full_code="busy")  # type: ignore[arg-type]
