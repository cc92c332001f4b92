"""What agents report about their nodes, in memory: the `Observed` state of one node,
taken from its heartbeats (heartbeat intake) or from another replica's published record
of it (a relayed observation), and the parsing of both.

Nothing here touches the store or the event loop's tasks; the control plane decides what
a change means (liveness, a reconciliation pass, publishing it for the other replicas).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from inferbridge.fleet.conditions import ServerWatch
from inferbridge.fleet.errors import InvalidSpec
from inferbridge.fleet.reconciler import ModelObservation, VersionFigures

__all__ = [
    "EVENTS_KEPT",
    "Observed",
    "parse_figures",
    "parse_models",
    "parse_version_stats",
    "stats_record",
]

#: Events kept per node (the latest ones).
EVENTS_KEPT = 50
MODEL_STATES = {"DOWNLOADING", "VERIFYING", "LOADING", "READY", "FAILED", "UNLOADING"}


@dataclass
class Observed:
    """What the latest heartbeats of one node said (memory only)."""

    last_seen: float
    interval_s: float
    ready: bool = True
    ready_since: float = 0.0
    heartbeats: int = 0
    server: dict[str, Any] = field(default_factory=dict)
    models: dict[str, ModelObservation] = field(default_factory=dict)
    #: Per model, the reported version's request counters (when the agent sends them).
    figures: dict[str, VersionFigures] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    disk: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Its agent heartbeats to this replica (with several replicas on etcd).
    direct: bool = False
    #: Else the replica whose published record this copy follows ("" when none does).
    relayed_by: str = ""
    published_at: float = 0.0
    #: Whether its server is down, and since when (the ServerDown condition).
    server_watch: ServerWatch = field(default_factory=ServerWatch)

    @property
    def server_ready(self) -> bool:
        return bool(self.server.get("ready"))

    @property
    def schedulable(self) -> bool:
        """Heartbeats arrive, and its server has not been down past its grace period:
        what the reconciler counts as a Ready node."""
        return self.ready and self.server_watch.usable

    def take_heartbeat(self, body: dict[str, Any], now: float) -> bool:
        """Take one heartbeat's report (checked whole before anything changes); answers
        whether the models or the server's readiness changed."""
        models = parse_models(body.get("models", []))
        figures = parse_figures(body.get("models", []))
        for model, seen in parse_version_stats(body.get("version_stats"), models).items():
            figures.setdefault(model, seen)
        server = body.get("server") or {}
        if not isinstance(server, dict):
            raise InvalidSpec("heartbeat: 'server' must be an object")
        changed = models != self.models or bool(server.get("ready")) != self.server_ready
        self.last_seen = now
        self.heartbeats += 1
        self.server = server
        self.models = models
        self.figures = figures
        self.metrics = body.get("metrics") or {}
        self.disk = body.get("disk") or {}
        for event in body.get("events") or []:
            if isinstance(event, dict):
                self.events.append(event)
        del self.events[:-EVENTS_KEPT]
        return changed

    def take_record(self, record: dict[str, Any], by: str, now: float) -> bool:
        """Follow another replica's published record of the node (`record_of`); answers
        whether the models or the server's readiness changed. Raises InvalidSpec, and
        changes nothing, when the record is malformed."""
        models = parse_models(record.get("models", []))
        figures = parse_figures(record.get("models", []))
        before = (self.models, self.server_ready)
        self.direct, self.relayed_by = False, by
        self.last_seen = now
        self.interval_s = float(record.get("interval_s", self.interval_s))
        self.server = dict(record.get("server") or {})
        self.models = models
        self.figures = figures
        self.metrics = dict(record.get("metrics") or {})
        self.disk = dict(record.get("disk") or {})
        self.events = list(record.get("events") or [])
        return before != (self.models, self.server_ready)

    def record_of(self, by: str, published_at: float) -> dict[str, Any]:
        """The record a replica publishes of a node its agent talks to."""
        return {
            "by": by,
            "ready": self.ready,
            "interval_s": self.interval_s,
            "server": self.server,
            "models": [
                {"model": m, **o.as_record(), **stats_record(self.figures, m)}
                for m, o in sorted(self.models.items())
            ],
            "metrics": self.metrics,
            "disk": self.disk,
            "events": self.events[-10:],
            "published_at": published_at,
        }


def parse_figures(raw: Any) -> dict[str, VersionFigures]:
    """The optional `stats` of each model entry: the `inference_stats` of Triton's
    statistics document for the reported version, `{"success": {"count", "ns"}, "fail":
    {"count", ...}}` (what a wave's in-server analysis judges)."""
    figures = {}
    for item in raw:
        stats = item.get("stats")
        if stats is None:
            continue
        try:
            success, fail = stats["success"], stats["fail"]
            figures[item["model"]] = VersionFigures(
                int(item.get("version", 0)),
                int(success["count"]),
                int(success["ns"]),
                int(fail["count"]),
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidSpec(
                f"heartbeat: model {item['model']!r}: 'stats' must be "
                '{"success": {"count": N, "ns": N}, "fail": {"count": N, ...}} '
                "(the inference_stats of /v2/models/{m}/versions/{v}/stats)"
            ) from None
    return figures


def parse_version_stats(raw: Any, models: dict[str, ModelObservation]) -> dict[str, VersionFigures]:
    """The Go agent's `version_stats`: `[{"model", "version", "success", "fail",
    "success_ns", "fail_ns"}, ...]` for every version its server reports (read from
    /v2/models/stats every --figures-every); the entry of each model's reported version
    is that model's figures."""
    if raw is None:
        return {}
    problem = (
        "heartbeat: 'version_stats' must be a list of "
        '{"model": str, "version": int, "success": N, "fail": N, "success_ns": N}'
    )
    if not isinstance(raw, list):
        raise InvalidSpec(problem)
    figures = {}
    for item in raw:
        try:
            model, version = item["model"], int(item["version"])
            seen = VersionFigures(
                version, int(item["success"]), int(item["success_ns"]), int(item["fail"])
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidSpec(problem) from None
        observed = models.get(model) if isinstance(model, str) else None
        if observed is not None and observed.version == version:
            figures[model] = seen
    return figures


def stats_record(figures: dict[str, VersionFigures], model: str) -> dict[str, Any]:
    seen = figures.get(model)
    if seen is None:
        return {}
    return {
        "stats": {
            "success": {"count": seen.success, "ns": seen.success_ns},
            "fail": {"count": seen.fail},
        }
    }


def parse_models(raw: Any) -> dict[str, ModelObservation]:
    if not isinstance(raw, list):
        raise InvalidSpec("heartbeat: 'models' must be a list")
    models = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("model"), str):
            raise InvalidSpec("heartbeat: each model needs 'model', 'version' and 'state'")
        state = str(item.get("state", "")).upper()
        if state not in MODEL_STATES:
            raise InvalidSpec(
                f"heartbeat: model state {state!r} is not one of {sorted(MODEL_STATES)}"
            )
        try:
            version = int(item.get("version", 0))
        except (TypeError, ValueError):
            raise InvalidSpec("heartbeat: model 'version' must be an integer") from None
        models[item["model"]] = ModelObservation(version, state, str(item.get("reason", "")))
    return models
