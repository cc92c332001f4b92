"""Build the grpc.aio server: inference and AI services, health, and reflection."""

from __future__ import annotations

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.frontends.grpc.servicers import AIServicer, InferenceServicer, generic_handlers
from inferbridge.protocol.generated import ai_service_pb2, grpc_service_pb2

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
    ) -> None:
        self.server = grpc.aio.server(
            maximum_concurrent_rpcs=max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.server.add_generic_rpc_handlers(
            generic_handlers(InferenceServicer(dataplane), AIServicer(dataplane, default_model))
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
        bound = self.server.add_insecure_port(f"{host}:{port}")
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
