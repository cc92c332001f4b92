"""Run both front ends on one event loop over one dataplane, and drain on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.frontends.gateway.process import GatewayFrontend, security_flags
from inferbridge.frontends.grpc.errors import QUEUE_FULL_CODES
from inferbridge.frontends.rest.protocol import StrictHttpToolsProtocol
from inferbridge.models.manager import ControlMode, ModelManager
from inferbridge.models.requests import set_max_model_file_bytes
from inferbridge.observability.logs import AccessLog
from inferbridge.observability.metrics import MetricsEndpoint, serve_metrics
from inferbridge.observability.tracing import ASGIApp, TracingError, configure_tracing
from inferbridge.settings import Settings

if TYPE_CHECKING:
    from inferbridge.frontends.grpc.server import GrpcFrontend

__all__ = ["InferBridgeServer", "ListeningPorts", "run", "state_directory"]

logger = logging.getLogger(__name__)


def state_directory(settings: Settings, repository: Path) -> Path:
    """The server's durable state: `--state-dir`, else one directory per repository under
    $XDG_STATE_HOME/inferbridge (so a restart on the same repository finds its rollouts)."""
    if settings.state_dir is not None:
        return settings.state_dir
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(str(repository.resolve()).encode()).hexdigest()[:16]
    return base / "inferbridge" / f"{repository.resolve().name}-{digest}"


@dataclass(frozen=True, slots=True)
class ListeningPorts:
    http: int
    grpc: int


class InferBridgeServer:
    """One server: REST and gRPC (the Go gateway, or uvicorn and grpc.aio) over one dataplane."""

    def __init__(self, settings: Settings, repository: Path) -> None:
        """Raises AuthConfigError or TLSConfigError (naming the setting) when a security
        file does not load: before anything else starts."""
        from inferbridge.security.authority import AuthConfig, Authority
        from inferbridge.security.tls import TLSFiles, TLSReloader

        self.settings = settings
        self.repository = repository
        self.authority = Authority(AuthConfig.from_settings(settings))
        tls_files = TLSFiles.from_settings(settings)
        self.tls = TLSReloader(tls_files) if tls_files is not None else None
        self.tracing = configure_tracing(settings)  # None when off
        set_max_model_file_bytes(settings.max_model_file_bytes)
        self.models = ModelManager(
            repository,
            histograms=settings.metrics,
            drain_timeout_s=settings.shutdown_grace_s,
            tracer=self.tracing.batch_observer if self.tracing is not None else None,
        )
        self.dataplane = DataPlane(
            self.models,
            strict_readiness=settings.strict_readiness,
            control_mode=ControlMode(settings.model_control_mode),
            tracing=self.tracing,
            report_answers=settings.access_log,
        )
        from inferbridge.release.controller import RolloutController
        from inferbridge.release.store import RolloutStore

        self.rollouts = RolloutController(
            self.dataplane, RolloutStore(state_directory(settings, repository) / "rollouts.db")
        )
        self.dataplane.release = self.rollouts
        self.metrics = MetricsEndpoint(self.dataplane) if settings.metrics else None
        self.access_log = AccessLog() if settings.access_log else None
        self._stop = asyncio.Event()
        self.exit_code = 0

    async def serve(self) -> None:
        from inferbridge.frontends.rest.app import RestApp
        from inferbridge.models.watch import watch_repository

        s = self.settings
        rest: ASGIApp = RestApp(
            self.dataplane,
            max_body_bytes=s.max_request_bytes,
            default_model=s.default_model,
            metrics=self.metrics,
        )
        if self.tracing is not None:
            rest = self.tracing.asgi(rest)
        _warn_if_open(s)
        frontend = await self._frontend(rest)
        http_server: _QuietSignalsServer | None = None
        if isinstance(frontend, GatewayFrontend) and frontend.serves_rest:
            grpc_port = await frontend.start(s.host, s.grpc_port, s.http_port)
            assert frontend.http_port is not None
            ports = ListeningPorts(frontend.http_port, grpc_port)
            http_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        else:
            sock = _bind_tcp(s.host, s.http_port)
            if self.authority.limits_rates:
                from inferbridge.security.asgi import AuthMiddleware

                rest = AuthMiddleware(rest, self.authority, s.default_model)
            http_server = _QuietSignalsServer(self._observed_uvicorn(rest))
            ports = ListeningPorts(sock.getsockname()[1], await frontend.start(s.host, s.grpc_port))
            http_done = asyncio.ensure_future(http_server.serve(sockets=[sock]))
        scheme = "https" if self.tls is not None else "http"
        print(f"inferbridge: REST listening on {scheme}://{s.host}:{ports.http}", flush=True)
        print(f"inferbridge: gRPC listening on {s.host}:{ports.grpc}", flush=True)
        metrics_server = await self._metrics_listener(frontend)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)

        if isinstance(frontend, GatewayFrontend):
            gateway = frontend
            self.models.on_change(
                lambda: gateway.set_admission_limits(self.dataplane.admission_bounds())
            )
        self.rollouts.attach()
        await self.models.load_initial(self._initial_models())
        await self.rollouts.resume()
        self.dataplane.mark_loaded()
        # The loaded frameworks hold millions of long-lived objects; without this, every
        # full collection rescans them and shows up as tens of milliseconds of tail latency.
        gc.collect()
        gc.freeze()
        await frontend.set_serving(True)
        watch_stop = asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        if s.model_control_mode == "poll":
            watcher = asyncio.create_task(
                watch_repository(self.models, s.repository_poll_secs, watch_stop)
            )
        for line in _model_summary(self.dataplane):
            print(f"inferbridge: {line}", flush=True)
        print("inferbridge: serving", flush=True)

        stop_waiter = asyncio.create_task(self._stop.wait())
        waiters: set[asyncio.Future[Any]] = {http_done, stop_waiter}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        print("inferbridge: shutting down, finishing requests in flight", flush=True)
        watch_stop.set()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self.dataplane.draining = True
        await frontend.set_serving(False)
        if http_server is not None:
            http_server.should_exit = True
            await http_done
        else:
            http_done.cancel()
        await frontend.stop(s.shutdown_grace_s)
        stop_waiter.cancel()
        if metrics_server is not None:
            metrics_server.close()
        await self.rollouts.close()
        await self.dataplane.shutdown()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # export the spans still buffered
        print("inferbridge: stopped", flush=True)

    def _initial_models(self) -> list[str] | None:
        """What loads at start: everything, except in the explicit mode (`load_model`)."""
        s = self.settings
        if s.model_control_mode != "explicit":
            return None
        if "*" in s.load_model:
            return None
        return list(dict.fromkeys(s.load_model))

    def request_stop(self) -> None:
        self._stop.set()

    async def _frontend(self, rest: ASGIApp) -> GrpcFrontend | GatewayFrontend:
        """The Go gateway (gRPC, and REST unless told otherwise) when it can be built; else
        grpc.aio, with REST on uvicorn."""
        from inferbridge.frontends.gateway.build import GatewayBuildError, build_gateway
        from inferbridge.frontends.grpc.server import GrpcFrontend

        s = self.settings
        if s.grpc_frontend != "grpcio":
            try:
                binary = await asyncio.to_thread(build_gateway)
            except GatewayBuildError as exc:
                if s.grpc_frontend == "gateway":
                    raise
                logger.warning("no Go gateway (%s); gRPC on grpc.aio, REST on uvicorn", exc)
            else:
                with_rest = s.rest_frontend != "uvicorn"
                served = "gRPC and REST" if with_rest else "gRPC"
                print(f"inferbridge: {served} served by the Go gateway", flush=True)
                return GatewayFrontend(
                    self.dataplane,
                    binary=binary,
                    max_message_bytes=s.max_request_bytes,
                    default_model=s.default_model,
                    max_concurrent_rpcs=s.grpc_max_concurrent_rpcs,
                    rest_app=rest if with_rest else None,
                    max_http_inflight=s.max_http_inflight,
                    on_failure=self._frontend_failed,
                    access_log=self.access_log,
                    queue_full_code=s.grpc_queue_full_code,
                    flags=security_flags(s),
                )
        print("inferbridge: gRPC served by grpc.aio, REST by uvicorn", flush=True)
        return GrpcFrontend(
            self.dataplane,
            max_message_bytes=s.max_request_bytes,
            default_model=s.default_model,
            max_concurrent_rpcs=s.grpc_max_concurrent_rpcs,
            counters=self.metrics.serve_protocol("grpc") if self.metrics is not None else None,
            access_log=self.access_log,
            queue_full_code=QUEUE_FULL_CODES[s.grpc_queue_full_code],
            authority=self.authority,
            tls=self.tls,
        )

    def _observed_uvicorn(self, rest: ASGIApp) -> uvicorn.Config:
        """uvicorn's config for REST, counting it (the gateway does not) and logging it,
        over TLS when configured."""
        from inferbridge.frontends.rest.observed import ObservedApp, counting_http_protocol

        counters = self.metrics.serve_protocol("http") if self.metrics is not None else None
        protocol: type[asyncio.Protocol] = (
            counting_http_protocol(counters) if counters is not None else StrictHttpToolsProtocol
        )
        app = rest
        if counters is not None or self.access_log is not None:
            app = ObservedApp(rest, counters, self.access_log)
        if self.tls is None:
            return _uvicorn_config(app, self.settings, protocol)
        from inferbridge.security.tls import tls_http_protocol

        config = _uvicorn_config(app, self.settings, tls_http_protocol(protocol, self.tls))
        # uvicorn builds an SSLContext only from its own file settings; ours is reloaded in
        # place, so it is given after load() (which serve() then skips).
        config.load()
        config.ssl = self.tls.context
        return config

    async def _metrics_listener(
        self, frontend: GrpcFrontend | GatewayFrontend
    ) -> asyncio.Server | None:
        """Give /metrics the gateway's metrics, and open --metrics-port when asked."""
        s = self.settings
        if self.metrics is None:
            if s.metrics_port is not None:
                print("inferbridge: --metrics-port ignored: metrics are off", flush=True)
            return None
        if isinstance(frontend, GatewayFrontend):
            self.metrics.source = frontend.pull_metrics
        if s.metrics_port is None:
            return None
        server = await serve_metrics(self.metrics, s.host, s.metrics_port)
        port = server.sockets[0].getsockname()[1]
        print(f"inferbridge: metrics listening on http://{s.host}:{port}", flush=True)
        if s.authenticates or self.tls is not None:
            # That listener is plain HTTP without credentials (a scraper's port); the REST
            # port's /metrics is the one that needs `read`.
            logger.warning(
                "--metrics-port %d serves /metrics over plain HTTP without authentication; "
                "keep it off untrusted networks, or scrape the REST port's /metrics (scope read)",
                port,
            )
        return server

    def _frontend_failed(self, reason: str) -> None:
        print(f"inferbridge: stopping: {reason}", file=sys.stderr, flush=True)
        self.exit_code = 1
        self.request_stop()


def run(settings: Settings, repository: Path) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code."""
    import uvloop

    from inferbridge.frontends.gateway.build import GatewayBuildError
    from inferbridge.security.authority import AuthConfigError
    from inferbridge.security.tls import TLSConfigError

    try:
        server = InferBridgeServer(settings, repository)
    except (AuthConfigError, TLSConfigError) as exc:
        print(f"inferbridge: invalid settings: {exc}", file=sys.stderr, flush=True)
        return 2
    except TracingError as exc:
        print(f"inferbridge: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        uvloop.run(server.serve())
    except GatewayBuildError as exc:
        print(f"inferbridge: {exc}", file=sys.stderr, flush=True)
        return 2
    return server.exit_code


def _warn_if_open(settings: Settings) -> None:
    from inferbridge.security.exposure import open_server_warning

    warning = open_server_warning(settings.host, authenticates=settings.authenticates)
    if warning is not None:
        logger.warning("%s", warning)


def _model_summary(dataplane: DataPlane) -> Iterator[str]:
    ready: dict[str, list[str]] = {}
    for entry in dataplane.repository_index():
        if entry.state == "READY":
            ready.setdefault(entry.name, []).append(entry.version)
    listed = ", ".join(f"{name} (v{', v'.join(versions)})" for name, versions in ready.items())
    yield f"models ready: {listed or 'none'}"
    for name, reason in dataplane.model_errors().items():
        yield f"model {name} NOT loaded: {reason}"


def _uvicorn_config(
    rest: ASGIApp, s: Settings, http: type[asyncio.Protocol] | None = None
) -> uvicorn.Config:
    return uvicorn.Config(
        rest,
        loop="none",
        http=http or StrictHttpToolsProtocol,
        lifespan="off",
        log_level="warning",
        access_log=False,
        # Per-response work the REST hot path does not need.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=int(s.shutdown_grace_s),
    )


def _bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _QuietSignalsServer(uvicorn.Server):
    """uvicorn.Server whose signal handling is left to InferBridgeServer."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
