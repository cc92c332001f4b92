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
