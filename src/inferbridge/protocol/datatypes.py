"""Open Inference Protocol datatypes and their numpy equivalents."""

from __future__ import annotations

from typing import Final

import numpy as np

__all__ = ["DATATYPES", "datatype_of", "dtype_of", "is_valid_datatype"]

_TO_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_FROM_NUMPY: Final[dict[str, str]] = {dt.str: name for name, dt in _TO_NUMPY.items()}

DATATYPES: Final[tuple[str, ...]] = tuple(_TO_NUMPY)


def is_valid_datatype(datatype: str) -> bool:
    return datatype in _TO_NUMPY


def dtype_of(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype for an OIP datatype; BYTES maps to object arrays of `bytes`."""
    return _TO_NUMPY[datatype]


def datatype_of(dtype: np.dtype[np.generic]) -> str:
    """The OIP datatype for a numpy dtype; strings and object arrays are BYTES."""
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    name = _FROM_NUMPY.get(dtype.newbyteorder("=").str if dtype.byteorder == ">" else dtype.str)
    if name is None:
        raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")
    return name
