"""fleet.relay on an in-memory holder: what is forwarded, and each way it can fail."""

from __future__ import annotations

import httpx

from inferbridge.fleet.relay import RELAYED_HEADER, Relay

HOLDER = "http://10.0.0.2:9000"


async def _forward(
    relay: Relay, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    status, body = await relay.forward(
        HOLDER,
        "node-a",
        "GET",
        "/v1/fleet/nodes/node-a/logs",
        {"lines": "5"},
        headers or {"authorization": "Bearer admin", "cookie": "c", "x-api-key": "k"},
    )
    await relay.close()
    return status, body


async def test_the_callers_credential_and_the_answer_pass_through() -> None:
    seen: list[httpx.Request] = []

    def holder(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json={"error": "a valid admin token is required"})

    relay = Relay("http://10.0.0.1:9000", transport=httpx.MockTransport(holder))
    status, body = await _forward(relay)
    assert (status, body) == (401, {"error": "a valid admin token is required"})
    (request,) = seen
    assert str(request.url) == f"{HOLDER}/v1/fleet/nodes/node-a/logs?lines=5"
    assert request.headers["authorization"] == "Bearer admin"
    assert request.headers["x-api-key"] == "k"
    assert "cookie" not in request.headers  # only the credential headers travel
    assert request.headers[RELAYED_HEADER] == "http://10.0.0.1:9000"


async def test_an_unreachable_holder_is_a_503_naming_node_and_replica() -> None:
    def holder(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    status, body = await _forward(Relay("r1", transport=httpx.MockTransport(holder)))
    assert status == 503 and body["control_plane"] == HOLDER
    error = str(body["error"])
    assert "node node-a" in error and HOLDER in error and "cannot be reached" in error


async def test_a_holder_that_does_not_answer_is_a_504() -> None:
    def holder(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    status, body = await _forward(Relay("r1", transport=httpx.MockTransport(holder)))
    assert status == 504 and "did not answer within 35 s" in str(body["error"])


async def test_an_answer_that_is_not_json_is_a_502() -> None:
    def holder(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>a proxy page</html>")

    status, body = await _forward(Relay("r1", transport=httpx.MockTransport(holder)))
    assert status == 502 and "without JSON" in str(body["error"])
