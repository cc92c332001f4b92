"""The front ends' own metrics: counters that the Python front ends (uvicorn, grpc.aio)
bump when the Go gateway does not serve their protocol, and the route templates they are
labelled with (the same as the gateway's, go/internal/local/routes.go).

Plain integers and dicts, touched only on the event loop's thread: no lock and no
prometheus_client child lookup per request. `FrontendCounters` is the collector that turns
them into the `inferbridge_frontend_*` families at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from inferbridge.observability.stats import DURATION_BUCKETS_S, Histogram

__all__ = ["FrontendCounters", "ProtocolCounters", "http_route", "infer_model", "path_model"]


# -- the Python front ends' own counters (only when the gateway does not serve them) -------


class ProtocolCounters:
    """One protocol's front-end counters, bumped by the front end with plain arithmetic.

    `requests` and `rejected` are keyed by label tuples; everything is touched only on the
    event loop's thread, so nothing takes a lock, and no prometheus_client child is looked
    up per request."""

    __slots__ = (
        "connections",
        "connections_total",
        "duration",
        "inflight",
        "rejected",
        "request_bytes",
        "requests",
        "response_bytes",
    )

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}  # (route, code)
        self.rejected: dict[tuple[str, str], int] = {}  # (model, reason)
        self.inflight = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.duration = Histogram(DURATION_BUCKETS_S)
        self.connections: int | None = None  # None: this front end cannot see connections
        self.connections_total = 0

    def done(self, route: str, code: str, seconds: float) -> None:
        key = (route, code)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.duration.observe(seconds)

    def reject(self, model: str, reason: str) -> None:
        key = (model, reason)
        self.rejected[key] = self.rejected.get(key, 0) + 1


class FrontendCounters(Collector):
    """The `inferbridge_frontend_*` families of the protocols this process serves itself
    (uvicorn's HTTP, grpc.aio's gRPC): the same names and labels the gateway emits."""

    #: The families this collector produces (the gateway's of the same name are merged).
    FAMILIES = frozenset(
        {
            "inferbridge_frontend_requests",
            "inferbridge_frontend_rejected",
            "inferbridge_frontend_inflight_requests",
            "inferbridge_frontend_request_bytes",
            "inferbridge_frontend_response_bytes",
            "inferbridge_frontend_request_duration_seconds",
            "inferbridge_frontend_connections",
        }
    )

    def __init__(self, protocols: Iterable[str]) -> None:
        self.protocols: dict[str, ProtocolCounters] = {p: ProtocolCounters() for p in protocols}

    def collect(self) -> Iterator[Metric]:
        p = ("protocol",)
        requests = CounterMetricFamily(
            "inferbridge_frontend_requests",
            "Requests and calls finished by the front end, by templated route and status code.",
            labels=(*p, "route", "code"),
        )
        rejected = CounterMetricFamily(
            "inferbridge_frontend_rejected",
            'Requests the front end refused itself, by model ("" when none is known) and reason.',
            labels=(*p, "model", "reason"),
        )
        inflight = GaugeMetricFamily(
            "inferbridge_frontend_inflight_requests",
            "Requests and calls in progress in the front end.",
            labels=p,
        )
        req_bytes = CounterMetricFamily(
            "inferbridge_frontend_request_bytes",
            "Bytes of request bodies (HTTP) and request messages (gRPC) received.",
            labels=p,
        )
        resp_bytes = CounterMetricFamily(
            "inferbridge_frontend_response_bytes",
            "Bytes of response bodies (HTTP) and response messages (gRPC) sent.",
            labels=p,
        )
        duration = HistogramMetricFamily(
            "inferbridge_frontend_request_duration_seconds",
            "Time in the front end from a request read to its reply written.",
            labels=p,
        )
        conns = GaugeMetricFamily(
            "inferbridge_frontend_connections", "Open client connections.", labels=p
        )
        conns_total = CounterMetricFamily(
            "inferbridge_frontend_connections", "Client connections accepted.", labels=p
        )
        for name, c in self.protocols.items():
            for (route, code), count in list(c.requests.items()):
                requests.add_metric([name, route, code], count)
            for (model, reason), count in list(c.rejected.items()):
                rejected.add_metric([name, model, reason], count)
            inflight.add_metric([name], c.inflight)
            req_bytes.add_metric([name], c.request_bytes)
            resp_bytes.add_metric([name], c.response_bytes)
            duration.add_metric([name], c.duration.cumulative(), c.duration.sum)
            if c.connections is not None:
                conns.add_metric([name], c.connections)
                conns_total.add_metric([name], c.connections_total)
        yield from (requests, rejected, inflight, req_bytes, resp_bytes, duration)
        # A gauge and a counter share the stem `inferbridge_frontend_connections` (the
        # counter is exposed as ..._total), as the gateway's are.
        if conns.samples:
            yield conns
            yield conns_total


# -- route templates (the same as the gateway's, go/internal/local/routes.go) ------------------

_FIXED_ROUTES = frozenset(
    {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/stats",
        "/v2/repository/index",
        "/v2/logging",
        "/v2/trace/setting",
        "/metrics",
        "/predict",
    }
)
_MODEL_SUFFIXES = frozenset(
    {"", "/ready", "/config", "/stats", "/infer", "/generate", "/generate_stream", "/trace/setting"}
)
#: The last segments of the paths that run a model (the gateway's isInferSuffix).
_INFER_ACTIONS = frozenset({"infer", "generate", "generate_stream"})
_SHM_ACTIONS = frozenset({"status", "register", "unregister"})
_ROUTE_CACHE: dict[str, str] = {}
_ROUTE_CACHE_SIZE = 4096


def http_route(path: str) -> str:
    """The templated route of a request path, as the gateway labels it (bounded values:
    never a raw path). Cached per path, so the hot path costs one dict lookup."""
    route = _ROUTE_CACHE.get(path)
    if route is None:
        route = _template(path)
        if len(_ROUTE_CACHE) < _ROUTE_CACHE_SIZE:
            _ROUTE_CACHE[path] = route
    return route


def _template(path: str) -> str:
    path = path.rstrip("/")
    if path in _FIXED_ROUTES:
        return path
    if path.startswith("/v2/models/"):
        name, sep, rest = path[len("/v2/models/") :].partition("/")
        rest = sep + rest
        if not name:
            return "other"
        prefix = "/v2/models/{model}"
        if rest.startswith("/versions/"):
            version, sep, rest = rest[len("/versions/") :].partition("/")
            if not version:
                return "other"
            rest = sep + rest
            prefix += "/versions/{version}"
        if rest == "/trace/setting" and "{version}" in prefix:
            return "other"  # trace settings are per model, not per version
        return prefix + rest if rest in _MODEL_SUFFIXES else "other"
    for kind in ("systemsharedmemory", "cudasharedmemory"):
        prefix = f"/v2/{kind}/"
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if rest in _SHM_ACTIONS:
                return prefix + rest
            region, _, action = rest.removeprefix("region/").partition("/")
            if rest.startswith("region/") and region and action in _SHM_ACTIONS:
                return f"{prefix}region/{{region}}/{action}"
            return "other"
    if path.startswith("/v2/repository/models/"):
        name, _, action = path[len("/v2/repository/models/") :].partition("/")
        if name and action in ("load", "unload"):
            return f"/v2/repository/models/{{model}}/{action}"
        return "other"
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        name = path[len("/v1/models/") : -len(":predict")]
        return "/v1/models/{model}:predict" if name and "/" not in name else "other"
    for service in ("vision", "text"):
        prefix = f"/v1/{service}/"
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            return f"/v1/{service}/{{service}}" if rest and "/" not in rest else "other"
    return "other"


def infer_model(path: str) -> str:
    """The model of an infer path (/v2/models/{m}[/versions/{v}]/infer, or generate or
    generate_stream), else ""."""
    parts = path.rstrip("/").split("/")
    if (
        len(parts) not in (5, 7)
        or parts[1:3] != ["v2", "models"]
        or parts[-1] not in _INFER_ACTIONS
    ):
        return ""
    return parts[3] if len(parts) == 5 or parts[4] == "versions" else ""


def path_model(path: str) -> tuple[str, str]:
    """The model and version a REST path names (/v2/models/{m}[/versions/{v}]...,
    /v1/models/{m}:predict, /v2/repository/models/{m}/...), else ("", "")."""
    parts = path.rstrip("/").split("/")
    if len(parts) >= 4 and parts[1:3] == ["v2", "models"] and parts[3] != "stats":
        version = parts[5] if len(parts) >= 6 and parts[4] == "versions" else ""
        return parts[3], version
    if len(parts) == 6 and parts[1:4] == ["v2", "repository", "models"]:
        return parts[4], ""
    if len(parts) == 4 and parts[1:3] == ["v1", "models"]:
        return parts[3].removesuffix(":predict"), ""
    return "", ""
