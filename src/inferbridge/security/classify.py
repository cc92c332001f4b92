"""What each request needs (docs/security.md, "What each request needs"): REST by path and
method, gRPC by full method name.

The REST path is split exactly as the REST app routes it (`RestApp._route`), and the
vision and text services' `?model=` is read exactly as `rest/services.py` reads it (the
last value wins), so the model checked is always the model served.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from inferbridge.security.scopes import Action, Kind

__all__ = ["SERVICE_DEFAULT_MODELS", "classify_grpc", "classify_http"]

#: The model behind each vision and text endpoint unless the request says `?model=`
#: (the same table as rest/services.py's DEFAULT_MODELS).
SERVICE_DEFAULT_MODELS: dict[tuple[str, str], str] = {
    ("vision", "faces"): "face_detection",
    ("vision", "classify"): "digits_classifier",
    ("vision", "detect"): "detection",
    ("text", "embed"): "text_embedding",
}

_HEALTH = Action(Kind.HEALTH)
_READ = Action(Kind.READ)
_ADMIN = Action(Kind.ADMIN)
_ANY = Action(Kind.ANY)
_SHARED_MEMORY = Action(Kind.SHARED_MEMORY)
_MODEL_READS = (["ready"], ["config"], ["stats"])
_INFERENCE = (["infer"], ["generate"], ["generate_stream"])


def classify_http(method: str, path: str, query_string: bytes | str, default_model: str) -> Action:
    """The action of a REST request (its path as the ASGI scope's `path`: decoded)."""
    parts = path.rstrip("/").split("/")[1:]
    if parts and parts[0] == "v2":
        return _v2(method, parts[1:])
    if parts[:2] == ["v1", "rollouts"]:
        return _READ if method == "GET" else _ADMIN
    if parts == ["v1", "rollout-audit"] or parts == ["metrics"]:
        return _READ
    if parts == ["predict"]:
        return Action(Kind.INFER, default_model)
    if len(parts) == 3 and parts[:2] == ["v1", "models"] and parts[2].endswith(":predict"):
        return Action(Kind.INFER, parts[2].removesuffix(":predict"))
    if len(parts) == 3 and parts[0] == "v1":
        default = SERVICE_DEFAULT_MODELS.get((parts[1], parts[2]))
        if default is not None:
            return Action(Kind.INFER, _query_model(query_string) or default)
    return _ANY


def _v2(method: str, parts: list[str]) -> Action:
    if not parts:
        return _READ
    head = parts[0]
    if head == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
        return _HEALTH
    if head == "repository":
        if parts[1:] == ["index"]:
            return _READ
        if len(parts) == 4 and parts[1] == "models" and parts[3] in ("load", "unload"):
            return _ADMIN
        return _ANY
    if head in ("systemsharedmemory", "cudasharedmemory"):
        return _SHARED_MEMORY
    if parts == ["logging"] or parts == ["trace", "setting"]:
        return _READ if method == "GET" else _ADMIN
    if parts == ["models", "stats"]:
        return _READ
    if head == "models" and len(parts) >= 2:
        name, rest = parts[1], parts[2:]
        if len(rest) >= 2 and rest[0] == "versions":
            rest = rest[2:]
        if not rest or rest in _MODEL_READS:
            return _READ
        if rest in _INFERENCE:
            return Action(Kind.INFER, name)
        if rest == ["trace", "setting"]:
            return _READ if method == "GET" else _ADMIN
    return _ANY


def _query_model(query_string: bytes | str) -> str:
    raw = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    values = parse_qs(raw).get("model")
    return values[-1] if values else ""


_GRPC_INFERENCE = "/inference.GRPCInferenceService/"
_GRPC_BY_NAME: dict[str, Action] = {
    "ServerLive": _HEALTH,
    "ServerReady": _HEALTH,
    "ServerMetadata": _READ,
    "ModelMetadata": _READ,
    "ModelReady": _READ,
    "ModelConfig": _READ,
    "ModelStatistics": _READ,
    "RepositoryIndex": _READ,
    "RepositoryModelLoad": _ADMIN,
    "RepositoryModelUnload": _ADMIN,
    "LogSettings": _ADMIN,
    "TraceSetting": _ADMIN,
}


def classify_grpc(full_method: str, model: str, default_model: str) -> Action:
    """The action of a gRPC call: `full_method` as `/package.Service/Method`, `model` the
    request's model_name (ModelInfer, every ModelStreamInfer message)."""
    if full_method.startswith("/grpc.health.v1.Health/"):
        return _HEALTH
    if full_method == "/ai.AIService/Predict":
        return Action(Kind.INFER, default_model)
    if not full_method.startswith(_GRPC_INFERENCE):
        return _ANY  # reflection and unknown services
    name = full_method[len(_GRPC_INFERENCE) :]
    if name in ("ModelInfer", "ModelStreamInfer"):
        return Action(Kind.INFER, model)
    if "SharedMemory" in name:
        return _SHARED_MEMORY
    return _GRPC_BY_NAME.get(name, _ANY)
