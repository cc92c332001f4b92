"""Tensor conversions shared by the codecs: wire lists and raw buffers <-> numpy arrays."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from inferbridge.errors import InvalidInput
from inferbridge.protocol.datatypes import dtype_of, is_valid_datatype

__all__ = [
    "array_from_list",
    "array_from_raw",
    "array_to_raw",
    "check_datatype",
    "check_shape",
    "deserialize_bytes_tensor",
    "duplicate_input",
    "duplicate_output",
    "element_count",
    "serialize_bytes_tensor",
]

_LENGTH = struct.Struct("<I")
# Which numpy kinds a JSON list may hold for each datatype family (ints may fill floats).
_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "fiu"}


def element_count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def check_datatype(name: str, datatype: object) -> str:
    if not isinstance(datatype, str) or not is_valid_datatype(datatype):
        raise InvalidInput(
            f"input '{name}': unknown datatype {datatype!r}; expected one of BOOL, UINT8, "
            "UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES"
        )
    return datatype


def duplicate_input(name: str) -> InvalidInput:
    # Triton's wording (its core's), which clients and tests match on.
    return InvalidInput(f"input '{name}' already exists in request; each input is sent once")


def duplicate_output(name: str) -> InvalidInput:
    # Both of Triton's wordings: its HTTP front end's and its core's.
    return InvalidInput(
        f"Duplicate output name '{name}' is not allowed in a request: output '{name}' "
        "already exists in request"
    )


MAX_RANK = 32


def check_shape(name: str, shape: object) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or not _all_dimensions(shape):
        raise InvalidInput(
            f"tensor '{name}': shape must be a list of non-negative integers, got {shape!r}"
        )
    if len(shape) > MAX_RANK:
        raise InvalidInput(f"tensor '{name}': {len(shape)} dimensions; at most {MAX_RANK}")
    return tuple(shape)


def _all_dimensions(shape: list[Any] | tuple[Any, ...]) -> bool:
    # A plain loop: this runs for every tensor of every request, and all() over a
    # generator costs several times more.
    for d in shape:  # noqa: SIM110
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            return False
    return True


def serialize_bytes_tensor(array: np.ndarray[Any, Any]) -> bytes:
    """BYTES elements as 4-byte little-endian lengths, each followed by its bytes."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(
    name: str, buffer: bytes | memoryview, count: int
) -> np.ndarray[Any, Any]:
    view = memoryview(buffer)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput(f"input '{name}': BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(
                f"input '{name}': BYTES element of {length} bytes runs past the end of its data"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidInput(
            f"input '{name}': shape needs {count} BYTES elements, the data holds {len(items)}"
        )
    result = np.empty(len(items), dtype=object)
    result[:] = items
    return result


def array_from_raw(
    name: str, datatype: str, shape: tuple[int, ...], buffer: bytes | memoryview
) -> np.ndarray[Any, Any]:
    """An array over a little-endian row-major buffer, checked against shape and datatype."""
    count = element_count(shape)
    if datatype == "BYTES":
        return deserialize_bytes_tensor(name, buffer, count).reshape(shape)
    dtype = dtype_of(datatype).newbyteorder("<")
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        overflow = _size_overflow(name, shape, count, dtype.itemsize)
        if overflow is not None:
            raise InvalidInput(overflow)
        raise InvalidInput(
            f"input '{name}': {datatype} shape {list(shape)} needs {expected} bytes of data, "
            f"got {len(buffer)}"
        )
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    if datatype == "BOOL" and count and _not_bool_bytes(buffer):
        # numpy would carry the byte as a bool that is neither True nor False.
        raise InvalidInput(f"input '{name}': BOOL data holds bytes other than 0 and 1")
    return array


def _not_bool_bytes(buffer: bytes | memoryview) -> bool:
    if isinstance(buffer, bytes):
        return bool(buffer.translate(None, b"\x00\x01"))  # what is left is neither 0 nor 1
    return int(np.frombuffer(buffer, np.uint8).max()) > 1


def array_to_raw(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        return serialize_bytes_tensor(array)
    return np.ascontiguousarray(array, dtype=dtype_of(datatype).newbyteorder("<")).tobytes()


def array_from_list(
    name: str, datatype: str, shape: tuple[int, ...], data: object
) -> np.ndarray[Any, Any]:
    """An array from JSON `data` (nested or flat), checked against shape and datatype."""
    count = element_count(shape)
    if datatype == "BYTES":
        flat = _flatten(name, data)
        if len(flat) != count:
            raise _count_error(name, shape, count, len(flat))
        result = np.empty(count, dtype=object)
        # Only strings: bytes(n) of a JSON number n would allocate n zero bytes.
        if not all(isinstance(x, str) for x in flat):
            bad = next(x for x in flat if not isinstance(x, str))
            raise InvalidInput(f"input '{name}': BYTES data must be strings, got {bad!r}")
        result[:] = [x.encode() for x in flat]
        return result.reshape(shape)
    dtype = dtype_of(datatype)
    try:
        parsed = np.asarray(data)
    except (ValueError, TypeError):
        if _first_depth(data) > MAX_JSON_DEPTH:
            raise _too_deep(name) from None
        raise InvalidInput(f"input '{name}': data is not a rectangular list of numbers") from None
    if parsed.size != count:
        raise _count_error(name, shape, count, parsed.size, dtype.itemsize)
    if dtype.kind in "iu" and parsed.dtype.kind in "fO" and count:
        # numpy turns a list mixing integers above 2**63 - 1 with other integers into
        # float64 (losing precision); integers must stay exact, so convert them directly.
        exact = np.asarray(data, dtype=object)
        if all(type(x) is int for x in exact.flat):
            try:
                parsed = exact.astype(np.uint64 if int(exact.min()) >= 0 else np.int64)
            except OverflowError:
                info = np.iinfo(dtype)  # type: ignore[type-var]
                raise InvalidInput(
                    f"input '{name}': values outside the range of {datatype} "
                    f"[{info.min}, {info.max}]"
                ) from None
    if count and parsed.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        raise InvalidInput(
            f"input '{name}': data holds {_describe_kind(parsed.dtype.kind)} values, "
            f"expected {datatype}"
        )
    if dtype.kind in "iu" and count:
        info = np.iinfo(dtype)  # type: ignore[type-var]
        if int(parsed.min()) < info.min or int(parsed.max()) > info.max:
            raise InvalidInput(
                f"input '{name}': values outside the range of {datatype} [{info.min}, {info.max}]"
            )
    if dtype.kind == "f" and parsed.dtype.itemsize > dtype.itemsize:
        # A finite value too large for the narrower type becomes infinite in the cast, which
        # numpy reports as an overflow (infinities already in the data are not).
        try:
            with np.errstate(over="raise"):
                result = parsed.astype(dtype, copy=False)
        except FloatingPointError:
            raise InvalidInput(
                f"input '{name}': values outside the range of {datatype} "
                f"(largest magnitude {_float_max(dtype):g})"
            ) from None
    else:
        with np.errstate(over="ignore"):
            result = parsed.astype(dtype, copy=False)
    return result.reshape(shape)


#: Deepest nesting of JSON `data` accepted (Triton's limit, and its wording below).
MAX_JSON_DEPTH = 100


def _flatten(name: str, data: object) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidInput(f"input '{name}': 'data' must be a list")
    return _flatten_ordered(name, data, 1)


def _too_deep(name: str) -> InvalidInput:
    return InvalidInput(
        f"input '{name}': JSON nesting depth exceeds maximum allowed limit ({MAX_JSON_DEPTH})"
    )


def _first_depth(data: object) -> int:
    """How deep the first elements nest (a loop: the data may nest past Python's limit)."""
    depth = 0
    while isinstance(data, list):
        depth += 1
        data = data[0] if data else None
    return depth


def _flatten_ordered(name: str, data: list[Any], depth: int) -> list[Any]:
    if depth > MAX_JSON_DEPTH:
        # Deeper recursion would reach Python's own limit (an internal error).
        raise _too_deep(name)
    out: list[Any] = []
    for item in data:
        if isinstance(item, list):
            out.extend(_flatten_ordered(name, item, depth + 1))
        else:
            out.append(item)
    return out


#: The largest element count or byte size a tensor may have (Triton's: a signed 64-bit size).
MAX_TENSOR_SIZE = 2**63 - 1


def _size_overflow(name: str, shape: tuple[int, ...], count: int, itemsize: int) -> str | None:
    """Triton's phrases for a shape no buffer can hold; None when the sizes fit."""
    if count > MAX_TENSOR_SIZE:
        return (
            f"input '{name}': shape {list(shape)} causes total element count to exceed "
            f"maximum size of {MAX_TENSOR_SIZE}"
        )
    if count * itemsize > MAX_TENSOR_SIZE:
        return (
            f"byte size overflow for input '{name}': shape {list(shape)} of "
            f"{itemsize}-byte elements"
        )
    return None


def _count_error(
    name: str, shape: tuple[int, ...], want: int, got: int, itemsize: int = 1
) -> InvalidInput:
    overflow = _size_overflow(name, shape, want, itemsize)
    if overflow is not None:
        return InvalidInput(overflow)
    return InvalidInput(
        f"input '{name}': shape {list(shape)} needs {want} elements, the data holds {got}"
    )


def _describe_kind(kind: str) -> str:
    return {
        "b": "boolean",
        "i": "integer",
        "u": "integer",
        "f": "floating-point",
        "U": "string",
        "O": "mixed",
        "c": "complex",
    }.get(kind, kind)


def _float_max(dtype: np.dtype[Any]) -> float:
    return float(np.finfo(dtype).max)
