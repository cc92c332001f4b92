"""Triton's system shared memory extension: registered POSIX shared-memory regions, and
tensors read from and written into them by reference.

A client on the same host creates a region (`shm_open`, as tritonclient.utils.shared_memory
does: key "/name" is the file /dev/shm/name), registers it under a name with an offset and a
size, and then names it in an input's or requested output's parameters
(`shared_memory_region`, `shared_memory_byte_size`, optional `shared_memory_offset`) instead
of sending the bytes. Every use is bounds checked against the registered size.

Security: registration is always allowed, as in Triton; any process that can reach the API
can map any /dev/shm file the server's user may open read/write. Serve the API to the same
host (or trusted callers) only.

All methods run on the event loop (the codecs call them while decoding and encoding), so the
registry takes no lock.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferbridge.errors import InvalidInput, ModelNotFound
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.tensors import array_from_raw, serialize_bytes_tensor
from inferbridge.protocol.types import OutputTensor, Parameters

__all__ = [
    "CUDA_UNSUPPORTED",
    "REGION",
    "RegionNotFound",
    "RegionStatus",
    "SharedMemoryRegistry",
    "has_shared_memory",
]

REGION = "shared_memory_region"
BYTE_SIZE = "shared_memory_byte_size"
OFFSET = "shared_memory_offset"

CUDA_UNSUPPORTED = (
    "CUDA shared memory is not supported on this server (no GPU build); "
    "use system shared memory (v2/systemsharedmemory)"
)

logger = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
_MAX_NAME = 255


class RegionNotFound(ModelNotFound):
    """No region of that name is registered: REST 404, NOT_FOUND (what an unknown name is
    for every other lookup of the protocol)."""


@dataclass(frozen=True, slots=True)
class RegionStatus:
    name: str
    key: str
    offset: int
    byte_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }


class _Region:
    __slots__ = ("map", "status", "view")

    def __init__(self, status: RegionStatus, mapped: mmap.mmap) -> None:
        self.status = status
        self.map = mapped
        # Only the registered window: every later slice is relative to it.
        self.view = memoryview(mapped)[status.offset : status.offset + status.byte_size]

    def close(self) -> None:
        self.view.release()
        # An input array may still refer to the mapping (a request in flight); it is then
        # unmapped when the last such array is freed.
        with contextlib.suppress(BufferError):
            self.map.close()


class SharedMemoryRegistry:
    """The server's registered system shared-memory regions, by name."""

    def __init__(self, directory: str = SHM_DIR) -> None:
        self._directory = directory
        self._regions: dict[str, _Region] = {}

    # -- the extension's API ---------------------------------------------------------------

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not name or len(name) > _MAX_NAME or "\x00" in name:
            raise InvalidInput(f"shared memory region name {name!r} must be 1 to 255 characters")
        if name in self._regions:
            raise InvalidInput(
                f"shared memory region '{name}' is already registered; unregister it first"
            )
        for what, value in (("offset", offset), ("byte_size", byte_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInput(
                    f"shared memory region '{name}': {what} must be a non-negative integer, "
                    f"got {value!r}"
                )
        path = self._path(name, key)
        # The key is opened before byte_size is checked, as Triton does: a client that
        # registers a key nobody created hears that first, in Triton's phrase.
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InvalidInput(
                f"Unable to open shared memory region: '{key}': shared memory region "
                f"'{name}': no shared memory object with key '{key}' ({path})"
            ) from None
        except OSError as exc:
            raise InvalidInput(
                f"shared memory region '{name}': cannot open key '{key}': {exc.strerror}"
            ) from None
        try:
            if byte_size == 0:
                raise InvalidInput(f"shared memory region '{name}': byte_size must be above 0")
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(
                    f"shared memory region '{name}': key '{key}' is not a shared memory object"
                )
            if offset + byte_size > info.st_size:
                raise InvalidInput(
                    f"shared memory region '{name}': offset {offset} + byte_size {byte_size} "
                    f"is beyond the {info.st_size} bytes of key '{key}'"
                )
            mapped = mmap.mmap(fd, offset + byte_size, access=mmap.ACCESS_WRITE)
        finally:
            os.close(fd)
        self._regions[name] = _Region(RegionStatus(name, key, offset, byte_size), mapped)
        logger.info(
            "registered system shared memory region '%s' (key %s, offset %d, %d bytes)",
            name,
            key,
            offset,
            byte_size,
            extra={"event": "shm_register", "region": name},
        )

    def status(self, name: str = "") -> list[RegionStatus]:
        if not name:
            return [r.status for r in self._regions.values()]
        return [self._region(name).status]

    def unregister(self, name: str = "") -> None:
        """One region, or every region when `name` is empty."""
        if not name:
            self.close()
            return
        self._region(name)
        self._regions.pop(name).close()
        logger.info(
            "unregistered system shared memory region '%s'",
            name,
            extra={"event": "shm_unregister", "region": name},
        )

    def close(self) -> None:
        """Release every region (unregister all; at shutdown)."""
        regions, self._regions = self._regions, {}
        for region in regions.values():
            region.close()

    # -- tensors by reference --------------------------------------------------------------

    def read_input(
        self, name: str, datatype: str, shape: tuple[int, ...], parameters: Parameters
    ) -> np.ndarray[Any, Any]:
        """The input named by `parameters`, over the region's bytes (no copy for fixed-size
        datatypes; BYTES elements are Triton's 4-byte length prefixes and data)."""
        region, offset, size = self._window(f"input '{name}'", parameters)
        return array_from_raw(name, datatype, shape, region.view[offset : offset + size])

    def write_output(self, tensor: OutputTensor, parameters: Parameters) -> Parameters:
        """Write `tensor` into the region named by `parameters`; the parameters that the
        response carries for it in place of its data."""
        where = f"output '{tensor.name}'"
        region, offset, size = self._window(where, parameters)
        data = tensor.data
        if tensor.datatype == "BYTES":
            raw = serialize_bytes_tensor(data)
            needed = len(raw)
        else:
            dtype = dtype_of(tensor.datatype).newbyteorder("<")
            needed = data.size * dtype.itemsize
        if needed > size:
            raise InvalidInput(
                f"{where}: {tensor.datatype} shape {list(data.shape)} needs {needed} bytes; "
                f"shared_memory_byte_size is {size}"
            )
        target = region.view[offset : offset + needed]
        if tensor.datatype == "BYTES":
            target[:] = raw
        else:
            out = np.frombuffer(target, dtype=dtype).reshape(data.shape)
            np.copyto(out, data, casting="unsafe")
        echoed: Parameters = {REGION: region.status.name, BYTE_SIZE: size}
        if OFFSET in parameters:
            echoed[OFFSET] = offset
        return echoed

    # -- helpers ---------------------------------------------------------------------------

    def _window(self, where: str, parameters: Parameters) -> tuple[_Region, int, int]:
        name = parameters.get(REGION)
        size = parameters.get(BYTE_SIZE)
        offset = parameters.get(OFFSET, 0)
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{where}: '{REGION}' must be a region name")
        if size is None:
            raise InvalidInput(f"{where}: '{REGION}' needs '{BYTE_SIZE}' as well")
        for what, value in ((BYTE_SIZE, size), (OFFSET, offset)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInput(f"{where}: '{what}' must be a non-negative integer")
        region = self._regions.get(name)
        if region is None:
            raise InvalidInput(f"{where}: shared memory region '{name}' is not registered")
        if offset + size > region.status.byte_size:
            raise InvalidInput(
                f"{where}: offset {offset} + byte_size {size} is beyond shared memory region "
                f"'{name}' of {region.status.byte_size} bytes"
            )
        return region, offset, size

    def _region(self, name: str) -> _Region:
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"no system shared memory region '{name}' is registered")
        return region

    def _path(self, name: str, key: str) -> str:
        # POSIX shm_open names: one leading slash (glibc takes any number), then no slash.
        bare = key.lstrip("/") if isinstance(key, str) else ""
        if not bare or "/" in bare or "\x00" in bare or bare in (".", "..") or len(bare) > 255:
            raise InvalidInput(
                f"shared memory region '{name}': key {key!r} is not a POSIX shared memory name "
                "('/name': no further slashes)"
            )
        return os.path.join(self._directory, bare)


def has_shared_memory(parameters: Mapping[str, Any] | None) -> bool:
    """Whether a tensor's parameters name a shared memory region (either size parameter
    alone counts, so that the missing one is reported)."""
    if not parameters:
        return False
    return REGION in parameters or BYTE_SIZE in parameters
