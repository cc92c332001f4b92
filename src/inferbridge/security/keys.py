"""The API keys file (YAML, strict): who may call, by the SHA-256 of their key or the
common name of their client certificate, with which scopes, until when, how fast.

```yaml
keys:
  - name: payments
    sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
    scopes: ["infer:fraud-*", read]
    expires: 2027-06-30T00:00:00Z
    rate: {per_second: 100, burst: 200}
  - name: batch
    subject: batch.internal
    scopes: ["infer:*"]
```
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from inferbridge.security.ratelimit import Rate, RateError
from inferbridge.security.scopes import ScopeError, ScopeSet, parse_scope

__all__ = [
    "KeyEntry",
    "KeysFile",
    "KeysFileError",
    "hash_key",
    "parse_expires",
    "parse_keys",
    "validate_name",
]

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = ("name", "sha256", "subject", "scopes", "expires", "rate")
_RATE_FIELDS = ("per_second", "burst")


class KeysFileError(ValueError):
    """The keys file is not valid; the message names the entry's index and field."""


def hash_key(key: str) -> str:
    """What the keys file stores for `key`: the lower-case hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One principal of the keys file; exactly one of `sha256` and `subject` is set."""

    name: str
    scopes: ScopeSet
    sha256: str | None = None
    subject: str | None = None
    expires: dt.datetime | None = None
    rate: Rate | None = None

    def expired(self, now: dt.datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True, slots=True)
class KeysFile:
    entries: tuple[KeyEntry, ...] = ()
    by_digest: dict[str, KeyEntry] = field(default_factory=dict)
    by_subject: dict[str, KeyEntry] = field(default_factory=dict)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping naming the same field twice (PyYAML keeps the
    last one silently, which would hide a mistake in a security file)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise KeysFileError(f"line {key_node.start_mark.line + 1}: field {key!r} appears twice")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_keys(data: bytes | str) -> KeysFile:
    """The keys file's entries; KeysFileError names what is wrong and where."""
    try:
        document = yaml.load(data, Loader=_StrictLoader)  # a SafeLoader: no tags run code
    except yaml.YAMLError as exc:
        raise KeysFileError(f"not valid YAML: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"keys"}:
        raise KeysFileError(
            "expected a mapping with one field, 'keys', a list of entries (name, sha256 or "
            "subject, scopes, and optionally expires and rate)"
        )
    listed = document["keys"]
    if listed is None:
        listed = []
    if not isinstance(listed, list):
        raise KeysFileError(f"'keys' must be a list of entries, got {type(listed).__name__}")
    entries: list[KeyEntry] = []
    by_name: dict[str, int] = {}
    by_digest: dict[str, KeyEntry] = {}
    by_subject: dict[str, KeyEntry] = {}
    for index, raw in enumerate(listed):
        entry = _entry(index, raw)
        where = f"keys[{index}]"
        if entry.name in by_name:
            raise KeysFileError(
                f"{where}.name: '{entry.name}' is already the name of keys[{by_name[entry.name]}]"
            )
        by_name[entry.name] = index
        where = f"keys[{index}] ('{entry.name}')"
        if entry.sha256 is not None:
            if entry.sha256 in by_digest:
                raise KeysFileError(
                    f"{where}.sha256: the same digest as entry '{by_digest[entry.sha256].name}'"
                )
            by_digest[entry.sha256] = entry
        if entry.subject is not None:
            if entry.subject in by_subject:
                raise KeysFileError(
                    f"{where}.subject: '{entry.subject}' is already the subject of entry "
                    f"'{by_subject[entry.subject].name}'"
                )
            by_subject[entry.subject] = entry
        entries.append(entry)
    return KeysFile(tuple(entries), by_digest, by_subject)


def _entry(index: int, raw: object) -> KeyEntry:
    where = f"keys[{index}]"
    if not isinstance(raw, dict):
        raise KeysFileError(f"{where}: an entry must be a mapping, got {type(raw).__name__}")
    unknown = [str(k) for k in raw if k not in _FIELDS]
    if unknown:
        raise KeysFileError(
            f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(_FIELDS)}"
        )
    if "name" not in raw:
        raise KeysFileError(f"{where}.name: missing (the principal's name)")
    try:
        name = validate_name(raw["name"])
    except ValueError as exc:
        raise KeysFileError(f"{where}.name: {exc}") from None
    where = f"keys[{index}] ('{name}')"
    digest, subject = raw.get("sha256"), raw.get("subject")
    if (digest is None) == (subject is None):
        raise KeysFileError(f"{where}: needs exactly one of sha256 (an API key) and subject (mTLS)")
    if digest is not None and not (isinstance(digest, str) and _DIGEST.match(digest)):
        raise KeysFileError(
            f"{where}.sha256: expected 64 lower-case hex digits (the SHA-256 of the key; "
            "`inferbridge auth hash` prints it)"
        )
    if subject is not None and not (isinstance(subject, str) and subject and subject.isprintable()):
        raise KeysFileError(f"{where}.subject: expected a client certificate's common name")
    if "scopes" not in raw:
        raise KeysFileError(f"{where}.scopes: missing (a list of scopes)")
    return KeyEntry(
        name=name,
        scopes=_scopes(where, raw["scopes"]),
        sha256=digest,
        subject=subject,
        expires=_expires(where, raw.get("expires")),
        rate=_rate(where, raw["rate"]) if "rate" in raw else None,
    )


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{name!r} is not 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'")
    return name


def _scopes(where: str, scopes: object) -> ScopeSet:
    if not isinstance(scopes, list):
        raise KeysFileError(f"{where}.scopes: expected a list of scopes, got {scopes!r}")
    for position, scope in enumerate(scopes):
        try:
            parse_scope(scope)
        except ScopeError as exc:
            raise KeysFileError(f"{where}.scopes[{position}]: {exc}") from None
    return ScopeSet(scopes)


def parse_expires(value: object) -> dt.datetime:
    """An RFC 3339 date-time with a time zone (YAML reads one as a datetime already)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an RFC 3339 date-time (e.g. 2027-06-30T00:00:00Z)"
            ) from None
    if not isinstance(value, dt.datetime):
        raise ValueError(
            f"{value!r} is not an RFC 3339 date-time with a time (e.g. 2027-06-30T00:00:00Z)"
        )
    if value.tzinfo is None:
        raise ValueError(f"'{value.isoformat()}' has no time zone (end it with Z or +hh:mm)")
    return value


def _expires(where: str, value: object) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_expires(value)
    except ValueError as exc:
        raise KeysFileError(f"{where}.expires: {exc}") from None


def _rate(where: str, value: object) -> Rate:
    if not isinstance(value, dict):
        raise KeysFileError(f"{where}.rate: expected {{per_second: N, burst: M}}, got {value!r}")
    unknown = [str(k) for k in value if k not in _RATE_FIELDS]
    if unknown:
        raise KeysFileError(
            f"{where}.rate: unknown field(s) {', '.join(unknown)}; expected per_second, burst"
        )
    per_second, burst = value.get("per_second"), value.get("burst")
    if isinstance(per_second, bool) or not isinstance(per_second, int | float):
        raise KeysFileError(f"{where}.rate.per_second: expected a number > 0, got {per_second!r}")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)):
        raise KeysFileError(f"{where}.rate.burst: expected a whole number >= 1, got {burst!r}")
    try:
        return Rate.of(float(per_second), burst)
    except RateError as exc:
        raise KeysFileError(f"{where}.rate: {exc}") from None
