"""JWT verification (PyJWT): HS256 with a shared secret file, RS256 / ES256 (P-256) with
the keys of a JWKS file matched by `kid`. Algorithms are pinned per key: a token's `alg`
picks the key kind, never the other way round, so an RSA public key can never be used as
an HMAC secret, and `none` is refused.

Messages never carry the token or any part of it.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from inferbridge.security.scopes import ScopeSet
from inferbridge.security.watched import WatchedFile

__all__ = [
    "JWKSError",
    "JwtVerifier",
    "TokenRefused",
    "looks_like_jwt",
    "JwksKey",
    "parse_jwks",
    "read_hs256_secret",
    "watch_jwks",
]

MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048  # as the Go front end's (internal/auth/jwt.go)
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]*$")
# The same reasons as the Go front-end process's (internal/auth/jwt.go).
#: Verified tokens remembered (then the memory starts again).
_CACHED_TOKENS = 4096
_NO_KEY = "no key of the JWKS file has its kid and algorithm"
_NO_SUBJECT = "it has no sub claim (the principal)"
_ISSUER = "its issuer (iss) is not the one this server accepts"
_ALGORITHM_NAME = re.compile(r"^[A-Za-z0-9+-]{1,16}$")
_ALGORITHM_OF_KIND = {"RSA": "RS256", "EC": "ES256"}


class TokenRefused(Exception):
    """The token does not verify; `message` says why without quoting it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JWKSError(ValueError):
    """The JWKS document is not valid; the message names the key's index and field."""


def looks_like_jwt(credential: str) -> bool:
    """Three dot-separated base64url parts (the last may be empty, as in `alg: none`)."""
    return _JWT_SHAPE.match(credential) is not None


def read_hs256_secret(path: Path) -> bytes:
    """The shared secret: the file's bytes less one trailing newline, at least 32 bytes."""
    data = path.read_bytes()
    if data.endswith(b"\n"):
        data = data[:-1]
    if len(data) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the HS256 secret has {len(data)} bytes; at least {MIN_SECRET_BYTES} "
            "are needed (e.g. `head -c 48 /dev/urandom | base64 > FILE`)"
        )
    return data


@dataclass(frozen=True, slots=True)
class JwksKey:
    algorithm: str
    key: Any  # the public key object PyJWT verifies with


def watch_jwks(
    path: Path, clock: Callable[[], float] | None = None
) -> WatchedFile[dict[str, JwksKey]]:
    """The JWKS file, re-read when it changes; raises OSError or JWKSError."""
    if clock is None:
        return WatchedFile(path, parse_jwks, what="JWKS file")
    return WatchedFile(path, parse_jwks, what="JWKS file", clock=clock)


def parse_jwks(data: bytes) -> dict[str, JwksKey]:
    """The signing keys of a JWKS document by kid (RSA -> RS256, EC P-256 -> ES256;
    encryption keys, `use: enc`, are skipped)."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JWKSError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSError('expected a JWKS document: {"keys": [...]}')
    keys: dict[str, JwksKey] = {}
    for index, jwk in enumerate(document["keys"]):
        where = f"keys[{index}]"
        if not isinstance(jwk, dict):
            raise JWKSError(f"{where}: a key must be a JSON object")
        if jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise JWKSError(f"{where}.kid: missing (tokens are matched to keys by kid)")
        kind = jwk.get("kty")
        algorithm = _ALGORITHM_OF_KIND.get(kind) if isinstance(kind, str) else None
        if algorithm is None:
            raise JWKSError(f"{where}.kty: {kind!r} is not RSA or EC (P-256)")
        if kind == "EC" and jwk.get("crv") != "P-256":
            raise JWKSError(f"{where}.crv: {jwk.get('crv')!r}; only P-256 (ES256) is accepted")
        if jwk.get("alg", algorithm) != algorithm:
            raise JWKSError(
                f"{where}.alg: {jwk.get('alg')!r} does not go with kty {kind} ({algorithm})"
            )
        if kid in keys:
            raise JWKSError(f"{where}.kid: '{kid}' is already the kid of another key")
        try:
            public = jwt.PyJWK(jwk, algorithm).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise JWKSError(f"{where}: not a valid {kind} key ({exc})") from None
        bits = getattr(public, "key_size", MIN_RSA_BITS) if kind == "RSA" else MIN_RSA_BITS
        if bits < MIN_RSA_BITS:
            raise JWKSError(
                f"{where}: not a valid RSA key (the RSA modulus has {bits} bits; at least "
                f"{MIN_RSA_BITS} are needed)"
            )
        keys[kid] = JwksKey(algorithm, public)
    return keys


class JwtVerifier:
    """Verifies bearer JWTs: signature, `exp` (required), `nbf` (when present), `iss` and
    `aud` (when configured), and `sub` (required: the principal)."""

    def __init__(
        self,
        *,
        hs256_secret: bytes | None = None,
        jwks: WatchedFile[dict[str, JwksKey]] | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 30.0,
    ) -> None:
        """`hs256_secret` from read_hs256_secret, `jwks` a watched parse_jwks (see
        `watch_jwks`): the caller loads them, so that it can say which setting is bad."""
        if hs256_secret is None and jwks is None:
            raise ValueError("a JWT verifier needs an HS256 secret or a JWKS file")
        self._secret = hs256_secret
        self._jwks = jwks
        self._issuer = issuer or None
        self._audience = audience or None
        self._leeway_s = leeway_s
        accepted = (["HS256"] if hs256_secret is not None else []) + (
            ["RS256", "ES256"] if jwks is not None else []
        )
        self._accepted = ", ".join(accepted)
        # Verified tokens until their exp: a signature check costs ~100 us a request.
        self._verified: dict[str, tuple[str, ScopeSet, float]] = {}
        self._cache_version = 0

    def verify(self, token: str) -> tuple[str, ScopeSet]:
        """The token's subject and scopes; TokenRefused says why it does not verify."""
        # A JWKS file that changed empties the cache (a key taken out stops its tokens).
        version = 0
        if self._jwks is not None:
            self._jwks.current()  # looks at the file, at most once a second
            version = self._jwks.version
        if version != self._cache_version:
            self._verified.clear()
            self._cache_version = version
        cached = self._verified.get(token)
        if cached is not None:
            subject, scopes, expires = cached
            if time.time() < expires + self._leeway_s:  # as PyJWT's exp check
                return subject, scopes
            del self._verified[token]
        subject, scopes, expires = self._verify(token)
        if len(self._verified) >= _CACHED_TOKENS:
            self._verified.clear()  # simpler than an LRU, and as safe: it only forgets
        self._verified[token] = (subject, scopes, expires)
        return subject, scopes

    def _verify(self, token: str) -> tuple[str, ScopeSet, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("it is malformed (not three base64url parts of JSON)") from None
        algorithm = header.get("alg")
        key: Any
        if algorithm == "HS256" and self._secret is not None:
            key = self._secret
        elif algorithm in ("RS256", "ES256") and self._jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise TokenRefused(
                    "it has no kid, and no key of the JWKS file without a kid can verify it"
                )
            found = self._jwks.current().get(kid)
            if found is None:
                raise TokenRefused(_NO_KEY)
            if found.algorithm != algorithm:
                raise TokenRefused(_NO_KEY)
            key = found.key
        else:
            raise TokenRefused(
                f"its signing algorithm (alg) {_algorithm_name(algorithm)} is not accepted "
                f"here (accepted: {self._accepted})"
            )
        claims = self._decode(token, key, algorithm)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenRefused(_NO_SUBJECT)
        # It becomes a log field and a header value: no control characters, a sane length.
        if len(subject.encode()) > 256 or any(unicodedata.category(c) == "Cc" for c in subject):
            raise TokenRefused("its sub claim has control characters or is over 256 bytes")
        return subject, ScopeSet.lenient(_scopes(claims)), float(claims["exp"])

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("it has expired (exp)") from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused("it is not valid yet (nbf)") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise TokenRefused(_audience(self._audience)) from None
            if exc.claim == "iss":
                raise TokenRefused(_ISSUER) from None
            if exc.claim == "sub":
                raise TokenRefused(_NO_SUBJECT) from None
            raise TokenRefused(f"it has no {exc.claim} claim") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused(_audience(self._audience)) from None
        except jwt.InvalidIssuerError:
            raise TokenRefused(_ISSUER) from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("its signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"it cannot be verified ({type(exc).__name__})") from None
        return claims


def _scopes(claims: dict[str, Any]) -> list[str]:
    """`scope` (space-separated, OAuth 2.0), or `scopes` / `scp` (lists; a string is split
    too, as some issuers send `scp` that way)."""
    scopes: list[str] = []
    for claim in ("scope", "scopes", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            scopes += value.split()
        elif isinstance(value, list):
            scopes += [s for s in value if isinstance(s, str)]
    return list(dict.fromkeys(scopes))


def _audience(audience: str | None) -> str:
    return f"its audience (aud) does not include '{audience}'"


def _algorithm_name(algorithm: object) -> str:
    """The `alg` header for a message when it looks like an algorithm's name (`none`,
    `HS512`), else a description: no message quotes free text from the token."""
    if isinstance(algorithm, str) and _ALGORITHM_NAME.match(algorithm):
        return f"'{algorithm}'"
    return "(missing)" if algorithm is None else "(not an algorithm name)"
