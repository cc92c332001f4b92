"""REST routes of Triton's extensions: system (and CUDA) shared memory, logging, trace
settings. Each route names its methods and a handler from (dataplane, JSON body) to the
JSON answer; the app checks the method and reads the body."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.errors import InvalidInput
from inferbridge.observability.logs import LOG_SETTINGS
from inferbridge.observability.trace_settings import settings_of
from inferbridge.protocol.shared_memory import CUDA_UNSUPPORTED

__all__ = ["Route", "route"]

Handler = Callable[[DataPlane, dict[str, Any] | None], Any]


@dataclass(frozen=True, slots=True)
class Route:
    methods: tuple[str, ...]
    handler: Handler


def route(parts: list[str]) -> Route | None:
    """The extension route for a path after /v2, or None."""
    if not parts:
        return None
    head = parts[0]
    if head == "systemsharedmemory":
        return _shared_memory_route(parts[1:])
    if head == "cudasharedmemory":
        return _cuda_route(parts[1:])
    if parts == ["logging"]:
        return Route(("GET", "POST"), _logging)
    if parts == ["trace", "setting"]:
        return Route(("GET", "POST"), _trace(None))
    if len(parts) == 4 and head == "models" and parts[2:] == ["trace", "setting"]:
        return Route(("GET", "POST"), _trace(parts[1]))
    return None


def _region_action(parts: list[str]) -> tuple[str, str] | None:
    """(region name or "", action) of [region/{name}/]{status,register,unregister}."""
    if len(parts) == 1:
        return "", parts[0]
    if len(parts) == 3 and parts[0] == "region" and parts[1]:
        return parts[1], parts[2]
    return None


def _shared_memory_route(parts: list[str]) -> Route | None:
    found = _region_action(parts)
    if found is None:
        return None
    name, action = found
    if action == "status":
        return Route(("GET",), lambda dp, _: [s.to_json() for s in dp.shared_memory.status(name)])
    if action == "register" and name:
        return Route(("POST",), lambda dp, body: _register(dp, name, body or {}))
    if action == "unregister":
        return Route(("POST",), lambda dp, _: _unregister(dp, name))
    return None


def _register(dp: DataPlane, name: str, body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - {"key", "offset", "byte_size"})
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {unknown} in the register request; expected key, offset, byte_size"
        )
    key = body.get("key")
    if not isinstance(key, str):
        raise InvalidInput("the register request needs a string 'key'")
    offset: Any = body.get("offset", 0)
    byte_size: Any = body.get("byte_size")
    dp.shared_memory.register(name, key, offset, byte_size)
    return {}


def _unregister(dp: DataPlane, name: str) -> dict[str, Any]:
    dp.shared_memory.unregister(name)
    return {}


def _cuda_route(parts: list[str]) -> Route | None:
    found = _region_action(parts)
    if found is None:
        return None
    name, action = found
    if action == "status":
        # Nothing can be registered: the list of regions is empty (one named region is not).
        return Route(("GET",), lambda dp, _: _no_cuda() if name else [])
    if action == "register" and name:
        return Route(("POST",), lambda dp, _: _no_cuda())
    if action == "unregister":
        return Route(("POST",), lambda dp, _: _no_cuda() if name else {})
    return None


def _no_cuda() -> Any:
    raise InvalidInput(CUDA_UNSUPPORTED)


def _logging(dp: DataPlane, body: dict[str, Any] | None) -> Any:
    if body is None:
        return LOG_SETTINGS.current()
    return LOG_SETTINGS.update(body)


def _trace(model: str | None) -> Handler:
    def handle(dp: DataPlane, body: dict[str, Any] | None) -> Any:
        settings = settings_of(dp.tracing)
        if body is None:
            return settings.current(model)
        return settings.update(body, model)

    return handle
