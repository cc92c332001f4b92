"""WebAssembly models in a wasmtime sandbox.

The ABI (version 1; README.md, Runtimes, has the full text). A module exports:

- `memory`: its linear memory;
- `ib_alloc(size: i32) -> i32`: a scratch block of at least `size` bytes for one call (0 if
  it cannot have one); the block stays valid until the next `ib_alloc`;
- `ib_infer(batch: i32, inputs: i32, outputs: i32) -> i32`: runs a whole batch. `inputs`
  and `outputs` point at tables of i32 addresses, one per tensor in config order; every
  tensor is a contiguous little-endian row-major buffer whose shape is config's with the
  batch dimension filled in. Returns 0; 1 when the input is invalid (the request fails
  with 400 / INVALID_ARGUMENT); any other status fails it with 500 / INTERNAL;
- optionally `ib_error() -> i32`: the address of a NUL-terminated UTF-8 message explaining
  the last non-zero status.

The module may import nothing: no WASI, no host functions. Every call runs with a fuel
budget, a wall-clock limit (epoch interruption) and a memory cap; a module that traps,
loops or runs out of memory fails that request only, and its instance is rebuilt.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inferbridge.errors import InvalidInput, ModelLoadError
from inferbridge.protocol.datatypes import dtype_of
from inferbridge.protocol.types import TensorSpec
from inferbridge.repository.config import ModelConfig
from inferbridge.runtimes.base import Arrays, Runtime, Signature

if TYPE_CHECKING:
    import wasmtime

__all__ = ["WasmModelError", "WasmRuntime"]

# The epoch ticker wakes (and takes the GIL) once a tick: 20 ticks per wall-clock limit
# bound a call within 5 % of its limit, and a 1 s limit costs 20 wake-ups a second, not 200.
_TICKS_PER_LIMIT = 20
_MIN_TICK_S = 0.001
_MAX_TICK_S = 0.05
_ALIGN = 16
_MESSAGE_BYTES = 1024
_INVALID_INPUT = 1
_REQUIRED = {
    "ib_alloc": ((("i32",), ("i32",))),
    "ib_infer": ((("i32", "i32", "i32"), ("i32",))),
}


class WasmModelError(RuntimeError):
    """The module trapped, ran out of fuel, time or memory, or returned an error status."""


@dataclass(slots=True)
class _Instance:
    store: wasmtime.Store
    memory: wasmtime.Memory
    alloc: wasmtime.Func
    infer: wasmtime.Func
    error: wasmtime.Func | None


class WasmRuntime(Runtime):
    """Runs `model.wasm` (or a `.wat` text file) through the inferbridge WASM ABI.

    Parameters: `fuel` (instructions per call, default 1e9), `timeout_ms` (wall clock per
    call, default 2000), `memory_limit_mb` (linear memory cap, default 64). config.yaml
    declares `inputs` and `outputs` (numeric datatypes; only the first dimension may be -1).
    Each worker thread has its own store and instance.
    """

    name = "wasm"
    platform = "wasm"
    default_model_file = "model.wasm"

    def __init__(self) -> None:
        self._engine: wasmtime.Engine | None = None
        self._module: wasmtime.Module | None = None
        self._path = Path()
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._fuel = 1_000_000_000
        self._timeout_ms = 2000.0
        self._memory_limit = 64 << 20
        self._local = threading.local()
        self._generation = 0
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._tick_s = _MAX_TICK_S

    def load(self, model_dir: Path, config: ModelConfig, device: str) -> None:
        import wasmtime

        path = self.model_path(model_dir, config)
        if device != "cpu":
            raise ModelLoadError(f"{path}: the wasm runtime runs on the CPU only, not {device}")
        params = config.parameters
        try:
            self._fuel = int(params.get("fuel", self._fuel))
            self._timeout_ms = float(params.get("timeout_ms", self._timeout_ms))
            self._memory_limit = int(float(params.get("memory_limit_mb", 64)) * (1 << 20))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path}: bad wasm parameter: {exc}") from None
        if self._fuel <= 0 or self._timeout_ms <= 0 or self._memory_limit <= 0:
            raise ModelLoadError(f"{path}: fuel, timeout_ms and memory_limit_mb must be positive")
        if not config.inputs or not config.outputs:
            raise ModelLoadError(
                f"{path}: a wasm module cannot describe its tensors; "
                "config.yaml must declare both inputs and outputs"
            )
        for spec in (*config.input_specs(), *config.output_specs()):
            if spec.datatype == "BYTES":
                raise ModelLoadError(f"{path}: tensor '{spec.name}' is BYTES; the ABI is numeric")
        for spec in config.output_specs():
            if -1 in spec.shape[1:]:
                raise ModelLoadError(
                    f"{path}: output '{spec.name}' shape {list(spec.shape)}: only the first "
                    "(batch) dimension of a wasm output may be -1"
                )
        engine_config = wasmtime.Config()
        engine_config.consume_fuel = True
        engine_config.epoch_interruption = True
        engine = wasmtime.Engine(engine_config)
        try:
            source: str | bytes = path.read_text() if path.suffix == ".wat" else path.read_bytes()
            module = wasmtime.Module(engine, source)
        except (wasmtime.WasmtimeError, UnicodeDecodeError, OSError) as exc:
            raise ModelLoadError(f"cannot compile wasm module {path}: {_first_line(exc)}") from None
        _check_module(path, module)
        self._engine, self._module, self._path = engine, module, path
        self._inputs, self._outputs = config.input_specs(), config.output_specs()
        limit_s = self._timeout_ms / 1000
        self._tick_s = min(_MAX_TICK_S, max(_MIN_TICK_S, limit_s / _TICKS_PER_LIMIT))
        self._stop.clear()
        self._ticker = threading.Thread(
            target=self._tick, name=f"wasm-epoch-{path.parent.parent.name}", daemon=True
        )
        self._ticker.start()
        self._instance()  # instantiate once now, so a module that cannot start fails the load

    def metadata(self) -> Signature:
        return Signature(list(self._inputs), list(self._outputs))

    def infer(self, inputs: Arrays) -> Arrays:
        import wasmtime

        instance = self._instance()
        arrays = [
            np.ascontiguousarray(inputs[s.name], dtype=dtype_of(s.datatype).newbyteorder("<"))
            for s in self._inputs
        ]
        batch = int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 1
        outputs = {
            s.name: np.empty(
                tuple(batch if d == -1 else d for d in s.shape),
                dtype=dtype_of(s.datatype).newbyteorder("<"),
            )
            for s in self._outputs
        }
        tables = 4 * (len(arrays) + len(outputs))
        offsets: list[int] = []
        total = _aligned(tables)
        for array in (*arrays, *outputs.values()):
            offsets.append(total)
            total += _aligned(array.nbytes)
        store = instance.store
        store.set_fuel(self._fuel)
        store.set_epoch_deadline(self._deadline_ticks())
        try:
            base = instance.alloc(store, total)
            if not isinstance(base, int) or base <= 0:
                raise WasmModelError(
                    f"{self._path.name}: ib_alloc({total}) found no memory "
                    f"(memory cap {self._memory_limit >> 20} MiB)"
                )
            if base + total > instance.memory.data_len(store):
                raise WasmModelError(f"{self._path.name}: ib_alloc returned a block out of bounds")
            address = ctypes.addressof(instance.memory.data_ptr(store).contents)
            pointers = np.array([base + o for o in offsets], dtype="<u4")
            ctypes.memmove(address + base, pointers.ctypes.data, pointers.nbytes)
            for offset, array in zip(offsets, arrays, strict=False):
                ctypes.memmove(address + base + offset, array.ctypes.data, array.nbytes)
            status = instance.infer(store, batch, base, base + 4 * len(arrays))
            if status == _INVALID_INPUT:
                raise InvalidInput(
                    f"{self._path.name} rejected the input: {self._message(instance)}"
                )
            if status != 0:
                raise WasmModelError(
                    f"{self._path.name}: ib_infer returned status {status}: "
                    f"{self._message(instance)}"
                )
            address = ctypes.addressof(instance.memory.data_ptr(store).contents)
            for offset, array in zip(offsets[len(arrays) :], outputs.values(), strict=True):
                ctypes.memmove(array.ctypes.data, address + base + offset, array.nbytes)
        except wasmtime.Trap as trap:
            self._discard()
            raise WasmModelError(self._explain(trap, instance)) from None
        except wasmtime.WasmtimeError as exc:
            self._discard()
            raise WasmModelError(f"{self._path.name}: {_first_line(exc)}") from None
        return outputs

    def unload(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)
        self._ticker = None
        self._generation += 1
        self._module = None
        self._engine = None

    # -- internals ---------------------------------------------------------------------------

    def _deadline_ticks(self) -> int:
        # +1: the call may start just before a tick
        return math.ceil(self._timeout_ms / 1000 / self._tick_s) + 1

    def _tick(self) -> None:
        # A ticker that wakes late (a busy CPU, a worker under SCHED_IDLE that gets none)
        # counts the ticks it missed, so the limit stays one of wall-clock time, not of
        # the ticker's turns; a store's deadline is never more ticks away than that cap.
        counted = time.monotonic()
        while not self._stop.wait(self._tick_s):
            engine = self._engine
            due = int((time.monotonic() - counted) / self._tick_s)
            counted += due * self._tick_s
            if engine is not None:
                for _ in range(min(due, self._deadline_ticks())):
                    engine.increment_epoch()

    def _instance(self) -> _Instance:
        import wasmtime

        current: _Instance | None = getattr(self._local, "instance", None)
        if current is not None and getattr(self._local, "generation", -1) == self._generation:
            return current
        if self._engine is None or self._module is None:
            raise RuntimeError("wasm module is not loaded")
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=self._memory_limit)
        store.set_fuel(self._fuel)
        store.set_epoch_deadline(self._deadline_ticks())
        try:
            instance = wasmtime.Linker(self._engine).instantiate(store, self._module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise ModelLoadError(
                f"cannot instantiate wasm module {self._path}: {_first_line(exc)} "
                f"(memory cap {self._memory_limit >> 20} MiB)"
            ) from None
        exports = instance.exports(store)
        error = exports.get("ib_error")
        built = _Instance(
            store,
            exports["memory"],  # type: ignore[arg-type]
            exports["ib_alloc"],  # type: ignore[arg-type]
            exports["ib_infer"],  # type: ignore[arg-type]
            error if isinstance(error, wasmtime.Func) else None,
        )
        self._local.instance = built
        self._local.generation = self._generation
        return built

    def _discard(self) -> None:
        # A trapped instance may hold inconsistent state: the next call on this thread
        # starts from a fresh store (which also returns the memory it grabbed).
        self._local.instance = None

    def _message(self, instance: _Instance) -> str:
        if instance.error is None:
            return "(the module exports no ib_error)"
        try:
            pointer = instance.error(instance.store)
            if not isinstance(pointer, int) or pointer <= 0:
                return "(no message)"
            end = min(pointer + _MESSAGE_BYTES, instance.memory.data_len(instance.store))
            raw = instance.memory.read(instance.store, pointer, end)
        except Exception:  # the message is a courtesy; never mask the status with it
            return "(ib_error failed)"
        return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "replace") or "(no message)"

    def _explain(self, trap: Any, instance: _Instance) -> str:
        import wasmtime

        code = trap.trap_code
        name = self._path.name
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return f"{name}: used up its fuel budget of {self._fuel} instructions for one call"
        if code == wasmtime.TrapCode.INTERRUPT:
            return f"{name}: exceeded its wall-clock limit of {self._timeout_ms:g} ms for one call"
        message = f"{name}: {_last_line(trap)}"
        try:
            size = instance.memory.data_len(instance.store)
        except Exception:  # the store may be unusable after a trap
            return message
        if size >= self._memory_limit - max(1 << 20, self._memory_limit // 8):
            message += (
                f" (its memory reached the cap of {self._memory_limit >> 20} MiB: "
                f"{size / (1 << 20):.1f} MiB in use, memory.grow refused past the cap)"
            )
        return message


def _check_module(path: Path, module: Any) -> None:
    import wasmtime

    imports = [f"{i.module}.{i.name}" for i in module.imports]
    if imports:
        raise ModelLoadError(
            f"wasm module {path} imports {', '.join(imports)}; the inferbridge ABI allows "
            "no host imports (no WASI)"
        )
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise ModelLoadError(f"wasm module {path} does not export its `memory`")
    for name, (params, results) in _REQUIRED.items():
        kind = exports.get(name)
        if not isinstance(kind, wasmtime.FuncType):
            raise ModelLoadError(f"wasm module {path} does not export the function `{name}`")
        got = (tuple(str(p) for p in kind.params), tuple(str(r) for r in kind.results))
        if got != (params, results):
            raise ModelLoadError(
                f"wasm module {path}: `{name}` has type {got[0]} -> {got[1]}; "
                f"the ABI needs {params} -> {results}"
            )


def _aligned(size: int) -> int:
    return (size + _ALIGN - 1) // _ALIGN * _ALIGN


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
