"""`inferbridge auth new-key` (a fresh random key and its keys-file entry) and
`inferbridge auth hash` (the entry's sha256 of a key read from stdin)."""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Any

__all__ = ["new_key", "register", "run"]

#: The prefix of keys this command makes: greppable in a leaked log or a repository, and
#: never mistaken for a JWT (no dots).
KEY_PREFIX = "ib_"


def register(commands: Any) -> None:
    auth = commands.add_parser("auth", help="API keys for --auth-keys")
    sub = auth.add_subparsers(dest="auth_command", required=True)
    new = sub.add_parser(
        "new-key", help="print a fresh random API key (once) and its keys-file entry"
    )
    new.add_argument("--name", required=True, help="the principal: [A-Za-z0-9._-]{1,64}")
    new.add_argument(
        "--scope",
        action="append",
        required=True,
        help="a scope: infer, infer:<glob>, read, admin, agent (repeatable)",
    )
    new.add_argument("--expires", help="RFC 3339 date-time after which the key is refused")
    new.add_argument("--rate", help="the key's rate limit, RPS[:BURST]")
    sub.add_parser("hash", help="print the sha256 entry of a key read from stdin")


def run(options: argparse.Namespace) -> int:
    if options.auth_command == "hash":
        from inferbridge.security.keys import hash_key

        key = sys.stdin.readline().rstrip("\r\n")
        if not key:
            print("inferbridge auth hash: expected a key on stdin", file=sys.stderr)
            return 2
        print(hash_key(key))
        return 0
    try:
        key, entry = new_key(options.name, options.scope, options.expires, options.rate)
    except ValueError as exc:
        print(f"inferbridge auth new-key: {exc}", file=sys.stderr)
        return 2
    print("# the key (shown only now: the keys file keeps its SHA-256, not the key)")
    print(key)
    print("# its entry, to add under `keys:` in the keys file")
    print(entry, end="")
    return 0


def new_key(
    name: str, scopes: list[str], expires: str | None = None, rate: str | None = None
) -> tuple[str, str]:
    """A fresh key and its keys-file entry (YAML, a list item); ValueError names a bad
    argument. The entry is checked by parse_keys, so it loads as printed."""
    import orjson

    from inferbridge.security.keys import hash_key, parse_expires, parse_keys, validate_name
    from inferbridge.security.ratelimit import parse_rate
    from inferbridge.security.scopes import parse_scope

    try:
        validate_name(name)
    except ValueError as exc:
        raise ValueError(f"--name: {exc}") from None
    for scope in scopes:
        try:
            parse_scope(scope)
        except ValueError as exc:
            raise ValueError(f"--scope: {exc}") from None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    # JSON strings are YAML strings: quoting every value keeps `*` and `:` literal.
    lines = [
        f"  - name: {name}",
        f"    sha256: {hash_key(key)}",
        f"    scopes: [{', '.join(orjson.dumps(s).decode() for s in scopes)}]",
    ]
    if expires is not None:
        try:
            when = parse_expires(expires)
        except ValueError as exc:
            raise ValueError(f"--expires: {exc}") from None
        lines.append(f"    expires: {when.isoformat().replace('+00:00', 'Z')}")
    if rate is not None:
        try:
            parsed = parse_rate(rate)
        except ValueError as exc:
            raise ValueError(f"--rate: {exc}") from None
        lines.append(f"    rate: {{per_second: {parsed.per_second:g}, burst: {parsed.burst}}}")
    entry = "\n".join(lines) + "\n"
    parse_keys("keys:\n" + entry)  # what we print must load
    return key, entry
