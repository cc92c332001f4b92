"""Tensors between the server and a model's worker process.

A channel is a Unix SOCK_SEQPACKET socket pair and one shared memory region (a memfd both
processes map). Tensor bytes are written into the region and never cross the socket: a
message carries only names, dtypes, shapes and offsets (a small pickled tuple). Calls on
a channel alternate strictly (request, then answer), so each side may grow the region
(ftruncate) before it writes and states the new size in its message; the other maps it
again when it reads. Object (BYTES) arrays are pickled into the region.
"""

from __future__ import annotations

import mmap
import os
import pickle
import socket
from typing import Any

import numpy as np

__all__ = ["ChannelClosed", "Message", "Region", "Slot", "recv_message", "send_message"]

Arrays = dict[str, np.ndarray[Any, Any]]
#: (name, dtype string or "" for a pickled object array, shape, offset, nbytes)
Slot = tuple[str, str, tuple[int, ...], int, int]
Message = tuple[Any, ...]

INITIAL_REGION_BYTES = 1 << 22
_ALIGN = 64
_MAX_MESSAGE = 1 << 18


class ChannelClosed(Exception):
    """The other end of the channel is gone (its process died or closed it)."""


class Region:
    """One shared memory region, mapped in this process; grows, never shrinks."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = 0
        self._map: mmap.mmap | None = None
        self._address = 0
        self._remap(size)

    @classmethod
    def create(cls, label: str, size: int = INITIAL_REGION_BYTES) -> Region:
        fd = os.memfd_create(label[:200])
        os.ftruncate(fd, size)
        return cls(fd, size)

    def follow(self, size: int) -> None:
        """The other side grew the region to `size`: map all of it."""
        if size > self.size:
            self._remap(size)

    def write(self, arrays: Arrays, start: int = 0) -> tuple[list[Slot], int]:
        """Copy `arrays` into the region from `start` (growing it as needed); returns their
        slots and the offset after the last one."""
        slots: list[Slot] = []
        pickled: dict[str, bytes] = {}
        offset = start
        for name, array in arrays.items():
            if array.dtype.hasobject:
                pickled[name] = pickle.dumps(array, protocol=pickle.HIGHEST_PROTOCOL)
                dtype, nbytes = "", len(pickled[name])
            else:
                dtype, nbytes = array.dtype.str, array.nbytes
            offset = _aligned(offset)
            slots.append((name, dtype, tuple(array.shape), offset, nbytes))
            offset += nbytes
        self._grow(offset)
        assert self._map is not None
        for name, dtype, shape, at, nbytes in slots:
            if not dtype:
                self._map[at : at + nbytes] = pickled[name]
            elif nbytes:
                view: np.ndarray[Any, Any] = np.ndarray(
                    shape, dtype=np.dtype(dtype), buffer=self._map, offset=at
                )
                np.copyto(view, arrays[name], casting="no")
        return slots, offset

    def read(self, slots: list[Slot], *, copy: bool) -> Arrays:
        """The arrays of `slots`: views into the region (valid until the next write), or
        copies that outlive it."""
        assert self._map is not None
        arrays: Arrays = {}
        for name, dtype, shape, at, nbytes in slots:
            if not dtype:
                arrays[name] = pickle.loads(self._map[at : at + nbytes])
                continue
            if not nbytes:
                arrays[name] = np.empty(shape, dtype=np.dtype(dtype))
                continue
            view: np.ndarray[Any, Any] = np.ndarray(
                shape, dtype=np.dtype(dtype), buffer=self._map, offset=at
            )
            arrays[name] = view.copy() if copy else view
        return arrays

    def slot_of(self, name: str, array: np.ndarray[Any, Any]) -> Slot | None:
        """The slot of an array that lies in the region already (an input view that a
        runtime returns as is), so that it is not copied; None for any other array."""
        if array.dtype.hasobject or not array.nbytes or not array.flags.c_contiguous:
            return None
        offset = int(array.ctypes.data) - self._address
        if offset < 0 or offset + array.nbytes > self.size:
            return None
        return (name, array.dtype.str, tuple(array.shape), offset, array.nbytes)

    def close(self) -> None:
        # Views handed out keep their mapping alive; only the descriptor goes now.
        self._map = None
        os.close(self.fd)

    def _grow(self, needed: int) -> None:
        if needed <= self.size:
            return
        size = max(needed, 2 * self.size)
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        os.ftruncate(self.fd, size)
        self._remap(size)

    def _remap(self, size: int) -> None:
        # The old mapping is dropped, not closed: arrays that view it keep it alive.
        self._map = mmap.mmap(self.fd, size)
        self.size = size
        self._address = int(np.frombuffer(self._map, np.uint8).ctypes.data)


def send_message(sock: socket.socket, message: Message) -> None:
    try:
        sock.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError as exc:
        raise ChannelClosed(str(exc)) from None


def recv_message(sock: socket.socket, timeout: float | None = None) -> Message:
    """The next message; TimeoutError after `timeout` seconds, ChannelClosed at EOF."""
    try:
        sock.settimeout(timeout)
        data = sock.recv(_MAX_MESSAGE)
    except TimeoutError:
        raise
    except OSError as exc:
        raise ChannelClosed(str(exc)) from None
    if not data:
        raise ChannelClosed("end of stream")
    message: Message = pickle.loads(data)
    return message


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN
