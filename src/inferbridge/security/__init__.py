"""Authentication, authorization, rate limits and TLS (docs/security.md, issue #16).

The library: `Authority(AuthConfig.from_settings(settings)).check(credentials, action)`
answers a `Principal` or a `Denial`; `classify_http` / `classify_grpc` say what a request
needs. The front-end glue lives beside it (`asgi`, `interceptor`, `tls`).
"""

from __future__ import annotations

from inferbridge.security.authority import (
    ANONYMOUS,
    AuthConfig,
    AuthConfigError,
    Authority,
    Credentials,
    Denial,
    Principal,
)
from inferbridge.security.classify import classify_grpc, classify_http
from inferbridge.security.keys import KeysFileError, hash_key, parse_keys
from inferbridge.security.ratelimit import ModelRate, Rate, RateError, parse_model_rate, parse_rate
from inferbridge.security.scopes import Action, Kind, ScopeError, ScopeSet, glob_match

__all__ = [
    "ANONYMOUS",
    "Action",
    "AuthConfig",
    "AuthConfigError",
    "Authority",
    "Credentials",
    "Denial",
    "Kind",
    "KeysFileError",
    "ModelRate",
    "Principal",
    "Rate",
    "RateError",
    "ScopeError",
    "ScopeSet",
    "classify_grpc",
    "classify_http",
    "glob_match",
    "hash_key",
    "parse_keys",
    "parse_model_rate",
    "parse_rate",
]
