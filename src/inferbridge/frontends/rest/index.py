"""The body of `POST /v2/repository/index`: `{"ready": <boolean>}`, or empty."""

from __future__ import annotations

import re

from inferbridge.errors import InvalidInput
from inferbridge.protocol.rest_codec import parse_json_body

__all__ = ["index_ready_only"]

_NOT_A_BOOLEAN = "Invalid value for 'ready': expected a boolean"
# An object whose 'ready' opens an array or object: whatever nests inside, not a boolean.
_READY_NESTS = re.compile(rb'\s*\{\s*"ready"\s*:\s*[\[{]')


def index_ready_only(body: bytes) -> bool:
    """Whether the index request asks for ready models only; refused as Triton refuses it
    (its phrase) when 'ready' is not a boolean, even one nested past the JSON parser's
    depth limit (Triton's QA sends 250,000 levels)."""
    if not body.strip():
        return False
    try:
        document = parse_json_body(body)
    except InvalidInput:
        if _READY_NESTS.match(body):
            raise InvalidInput(f"{_NOT_A_BOOLEAN}, got an array or object") from None
        raise
    if not isinstance(document, dict):
        raise InvalidInput(
            f"the index request must be a JSON object, got {type(document).__name__}"
        )
    ready = document.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput(f"{_NOT_A_BOOLEAN}, got {ready!r}")
    return ready
