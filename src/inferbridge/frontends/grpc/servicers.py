"""gRPC servicers: inference.GRPCInferenceService and ai.AIService, thin over the dataplane."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf import json_format
from google.protobuf.message import Message

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.errors import ModelNotFound
from inferbridge.frontends import compat
from inferbridge.frontends.grpc.errors import mapped_errors as _mapped_errors
from inferbridge.frontends.grpc.extensions import ExtensionMethods
from inferbridge.protocol.generated import ai_service_pb2 as ai_pb
from inferbridge.protocol.generated import grpc_service_pb2 as pb
from inferbridge.protocol.grpc_codec import decode_model_infer_request, encode_model_infer_response

__all__ = ["AIServicer", "InferenceServicer", "MethodTable", "generic_handlers", "method_table"]

logger = logging.getLogger(__name__)

class InferenceServicer(ExtensionMethods):
    """inference.GRPCInferenceService (shared memory, logging and trace settings: in
    ExtensionMethods)."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        queue_full_code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED,
    ) -> None:
        self.dataplane = dataplane
        self.queue_full_code = queue_full_code

    @_mapped_errors
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Any
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @_mapped_errors
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Any
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @_mapped_errors
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        try:
            ready = self.dataplane.model_ready(request.name, request.version or None)
        except ModelNotFound:
            ready = False  # Triton's answer for a model or version it does not serve
        return pb.ModelReadyResponse(ready=ready)

    @_mapped_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        meta = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=list(meta.extensions)
        )

    @_mapped_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        meta = self.dataplane.model_metadata(request.name, request.version or None)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in meta.inputs],
            outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in meta.outputs],
        )

    @_mapped_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        decoded = decode_model_infer_request(request, self.dataplane.shared_memory)
        remaining = context.time_remaining()
        if remaining is not None:
            decoded.deadline = time.monotonic() + remaining
        decoded.header = functools.partial(_metadata_value, context)
        response = await self.dataplane.infer(decoded)
        return encode_model_infer_response(response, decoded, self.dataplane.shared_memory)

    @_mapped_errors
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        documents = self.dataplane.model_statistics(request.name, request.version or None)
        return json_format.ParseDict({"model_stats": documents}, pb.ModelStatisticsResponse())

    @_mapped_errors
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Any
    ) -> pb.ModelConfigResponse:
        config = self.dataplane.model_config_message(request.name, request.version or None)
        response = pb.ModelConfigResponse()
        response.config.CopyFrom(config)
        return response

    @_mapped_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        parameters = _repository_parameters(request.parameters)
        await self.dataplane.load_model(request.model_name, parameters, base64_files=False)
        return pb.RepositoryModelLoadResponse()

    @_mapped_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        parameters = _repository_parameters(request.parameters)
        await self.dataplane.unload_model(request.model_name, parameters)
        return pb.RepositoryModelUnloadResponse()

    @_mapped_errors
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        entries = self.dataplane.repository_index()
        if request.ready:
            entries = [e for e in entries if e.state == "READY"]
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(name=e.name, version=e.version, state=e.state, reason=e.reason)
                for e in entries
            ]
        )


class AIServicer:
    """ai.AIService: the seed's Predict, on the server's default model."""

    def __init__(
        self,
        dataplane: DataPlane,
        default_model: str,
        *,
        queue_full_code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED,
    ) -> None:
        self.dataplane = dataplane
        self.default_model = default_model
        self.queue_full_code = queue_full_code

    @_mapped_errors
    async def Predict(self, request: ai_pb.PredictRequest, context: Any) -> ai_pb.PredictResponse:
        classes, _ = await compat.predict_classes(
            self.dataplane, self.default_model, list(request.values)
        )
        return ai_pb.PredictResponse(result=str(classes[0]))


#: Full method path ("/package.Service/Method") -> (bound servicer method, request type).
MethodTable = dict[str, tuple[Callable[[Any, Any], Awaitable[Message]], type[Message]]]


def method_table(inference: InferenceServicer, ai: AIServicer) -> MethodTable:
    """Every RPC of both services, built from the generated descriptors; each with a server
    span around it when the dataplane carries tracing (nothing is wrapped otherwise)."""
    table: MethodTable = {}
    for servicer, module in ((inference, pb), (ai, ai_pb)):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                if m.client_streaming or m.server_streaming:
                    continue  # unary calls only; streams: grpc.streaming.stream_table
                path = f"/{service.full_name}/{m.name}"
                method = getattr(servicer, m.name, None)
                table[path] = (
                    method if method is not None else _unimplemented(path),
                    _message_class(module, m.input_type.name),
                )
    tracing = inference.dataplane.tracing
    return table if tracing is None else tracing.wrap_rpcs(table)


def _handler(
    method: Callable[[Any, Any], Awaitable[Message]], request_type: type[Message]
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=request_type.FromString,
        response_serializer=lambda message: message.SerializeToString(),
    )


def generic_handlers(
    inference: InferenceServicer, ai: AIServicer
) -> list[grpc.GenericRpcHandler[Any, Any]]:
    """grpc.aio method handlers, one per RPC."""
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
    for path, (method, request_type) in method_table(inference, ai).items():
        service, name = path[1:].split("/")
        by_service.setdefault(service, {})[name] = _handler(method, request_type)
    return [
        grpc.method_handlers_generic_handler(service, methods)
        for service, methods in by_service.items()
    ]


def _unimplemented(path: str) -> Callable[[Any, Any], Awaitable[Message]]:
    """An RPC of the service that this server does not serve (yet): UNIMPLEMENTED, as the
    protocol asks of a server that lacks an extension."""

    async def unimplemented(request: Any, context: Any) -> Message:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{path} is not implemented")
        raise AssertionError("unreachable: abort raises")

    return unimplemented


def _repository_parameters(parameters: Any) -> dict[str, Any]:
    """A map<string, ModelRepositoryParameter> as plain values (None when unset)."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, which) if which is not None else None
    return values


def _message_class(module: Any, name: str) -> type[Message]:
    cls: type[Message] = getattr(module, name)
    return cls


def _metadata_value(context: Any, name: str) -> str | None:
    """One entry of the call's metadata by its lower-case name (read only when a rollout
    routes by it)."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return str(value)
    return None
