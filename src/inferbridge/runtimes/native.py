"""Native shared libraries (.so) from C, Go (cgo, -buildmode=c-shared), Rust, ... via ctypes.

The C ABI (version 1) is in `inferbridge/examples/native/ib_native.h` and README.md (Runtimes):
the library exports `ib_abi_version()` and `ib_infer(inputs, n_inputs, outputs, n_outputs,
message, message_len)`; tensors are contiguous buffers owned by the server, in config order;
a non-zero status fails the request with the library's message.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from inferbridge.errors import InvalidInput, ModelLoadError
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig
from inferbridge.repository.integrity import require_code_trust
from inferbridge.runtimes.base import Arrays, Runtime, Signature

__all__ = ["ABI_VERSION", "DTYPE_CODES", "NativeLibraryError", "NativeRuntime"]

ABI_VERSION = 1
#: OIP datatype -> the ABI's dtype code (Triton's DataType numbering).
DTYPE_CODES: dict[str, int] = {
    "BOOL": 1,
    "UINT8": 2,
    "UINT16": 3,
    "UINT32": 4,
    "UINT64": 5,
    "INT8": 6,
    "INT16": 7,
    "INT32": 8,
    "INT64": 9,
    "FP16": 10,
    "FP32": 11,
    "FP64": 12,
}
_MESSAGE_BYTES = 1024
_INVALID_INPUT = 1


class _Tensor(ctypes.Structure):
    _fields_: ClassVar[list[tuple[str, Any]]] = [
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_int32),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("data", ctypes.c_void_p),
    ]


class NativeLibraryError(RuntimeError):
    """The library returned a non-zero status; the message is the library's own."""


class NativeRuntime(Runtime):
    """Runs `model.so` through the inferbridge native ABI.

    A library cannot describe its tensors, so config.yaml declares `inputs` and `outputs`
    (BYTES is not supported). Output buffers are allocated with the declared shape; only
    the first dimension may be -1, and it takes the batch size of the first input.
    ctypes releases the GIL during the call, so `ib_infer` must be reentrant. A library
    runs code as it loads: config.yaml must pin its sha256 or set `trust_pickle: true`.
    """

    name = "native"
    platform = "native"
    default_model_file = "model.so"
    # A C library is the likeliest thing to crash the server: it runs in a worker process
    # unless config.yaml says `isolation: inline`.
    isolation = "process"

    def __init__(self) -> None:
        self._library: ctypes.CDLL | None = None
        self._infer: Any = None
        self._path = Path()
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._names: dict[str, bytes] = {}

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        path = self.model_path(model_dir, config)
        if device != "cpu":
            raise ModelLoadError(f"{path}: the native runtime runs on the CPU only, not {device}")
        if not config.inputs or not config.outputs:
            raise ModelLoadError(
                f"{path}: a native library cannot describe its tensors; "
                "config.yaml must declare both inputs and outputs"
            )
        for spec in (*config.input_specs(), *config.output_specs()):
            if spec.datatype not in DTYPE_CODES:
                raise ModelLoadError(
                    f"{path}: tensor '{spec.name}' has datatype {spec.datatype}, "
                    "which the native ABI does not support"
                )
        for spec in config.output_specs():
            if -1 in spec.shape[1:]:
                raise ModelLoadError(
                    f"{path}: output '{spec.name}' shape {list(spec.shape)}: only the first "
                    "(batch) dimension of a native output may be -1"
                )
        require_code_trust(path, model_dir, config, "a native library")
        try:
            library = ctypes.CDLL(str(path.resolve()))
        except OSError as exc:
            raise ModelLoadError(f"cannot load native library {path}: {exc}") from None
        try:
            version_fn = library.ib_abi_version
            infer = library.ib_infer
        except AttributeError as exc:
            raise ModelLoadError(
                f"{path} is not an inferbridge native library: {exc} "
                "(it must export ib_abi_version and ib_infer)"
            ) from None
        version_fn.restype = ctypes.c_int32
        version_fn.argtypes = []
        version = int(version_fn())
        if version != ABI_VERSION:
            raise ModelLoadError(
                f"{path} implements native ABI version {version}; this server speaks {ABI_VERSION}"
            )
        infer.restype = ctypes.c_int32
        infer.argtypes = [
            ctypes.POINTER(_Tensor),
            ctypes.c_int32,
            ctypes.POINTER(_Tensor),
            ctypes.c_int32,
            ctypes.c_char_p,
            ctypes.c_int32,
        ]
        self._library, self._infer, self._path = library, infer, path
        self._inputs, self._outputs = config.input_specs(), config.output_specs()
        self._names = {s.name: s.name.encode() for s in (*self._inputs, *self._outputs)}

    def metadata(self) -> Signature:
        return Signature(list(self._inputs), list(self._outputs))

    def infer(self, inputs: Arrays) -> Arrays:
        if self._infer is None:
            raise RuntimeError("native library is not loaded")
        arrays = [
            np.ascontiguousarray(inputs[s.name], dtype=dtype_of(s.datatype)) for s in self._inputs
        ]
        batch = int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 1
        outputs = {
            s.name: np.empty(
                tuple(batch if d == -1 else d for d in s.shape), dtype=dtype_of(s.datatype)
            )
            for s in self._outputs
        }
        in_tensors = (_Tensor * len(arrays))()
        out_tensors = (_Tensor * len(outputs))()
        keep: list[Any] = []  # shape arrays must outlive the call
        for slot, spec, array in zip(in_tensors, self._inputs, arrays, strict=True):
            keep.append(_fill(slot, self._names[spec.name], spec.datatype, array))
        for slot, spec in zip(out_tensors, self._outputs, strict=True):
            keep.append(_fill(slot, self._names[spec.name], spec.datatype, outputs[spec.name]))
        message = ctypes.create_string_buffer(_MESSAGE_BYTES)
        status = self._infer(
            in_tensors, len(arrays), out_tensors, len(outputs), message, _MESSAGE_BYTES
        )
        if status != 0:
            text = message.value.decode("utf-8", "replace") or "(no message)"
            if status == _INVALID_INPUT:
                raise InvalidInput(f"{self._path.name} rejected the input: {text}")
            raise NativeLibraryError(f"{self._path.name} returned status {status}: {text}")
        return outputs

    def unload(self) -> None:
        # dlclose is unsafe for Go libraries (their runtime keeps threads); drop references only.
        self._infer = None
        self._library = None


def _fill(slot: _Tensor, name: bytes, datatype: str, array: np.ndarray[Any, Any]) -> Any:
    shape = (ctypes.c_int64 * max(array.ndim, 1))(*array.shape)
    slot.name = name
    slot.dtype = DTYPE_CODES[datatype]
    slot.ndim = array.ndim
    slot.shape = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
    slot.data = array.ctypes.data
    return shape
