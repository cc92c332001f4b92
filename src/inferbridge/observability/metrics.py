"""Prometheus metrics: one registry built at start-up, read at scrape time.

Nothing here runs per request. The model families come from the dataplane's lock-free
`VersionStats` (`DataPlane.version_reports()`), read when Prometheus scrapes; the front-end
families come from the Go gateway (pulled over its socket) or, on the Python fallback front
ends, from `FrontendCounters`: plain integers and dicts that the front ends bump and the
collector reads. The answer to `/metrics` is this process's exposition followed by the
gateway's, with no family twice. A scrape copies the counters on the event loop (about
50 µs for 20 models) and writes the text in a worker thread (about 15 ms for 20 models with
prometheus_client's writer), so it never holds the loop for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from inferbridge.observability.frontend import FrontendCounters, ProtocolCounters
from inferbridge.observability.stats import FAILURE_REASONS

if TYPE_CHECKING:
    from inferbridge.dataplane.dataplane import DataPlane, VersionReport

__all__ = ["CONTENT_TYPE", "MODEL_STATES", "MetricsEndpoint", "serve_metrics"]

logger = logging.getLogger(__name__)

#: The text exposition format both producers write (Prometheus 2.x scrapes it natively).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Values of the `state` label of inferbridge_model_state.
MODEL_STATES = ("loading", "ready", "unavailable", "draining")
_MV = ("model", "version")


@dataclass(frozen=True, slots=True)
class _Row:
    """A copy of one model version's counters, taken on the event loop (cheap), so that
    the families can be built and written in another thread."""

    model: str
    version: str
    state: str
    served: bool  # False: not serving (loading, failed): only its state is reported
    queued: int = 0
    inflight: int = 0
    success: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    inferences: int = 0
    executions: int = 0
    last_ms: int = 0
    #: (bounds, per-bucket counts, sum) of the six histograms; empty when not kept.
    histograms: tuple[tuple[tuple[float, ...], list[int], float], ...] = ()


def _row(report: VersionReport) -> _Row:
    stats = report.stats
    if stats is None:
        return _Row(report.model, report.version, report.state, served=False)
    histograms: tuple[tuple[tuple[float, ...], list[int], float], ...] = ()
    if stats.histograms:
        histograms = tuple(
            (h.bounds, list(h.counts), h.sum)
            for h in (
                stats.request_s,
                stats.queue_s,
                stats.compute_input_s,
                stats.compute_infer_s,
                stats.compute_output_s,
                stats.batch_size,
            )
        )
    return _Row(
        report.model,
        report.version,
        report.state,
        served=True,
        queued=report.queued,
        inflight=report.inflight,
        success=stats.success.count,
        failures=dict(stats.failures),
        inferences=stats.inference_count,
        executions=stats.execution_count,
        last_ms=stats.last_inference_ms,
        histograms=histograms,
    )


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """(upper bound, cumulative count) pairs as Prometheus writes them, +Inf last."""
    total = 0
    pairs: list[tuple[str, float]] = []
    for bound, count in zip(bounds, counts, strict=False):
        total += count
        pairs.append((repr(float(bound)), total))
    pairs.append(("+Inf", sum(counts)))
    return pairs


class _ModelCollector(Collector):
    """The per model version families, from `DataPlane.version_reports()` at scrape time."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    def snapshot(self) -> list[_Row]:
        """The counters as they are now (on the event loop: nothing else writes them)."""
        return [_row(report) for report in self._dataplane.version_reports()]

    def collect(self) -> Iterator[Metric]:
        return iter(_model_families(self.snapshot()))


def _model_families(rows: Iterable[_Row]) -> list[Metric]:
    counter, gauge, hist = CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    success = counter(
        "inferbridge_request_success", "Inference requests that succeeded.", labels=_MV
    )
    failure = counter(
        "inferbridge_request_failure",
        "Inference requests that failed, by reason (rejected: queue full, 429; canceled; "
        "timeout; invalid; backend).",
        labels=(*_MV, "reason"),
    )
    inferences = counter(
        "inferbridge_inference_count", "Rows inferred (a batch of n rows counts n).", labels=_MV
    )
    executions = counter("inferbridge_execution_count", "Batches executed.", labels=_MV)
    pending = gauge("inferbridge_pending_requests", "Requests waiting in the queue.", labels=_MV)
    inflight = gauge(
        "inferbridge_inflight_requests",
        "Requests in the dataplane (queued or executing).",
        labels=_MV,
    )
    last = gauge(
        "inferbridge_last_inference_timestamp_seconds",
        "When the last batch finished (unix seconds; 0 before the first).",
        labels=_MV,
    )
    request = hist(
        "inferbridge_request_duration_seconds",
        "Inference request duration in the dataplane, queue and compute included.",
        labels=_MV,
    )
    queue = hist(
        "inferbridge_queue_duration_seconds", "Time a request waited in the queue.", labels=_MV
    )
    c_input = hist(
        "inferbridge_compute_input_duration_seconds",
        "Batch input preparation (joining the requests' tensors).",
        labels=_MV,
    )
    c_infer = hist(
        "inferbridge_compute_infer_duration_seconds", "Batch model execution.", labels=_MV
    )
    c_output = hist(
        "inferbridge_compute_output_duration_seconds",
        "Batch output handling (splitting it to the requests).",
        labels=_MV,
    )
    batch = hist("inferbridge_batch_size", "Rows per executed batch.", labels=_MV)
    state = gauge(
        "inferbridge_model_state",
        "1 for the model version's current state, 0 for the others.",
        labels=(*_MV, "state"),
    )
    for row in rows:
        labels = [row.model, row.version]
        for name in MODEL_STATES:
            state.add_metric([*labels, name], 1.0 if name == row.state else 0.0)
        if not row.served:
            continue
        success.add_metric(labels, row.success)
        for reason in (*FAILURE_REASONS, *sorted(set(row.failures) - set(FAILURE_REASONS))):
            failure.add_metric([*labels, reason], row.failures.get(reason, 0))
        inferences.add_metric(labels, row.inferences)
        executions.add_metric(labels, row.executions)
        pending.add_metric(labels, row.queued)
        inflight.add_metric(labels, row.inflight)
        last.add_metric(labels, row.last_ms / 1000.0)
        families = (request, queue, c_input, c_infer, c_output, batch)
        for family, (bounds, counts, total) in zip(families, row.histograms, strict=False):
            family.add_metric(labels, _cumulative(bounds, counts), total)
    return [
        success,
        failure,
        inferences,
        executions,
        pending,
        inflight,
        last,
        request,
        queue,
        c_input,
        c_infer,
        c_output,
        batch,
        state,
    ]


# -- the endpoint ----------------------------------------------------------------------------

#: Pulls another process's exposition (the gateway's); b"" when it has none to give.
MetricsSource = Callable[[], Awaitable[bytes]]


class MetricsEndpoint:
    """What `/metrics` answers: this process's registry, then the gateway's text."""

    def __init__(self, dataplane: DataPlane) -> None:
        # Registries of our own, never prometheus_client's global one: nothing registers
        # at import, and two servers in one process (tests) do not collide.
        self._models = _ModelCollector(dataplane)
        self._dataplane = dataplane
        #: The process collectors (CPU, memory, fds, GC); safe to read from any thread.
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        #: The protocols this process serves itself (None while the gateway serves all).
        self.frontend: FrontendCounters | None = None
        #: Where the gateway's exposition comes from, when the gateway is in use.
        self.source: MetricsSource | None = None

    def serve_protocol(self, protocol: str) -> ProtocolCounters:
        """The counters a Python front end serving `protocol` ("http", "grpc") bumps."""
        if self.frontend is None:
            self.frontend = FrontendCounters(())
        return self.frontend.protocols.setdefault(protocol, ProtocolCounters())

    async def render(self) -> bytes:
        """The whole server's exposition (text format 0.0.4).

        The counters are copied on the event loop (tens of microseconds); building and
        writing the text (milliseconds with many models) happens in a worker thread, so a
        scrape does not stall the requests being served."""
        rows = self._models.snapshot()
        release = getattr(self._dataplane, "release", None)  # None: no rollouts here
        rollouts: list[Metric] = []
        if release is not None and release.reports():
            from inferbridge.release.metrics import rollout_families

            rollouts = rollout_families(release.reports())
        local = list(self.frontend.collect()) if self.frontend is not None else []
        pulled = await self.source() if self.source is not None else b""
        return await asyncio.to_thread(self._format, rows, local, pulled, rollouts)

    def _format(
        self, rows: list[_Row], local: list[Metric], pulled: bytes, rollouts: list[Metric]
    ) -> bytes:
        ours = generate_latest(_Fixed([*_model_families(rows), *rollouts]))
        ours += generate_latest(self.registry)
        if not local:
            # The gateway serves every protocol: its families and ours never share a name.
            return ours + pulled
        if not pulled:
            return ours + generate_latest(_Fixed(local))
        assert self.frontend is not None
        return ours + generate_latest(_Fixed(_merged(set(self.frontend.protocols), local, pulled)))


class _Fixed(Collector):
    def __init__(self, metrics: Sequence[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def _merged(served_here: set[str], local: list[Metric], pulled: bytes) -> list[Metric]:
    """The gateway's families with ours folded in, for when both count front-end traffic
    (the gateway serves gRPC, uvicorn REST): in each shared family the gateway's samples of
    the protocols served here (its idle zeros) give way to ours."""
    ours = {(m.name, m.type): m for m in local}
    merged: list[Metric] = []
    for family in text_string_to_metric_families(pulled.decode("utf-8", "replace")):
        mine = ours.pop((family.name, family.type), None)
        if mine is not None:
            family.samples = [
                s for s in family.samples if s.labels.get("protocol") not in served_here
            ] + list(mine.samples)
        merged.append(family)
    return [*merged, *ours.values()]


# -- the separate metrics port ---------------------------------------------------------------


async def serve_metrics(endpoint: MetricsEndpoint, host: str, port: int) -> asyncio.Server:
    """A tiny HTTP/1.1 server answering only GET /metrics (everything else 404), on the
    running loop; port 0 picks a free one (see the returned server's sockets)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, header_block = head.decode("latin-1").partition("\r\n")
                method, _, target = request_line.partition(" ")
                path = target.split(" ", 1)[0].split("?", 1)[0]
                headers = header_block.lower()
                length = _content_length(headers)
                if length:
                    await reader.readexactly(length)
                if method in ("GET", "HEAD") and path.rstrip("/") == "/metrics":
                    status, kind, body = "200 OK", CONTENT_TYPE, await endpoint.render()
                else:
                    status, kind = "404 Not Found", "text/plain; charset=utf-8"
                    body = b"only GET /metrics is served on this port\n"
                close = "connection: close" in headers
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode()
                )
                if method != "HEAD":
                    writer.write(body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:  # one bad request must not stop the listener
            logger.exception("error serving the metrics port")
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)


def _content_length(headers: str) -> int:
    for line in headers.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip() == "content-length" and value.strip().isdigit():
            return int(value.strip())
    return 0
