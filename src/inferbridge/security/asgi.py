"""Authentication in front of the REST app on uvicorn (the Go front-end process does the
same in Go): every HTTP request is checked before its body is read; a refusal is 401
(with WWW-Authenticate), 403 or 429 (with Retry-After), its body {"error": ...}.

The principal reaches the app as the `x-inferbridge-principal` header, as the Go process
sends it (a client's own is removed first), and the access log through PRINCIPAL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from inferbridge.observability.logs import PRINCIPAL
from inferbridge.observability.logs import PRINCIPAL_HEADER as LOGGED_PRINCIPAL_HEADER
from inferbridge.security.authority import REFUSAL, Authority, Credentials, Denial
from inferbridge.security.classify import classify_http
from inferbridge.security.tls import scope_peer_common_name

__all__ = ["PRINCIPAL_HEADER", "AuthMiddleware", "denial_response"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[None]]

PRINCIPAL_HEADER = LOGGED_PRINCIPAL_HEADER.encode()


def denial_response(denial: Denial) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of a refusal."""
    body = orjson.dumps({"error": denial.message})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    challenge = denial.www_authenticate
    if challenge is not None:
        headers.append((b"www-authenticate", challenge.encode()))
    if denial.retry_after is not None:
        headers.append((b"retry-after", b"%d" % denial.retry_after))
    return denial.status, headers, body


class AuthMiddleware:
    """Checks each HTTP request with `authority` before `app` sees it."""

    def __init__(self, app: ASGIApp, authority: Authority, default_model: str) -> None:
        self.app = app
        self.authority = authority
        self.default_model = default_model

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = api_key = b""
        repeated = ""
        headers: list[tuple[bytes, bytes]] = []
        for name, value in scope["headers"]:
            if name == PRINCIPAL_HEADER:
                continue  # only this server says who the principal is
            if name == b"authorization":
                repeated = repeated or ("Authorization header" if authorization else "")
                authorization = authorization or value
            elif name == b"x-api-key":
                repeated = repeated or ("x-api-key header" if api_key else "")
                api_key = api_key or value
            headers.append((name, value))
        action = classify_http(
            scope["method"], scope["path"], scope.get("query_string", b""), self.default_model
        )
        answer = self.authority.check(
            Credentials(
                authorization=authorization.decode("latin-1"),
                api_key=api_key.decode("latin-1"),
                cert_subject=scope_peer_common_name(scope),
                repeated=repeated,
            ),
            action,
        )
        if isinstance(answer, Denial):
            PRINCIPAL.set(answer.principal)
            REFUSAL.set(answer.reason)
            status, response_headers, body = denial_response(answer)
            await send(
                {"type": "http.response.start", "status": status, "headers": response_headers}
            )
            await send({"type": "http.response.body", "body": body})
            return
        PRINCIPAL.set(answer.name)
        if answer.name:
            headers.append((PRINCIPAL_HEADER, answer.name.encode()))
        await self.app({**scope, "headers": headers}, receive, send)
