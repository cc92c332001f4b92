"""The standard gRPC health service and server reflection (what grpcurl uses)."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.serverproc import ServerProcess


def test_health_service(grpc_server: ServerProcess) -> None:
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_services(grpc_server: ServerProcess) -> None:
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [listing] = list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
        names = {s.name for s in listing.list_services_response.service}
        assert {"inference.GRPCInferenceService", "ai.AIService", "grpc.health.v1.Health"} <= names
        [described] = list(
            stub.ServerReflectionInfo(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(
                            file_containing_symbol="inference.GRPCInferenceService"
                        )
                    ]
                )
            )
        )
        files = described.file_descriptor_response.file_descriptor_proto
        proto = descriptor_pb2.FileDescriptorProto.FromString(files[0])
        methods = {m.name for m in proto.service[0].method}
        assert {
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
        } <= methods
