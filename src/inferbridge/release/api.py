"""The rollout management API: JSON over HTTP under `/v1/rollouts`, transport-neutral.

    GET    /v1/rollouts                      every model's rollout (status)
    POST   /v1/rollouts                      start one: {"model": ..., <rollout spec>}
    GET    /v1/rollouts/{model}              status: step, weights, recent analyses, why
    DELETE /v1/rollouts/{model}              forget an ended rollout (back to version policy)
    GET    /v1/rollouts/{model}/history      the model's audit log
    POST   /v1/rollouts/{model}/approve      {"gate": ..., "who": ..., "comment": ...}
    POST   /v1/rollouts/{model}/pause        {"actor": ..., "reason": ...}
    POST   /v1/rollouts/{model}/resume       {"actor": ...}
    POST   /v1/rollouts/{model}/abort        {"actor": ..., "reason": ...}
    POST   /v1/rollouts/{model}/promote      {"actor": ...}
    GET    /v1/rollout-audit[?format=jsonl]  the whole audit log (JSON, or JSON lines); a
                                             prefix of its own, so any model name works above

Errors are the domain errors (400 bad spec, 404 unknown model or rollout, 409 wrong state),
mapped by the REST front end like every other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from inferbridge.errors import InvalidInput
from inferbridge.release.controller import RolloutController

__all__ = ["ApiResponse", "audit", "handle", "methods_for"]


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: bytes
    content_type: bytes = b"application/json"


class MethodNotAllowed(InvalidInput):
    """Answered 405 by the front end."""


_ACTIONS = ("approve", "pause", "resume", "abort", "promote")


def methods_for(parts: list[str]) -> tuple[str, ...]:
    """The methods a path under /v1/rollouts accepts (empty: no such path)."""
    if not parts:
        return ("GET", "POST")
    if len(parts) == 1:
        return ("GET", "DELETE")
    if len(parts) == 2 and parts[1] == "history":
        return ("GET",)
    if len(parts) == 2 and parts[1] in _ACTIONS:
        return ("POST",)
    return ()


async def handle(
    controller: RolloutController,
    method: str,
    parts: list[str],
    body: dict[str, Any] | None,
    query: bytes = b"",
) -> ApiResponse:
    """Serve one request; `parts` is the path below /v1/rollouts."""
    allowed = methods_for(parts)
    if not allowed:
        return _json(404, {"error": f"no route /v1/rollouts/{'/'.join(parts)}"})
    if method not in allowed:
        raise MethodNotAllowed(f"method {method} not allowed here; use {' or '.join(allowed)}")
    document = body or {}
    if not parts:
        if method == "GET":
            return _json(200, {"rollouts": controller.all()})
        spec = dict(document)
        model = spec.pop("model", None)
        actor = spec.pop("actor", "api")
        if not isinstance(model, str) or not model:
            raise InvalidInput("the request needs 'model': the name of the model to roll out")
        return _json(201, await controller.create(model, spec, _text(actor, "actor")))
    model = parts[0]
    if len(parts) == 1:
        if method == "GET":
            return _json(200, controller.status(model))
        return _json(200, await controller.clear(model, _actor(document)))
    action = parts[1]
    if action == "history":
        controller.status(model)  # 404 for a model with no rollout
        return _json(200, {"model": model, "events": controller.history(model)})
    _only(document, {"gate", "who", "comment"} if action == "approve" else {"actor", "reason"})
    if action == "approve":
        gate = document.get("gate")
        who = document.get("who")
        if not isinstance(gate, str) or not gate:
            raise InvalidInput("approve needs 'gate': the name of the approval gate")
        if not isinstance(who, str) or not who:
            raise InvalidInput("approve needs 'who': the name of the person approving")
        comment = _text(document.get("comment", ""), "comment")
        return _json(200, await controller.approve(model, gate, who, comment))
    actor = _actor(document)
    reason = _text(document.get("reason", ""), "reason")
    if action == "pause":
        return _json(200, await controller.pause(model, actor, reason))
    if action == "resume":
        return _json(200, await controller.resume_rollout(model, actor))
    if action == "abort":
        return _json(200, await controller.abort(model, actor, reason))
    return _json(200, await controller.promote(model, actor))


def audit(controller: RolloutController, query: bytes = b"") -> ApiResponse:
    """GET /v1/rollout-audit: every model's audit log, oldest first."""
    records = controller.history(None)
    if parse_qs(query.decode("latin-1")).get("format") == ["jsonl"]:
        lines = b"".join(orjson.dumps(r) + b"\n" for r in records)
        return ApiResponse(200, lines, b"application/x-ndjson")
    return _json(200, {"events": records})


def _json(status: int, document: Any) -> ApiResponse:
    return ApiResponse(status, orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS))


def _only(document: dict[str, Any], fields: set[str]) -> None:
    unknown = sorted(set(document) - fields)
    if unknown:
        raise InvalidInput(f"unknown field(s) {unknown}; expected {sorted(fields)}")


def _actor(document: dict[str, Any]) -> str:
    return _text(document.get("actor", "api"), "actor") or "api"


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) > 1000:
        raise InvalidInput(f"'{name}' must be a string of at most 1000 characters")
    return value
