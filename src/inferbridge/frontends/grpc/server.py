"""Build the grpc.aio server: inference and AI services, health, and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.frontends.grpc.servicers import AIServicer, InferenceServicer, generic_handlers
from inferbridge.frontends.grpc.streaming import StreamTable, stream_deadline, stream_table
from inferbridge.frontends.grpc.wrapping import WrappingInterceptor
from inferbridge.observability.frontend import ProtocolCounters
from inferbridge.observability.logs import AccessLog
from inferbridge.protocol.generated import ai_service_pb2, grpc_service_pb2
from inferbridge.security.authority import REFUSAL

if TYPE_CHECKING:
    from inferbridge.security.authority import Authority
    from inferbridge.security.tls import TLSReloader

__all__ = ["GrpcFrontend"]


class GrpcFrontend:
    """gRPC served by grpc.aio in this process (the fallback when the gateway is unavailable)."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        max_message_bytes: int,
        default_model: str,
        max_concurrent_rpcs: int | None = None,
        counters: ProtocolCounters | None = None,
        access_log: AccessLog | None = None,
        queue_full_code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED,
        authority: Authority | None = None,
        tls: TLSReloader | None = None,
    ) -> None:
        """`authority`: check every call (docs/security.md) when it authenticates or
        limits rates; `tls`: serve TLS only, with its certificate (reloaded) and client CA."""
        interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = []
        if counters is not None or access_log is not None:
            # First, so it sees (and logs) what the authentication refuses.
            interceptors.append(_ObservedCalls(counters, access_log))
        if authority is not None and authority.limits_rates:
            from inferbridge.security.interceptor import AuthInterceptor

            interceptors.append(AuthInterceptor(authority, default_model))
        self._tls = tls
        self.server = grpc.aio.server(
            interceptors=interceptors or None,
            maximum_concurrent_rpcs=max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.server.add_generic_rpc_handlers(
            generic_handlers(
                InferenceServicer(dataplane, queue_full_code=queue_full_code),
                AIServicer(dataplane, default_model, queue_full_code=queue_full_code),
            )
            + _stream_handlers(stream_table(dataplane))
        )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = [
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            ai_service_pb2.DESCRIPTOR.services_by_name["AIService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(self.service_names, self.server)

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port) and serve; returns the bound port."""
        address = f"{host}:{port}"
        if self._tls is not None:
            from inferbridge.security.tls import grpc_server_credentials

            bound = self.server.add_secure_port(address, grpc_server_credentials(self._tls))
        else:
            bound = self.server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")
        await self.server.start()
        return bound

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names[:2]):
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


def _stream_handlers(table: StreamTable) -> list[grpc.GenericRpcHandler[Any, Any]]:
    """grpc.aio bidi-streaming handlers for the streaming RPCs (after the unary ones: grpc
    asks each generic handler in turn)."""
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
    for path, handler in table.items():
        service, name = path[1:].split("/")
        by_service.setdefault(service, {})[name] = grpc.stream_stream_rpc_method_handler(
            _stream_behavior(handler),
            request_deserializer=grpc_service_pb2.ModelInferRequest.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )
    return [
        grpc.method_handlers_generic_handler(service, methods)
        for service, methods in by_service.items()
    ]


def _stream_behavior(handler: Any) -> _Behavior:
    async def behavior(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        deadline = stream_deadline(context.time_remaining())
        async with contextlib.aclosing(handler(requests, deadline)) as responses:
            async for response in responses:
                yield response

    return behavior


_Behavior = Callable[..., Any]


class _ObservedCalls(WrappingInterceptor):
    """Counts each call into `counters` (labels as the gateway's: route = full method name)
    and writes its access-log line. Installed only when one of them is wanted; each
    method's handler is wrapped once and cached."""

    def __init__(self, counters: ProtocolCounters | None, access: AccessLog | None) -> None:
        super().__init__()
        self._counters = counters
        self._access = access

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        counters = self._counters
        deserialize = handler.request_deserializer
        serialize = handler.response_serializer

        def counted_deserialize(data: bytes) -> Any:
            if counters is not None:
                counters.request_bytes += len(data)
            return deserialize(data) if deserialize is not None else data

        def counted_serialize(message: Any) -> bytes:
            data: bytes = serialize(message) if serialize is not None else message
            if counters is not None:
                counters.response_bytes += len(data)
            return data

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), counted_deserialize, counted_serialize
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream), counted_deserialize, counted_serialize
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary), counted_deserialize, counted_serialize
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._stream(method, handler.stream_stream), counted_deserialize, counted_serialize
        )

    def _unary(self, method: str, behavior: _Behavior) -> _Behavior:
        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = self._started()
            code = "UNKNOWN"
            response = None
            try:
                response = await behavior(request, context)
                code = "OK"
                return response
            except grpc.aio.AbortError:
                code = _code_name(context)
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                self._finished(method, code, start, request, response, context)

        return observed

    def _stream(self, method: str, behavior: _Behavior) -> _Behavior:
        if not inspect.isasyncgenfunction(behavior):
            return self._unary(method, behavior)  # writes with context.write

        async def observed(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            start = self._started()
            code = "UNKNOWN"
            try:
                async for item in behavior(request, context):
                    yield item
                code = "OK"
            except grpc.aio.AbortError:
                code = _code_name(context)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            finally:
                self._finished(method, code, start, request, None, context)

        return observed

    def _started(self) -> float:
        if self._counters is not None:
            self._counters.inflight += 1
        return time.perf_counter()

    def _finished(
        self,
        method: str,
        code: str,
        start: float,
        request: Any,
        response: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        counters = self._counters
        if counters is not None:
            counters.inflight -= 1
            counters.done(method, code, time.perf_counter() - start)
            reason = REFUSAL.get() or ("queue_full" if code == "RESOURCE_EXHAUSTED" else "")
            if reason:
                counters.reject(getattr(request, "model_name", ""), reason)
        if self._access is not None:
            self._access.grpc(
                method,
                request,
                context.invocation_metadata() or (),
                code=code,
                duration_s=time.perf_counter() - start,
                request_bytes=_size(request),
                response_bytes=_size(response),
            )


def _code_name(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _size(message: Any) -> int:
    size = getattr(message, "ByteSize", None)
    return int(size()) if size is not None else 0
