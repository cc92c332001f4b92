"""The gateway child process: start it on inherited sockets, read the ports it bound, tell
it the models' admission limits and health, pull its metrics, and drain it at shutdown.
The frames it exchanges with this process are answered by `backend`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from google.protobuf import descriptor_pb2

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.frontends.gateway.backend import ASGIApp, BackendProtocol, GatewayError
from inferbridge.frontends.grpc.errors import QUEUE_FULL_CODES
from inferbridge.frontends.grpc.servicers import AIServicer, InferenceServicer, method_table
from inferbridge.frontends.grpc.streaming import stream_table
from inferbridge.observability.logs import AccessLog
from inferbridge.protocol.generated import ai_service_pb2, grpc_service_pb2, model_config_pb2
from inferbridge.settings import Settings

__all__ = ["GatewayFrontend", "security_flags"]

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 30.0
_METRICS_TIMEOUT_S = 5.0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def security_flags(settings: Settings) -> list[str]:
    """The gateway's flags for docs/security.md's settings (the same names as the CLI's).
    Only what is configured is passed: a server without them starts the gateway exactly
    as before."""
    s = settings
    flags: list[str] = []
    for flag, value in (
        ("--auth-keys", s.auth_keys),
        ("--auth-jwt-hs256-secret-file", s.auth_jwt_hs256_secret_file),
        ("--auth-jwt-jwks", s.auth_jwt_jwks),
        ("--auth-jwt-issuer", s.auth_jwt_issuer),
        ("--auth-jwt-audience", s.auth_jwt_audience),
        ("--auth-default-rate", s.auth_default_rate),
        ("--tls-cert", s.tls_cert),
        ("--tls-key", s.tls_key),
        ("--tls-client-ca", s.tls_client_ca),
        ("--tls-client-auth", s.tls_client_auth),
    ):
        if value is not None:
            flags.append(f"{flag}={value}")
    for rule in s.rate_limit:
        flags.append(f"--rate-limit={rule}")
    if s.authenticates:
        flags.append(f"--auth-jwt-leeway-s={s.auth_jwt_leeway_s:g}")
        flags.append(f"--auth-open-health={'true' if s.auth_open_health else 'false'}")
    if s.authenticates or s.rate_limit:
        # What /predict and AIService.Predict infer on, which the gateway checks.
        flags.append(f"--default-model={s.default_model}")
    return flags


def _descriptor_set() -> bytes:
    files = descriptor_pb2.FileDescriptorSet()
    # Dependencies first: the gateway builds the files in order.
    for module in (model_config_pb2, grpc_service_pb2, ai_service_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    return files.SerializeToString()


class GatewayFrontend:
    """gRPC, and REST when given the app, served by the Go gateway process and answered
    by this process's servicers and REST app."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        binary: Path,
        max_message_bytes: int,
        default_model: str,
        max_concurrent_rpcs: int | None = None,
        rest_app: ASGIApp | None = None,
        max_http_inflight: int = 0,
        on_failure: Callable[[str], None] | None = None,
        access_log: AccessLog | None = None,
        queue_full_code: str = "resource_exhausted",
        flags: list[str] | None = None,
    ) -> None:
        self._binary = binary
        self._flags = flags or []
        self._queue_full_code = queue_full_code
        self._max_message_bytes = max_message_bytes
        self._max_concurrent_rpcs = max_concurrent_rpcs or 0
        self._rest_app = rest_app
        self._max_http_inflight = max_http_inflight
        code = QUEUE_FULL_CODES[queue_full_code]
        self._methods = method_table(
            InferenceServicer(dataplane, queue_full_code=code),
            AIServicer(dataplane, default_model, queue_full_code=code),
        )
        self._streams = stream_table(dataplane)
        self._on_failure = on_failure
        self._access = access_log
        self._pull_failed = False
        self._process: asyncio.subprocess.Process | None = None
        self._protocol: BackendProtocol | None = None
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self.http_port: int | None = None
        self.service_names = [
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            ai_service_pb2.DESCRIPTOR.services_by_name["AIService"].full_name,
        ]

    @property
    def serves_rest(self) -> bool:
        return self._rest_app is not None

    async def start(self, host: str, port: int, http_port: int | None = None) -> int:
        """Start the gateway: gRPC on host:port, and REST on host:http_port when it serves
        REST (0 = any free). Returns the bound gRPC port; `http_port` tells the REST one."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [
            str(self._binary),
            "--listen",
            _address(host, port),
            "--backend-fd",
            str(theirs.fileno()),
            "--max-recv-bytes",
            str(self._max_message_bytes),
            "--max-concurrent-rpcs",
            str(self._max_concurrent_rpcs),
            "--queue-full-code",
            self._queue_full_code,
            *self._flags,
        ]
        if self._access is not None:
            command.append("--access-log-frames")  # its own refusals, for this access log
        if self._rest_app is not None:
            command += [
                "--http-listen",
                _address(host, http_port or 0),
                "--max-http-inflight",
                str(self._max_http_inflight),
            ]
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
            )
        finally:
            theirs.close()
        self._process = process
        loop = asyncio.get_running_loop()
        _, protocol = await loop.connect_accepted_socket(
            lambda: BackendProtocol(
                self._methods, self._rest_app, self._backend_lost, self._access, self._streams
            ),
            ours,
        )
        self._protocol = protocol
        protocol.send_descriptors(_descriptor_set())
        bound = await self._read_bound_port(process, "listening", f"gRPC to {host}:{port}")
        if self._rest_app is not None:
            self.http_port = await self._read_bound_port(
                process, "listening-http", f"REST to {host}:{http_port}"
            )
        self._watcher = asyncio.create_task(self._watch(process))
        return bound

    async def _read_bound_port(
        self, process: asyncio.subprocess.Process, word: str, what: str
    ) -> int:
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), _STARTUP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            raise GatewayError(
                f"the gateway did not start within {_STARTUP_TIMEOUT_S:g} s"
            ) from None
        words = line.decode(errors="replace").split()
        if len(words) != 2 or words[0] != word:
            code = await process.wait()
            # The gateway says why on its stderr, which is the server's.
            raise OSError(f"cannot bind {what} (gateway exited with {code})")
        return int(words[1].rsplit(":", 1)[1])

    def set_admission_limits(self, limits: dict[str, int]) -> None:
        """Per model, how many infer requests (REST and gRPC together) may be outstanding
        at once; beyond that the gateway answers 429 / RESOURCE_EXHAUSTED itself, without
        this process reading the request."""
        if self._protocol is not None:
            self._protocol.send_limits(limits)

    async def pull_metrics(self) -> bytes:
        """The gateway's own metrics (Prometheus text), or b"" when it cannot give them in
        time: a scrape never fails because of the gateway (logged once)."""
        if self._protocol is None or self._stopping:
            return b""
        try:
            text = await self._protocol.pull_metrics(_METRICS_TIMEOUT_S)
        except TimeoutError:
            text = b""
        if not text and not self._pull_failed:
            self._pull_failed = True
            logger.warning(
                "the gateway did not answer a metrics pull within %g s; /metrics goes "
                "without its metrics while it does not",
                _METRICS_TIMEOUT_S,
            )
        return text

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if not self._stopping:
            message = f"the gateway exited unexpectedly with code {code}"
            logger.error(message)
            if self._on_failure is not None:
                self._on_failure(message)

    def _backend_lost(self) -> None:
        if not self._stopping:
            logger.error("lost the connection to the gateway")

    async def set_serving(self, serving: bool) -> None:
        if self._protocol is None:
            return
        for name in ("", *self.service_names):
            self._protocol.send_health(serving, name)

    async def stop(self, grace_s: float) -> None:
        """Drain: the gateway stops taking calls, in-flight ones are answered, it exits."""
        self._stopping = True
        process = self._process
        if process is None or self._protocol is None:
            return
        self._protocol.send_shutdown(grace_s)
        try:
            await asyncio.wait_for(process.wait(), grace_s + 5.0)
        except TimeoutError:
            logger.warning("the gateway did not exit after its grace period; killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._watcher is not None:
            await self._watcher
