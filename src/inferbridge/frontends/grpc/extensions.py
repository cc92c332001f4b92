"""gRPC methods of Triton's extensions (system and CUDA shared memory, LogSettings,
TraceSetting), mixed into InferenceServicer; thin over the same objects as the REST routes."""

from __future__ import annotations

import functools
from typing import Any

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.errors import InvalidInput
from inferbridge.frontends.grpc.errors import mapped_errors
from inferbridge.observability.logs import LOG_SETTINGS
from inferbridge.observability.trace_settings import settings_of
from inferbridge.protocol.generated import grpc_service_pb2 as pb
from inferbridge.protocol.shared_memory import CUDA_UNSUPPORTED

__all__ = ["ExtensionMethods"]


def _answered(method: Any) -> Any:
    """A synchronous extension method as a servicer method, with the servicer's error
    mapping (grpc.errors.mapped_errors)."""

    @functools.wraps(method)
    async def call(self: Any, request: Any, context: Any) -> Any:
        return method(self, request)

    return mapped_errors(call)


class ExtensionMethods:
    dataplane: DataPlane

    @_answered
    def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for s in self.dataplane.shared_memory.status(request.name):
            response.regions[s.name].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=s.name, key=s.key, offset=s.offset, byte_size=s.byte_size
                )
            )
        return response

    @_answered
    def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self.dataplane.shared_memory.register(
            request.name, request.key, request.offset, request.byte_size
        )
        return pb.SystemSharedMemoryRegisterResponse()

    @_answered
    def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.dataplane.shared_memory.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    @_answered
    def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest
    ) -> pb.CudaSharedMemoryStatusResponse:
        if request.name:
            raise InvalidInput(CUDA_UNSUPPORTED)
        return pb.CudaSharedMemoryStatusResponse()

    @_answered
    def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest
    ) -> pb.CudaSharedMemoryRegisterResponse:
        raise InvalidInput(CUDA_UNSUPPORTED)

    @_answered
    def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        if request.name:
            raise InvalidInput(CUDA_UNSUPPORTED)
        return pb.CudaSharedMemoryUnregisterResponse()

    @_answered
    def LogSettings(self, request: pb.LogSettingsRequest) -> pb.LogSettingsResponse:
        changes: dict[str, Any] = {}
        for key, value in request.settings.items():
            which = value.WhichOneof("parameter_choice")
            if which is None:
                raise InvalidInput(f"log setting '{key}' has no value")
            changes[key] = getattr(value, which)
        current = LOG_SETTINGS.update(changes) if changes else LOG_SETTINGS.current()
        response = pb.LogSettingsResponse()
        for key, setting in current.items():
            if isinstance(setting, bool):
                response.settings[key].bool_param = setting
            elif isinstance(setting, int):
                response.settings[key].uint32_param = setting
            else:
                response.settings[key].string_param = str(setting)
        return response

    @_answered
    def TraceSetting(self, request: pb.TraceSettingRequest) -> pb.TraceSettingResponse:
        settings = settings_of(self.dataplane.tracing)
        model = request.model_name or None
        # No value clears a per-model key; a request without settings reads them.
        changes = {key: list(value.value) or None for key, value in request.settings.items()}
        current = settings.update(changes, model) if changes else settings.current(model)
        response = pb.TraceSettingResponse()
        for key, setting in current.items():
            response.settings[key].value.extend(setting if isinstance(setting, list) else [setting])
        return response
