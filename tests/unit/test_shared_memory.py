"""The system shared-memory registry: registration checks, bounds on every use, BYTES, and
release while a request still holds an input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferbridge.errors import InvalidInput, ModelNotFound
from inferbridge.protocol.shared_memory import RegionNotFound, SharedMemoryRegistry
from inferbridge.protocol.tensors import serialize_bytes_tensor
from inferbridge.protocol.types import OutputTensor


@pytest.fixture
def registry(tmp_path: Path) -> SharedMemoryRegistry:
    (tmp_path / "region").write_bytes(bytes(256))
    return SharedMemoryRegistry(str(tmp_path))


def _params(region: str, size: int, offset: int | None = None) -> dict[str, object]:
    params: dict[str, object] = {"shared_memory_region": region, "shared_memory_byte_size": size}
    if offset is not None:
        params["shared_memory_offset"] = offset
    return params


def test_register_status_unregister(registry: SharedMemoryRegistry) -> None:
    registry.register("a", "/region", 0, 128)
    registry.register("b", "region", 128, 128)  # the same object, by a key without slash
    assert [s.to_json() for s in registry.status()] == [
        {"name": "a", "key": "/region", "offset": 0, "byte_size": 128},
        {"name": "b", "key": "region", "offset": 128, "byte_size": 128},
    ]
    assert [s.name for s in registry.status("b")] == ["b"]
    registry.unregister("a")
    assert [s.name for s in registry.status()] == ["b"]
    registry.unregister()
    assert registry.status() == []


@pytest.mark.parametrize(
    ("key", "offset", "size", "message"),
    [
        ("/region", 200, 100, "offset 200 + byte_size 100 is beyond the 256 bytes"),
        ("/region", 0, 0, "byte_size must be above 0"),
        ("/region", -1, 8, "offset must be a non-negative integer"),
        ("/missing", 0, 8, "no shared memory object with key '/missing'"),
        ("/../region", 0, 8, "not a POSIX shared memory name"),
        ("/", 0, 8, "not a POSIX shared memory name"),
        ("/a/b", 0, 8, "not a POSIX shared memory name"),
    ],
)
def test_register_refusals(
    registry: SharedMemoryRegistry, key: str, offset: int, size: int, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message.replace("+", r"\+")):
        registry.register("r", key, offset, size)
    assert registry.status() == []


def test_register_twice_and_unknown_names(registry: SharedMemoryRegistry) -> None:
    registry.register("r", "/region", 0, 16)
    with pytest.raises(InvalidInput, match="already registered"):
        registry.register("r", "/region", 0, 16)
    with pytest.raises(RegionNotFound, match="'nope'"):
        registry.status("nope")
    with pytest.raises(ModelNotFound):  # REST 404, NOT_FOUND
        registry.unregister("nope")
    with pytest.raises(InvalidInput, match="1 to 255 characters"):
        registry.register("", "/region", 0, 16)


def test_inputs_are_read_in_place_and_bounds_checked(
    registry: SharedMemoryRegistry, tmp_path: Path
) -> None:
    values = np.arange(8, dtype=np.float32)
    data = bytearray(256)
    data[64:96] = values.tobytes()
    (tmp_path / "region").write_bytes(bytes(data))
    registry.register("r", "/region", 32, 128)  # the window starts at byte 32 of the object
    array = registry.read_input("x", "FP32", (2, 4), _params("r", 32, 32))
    np.testing.assert_array_equal(array, values.reshape(2, 4))
    with pytest.raises(InvalidInput, match=r"offset 100 \+ byte_size 32 is beyond .* 128 bytes"):
        registry.read_input("x", "FP32", (2, 4), _params("r", 32, 100))
    with pytest.raises(InvalidInput, match="needs 32 bytes of data, got 16"):
        registry.read_input("x", "FP32", (2, 4), _params("r", 16))
    with pytest.raises(InvalidInput, match="'other' is not registered"):
        registry.read_input("x", "FP32", (2, 4), _params("other", 32))
    with pytest.raises(InvalidInput, match="needs 'shared_memory_byte_size'"):
        registry.read_input("x", "FP32", (2, 4), {"shared_memory_region": "r"})
    with pytest.raises(InvalidInput, match="'shared_memory_offset' must be a non-negative"):
        registry.read_input("x", "FP32", (2, 4), _params("r", 32, -4))
    # Unregistering while a request still holds the array keeps the array valid.
    registry.unregister("r")
    np.testing.assert_array_equal(array, values.reshape(2, 4))


def test_outputs_are_written_and_checked(registry: SharedMemoryRegistry, tmp_path: Path) -> None:
    registry.register("r", "/region", 0, 64)
    tensor = OutputTensor("y", "INT32", np.arange(4, dtype=np.int32).reshape(2, 2))
    echoed = registry.write_output(tensor, _params("r", 32, 16))
    assert echoed == {
        "shared_memory_region": "r",
        "shared_memory_byte_size": 32,
        "shared_memory_offset": 16,
    }
    registry.close()
    raw = (tmp_path / "region").read_bytes()
    assert np.frombuffer(raw[16:32], dtype="<i4").tolist() == [0, 1, 2, 3]
    registry.register("r", "/region", 0, 64)
    with pytest.raises(InvalidInput, match="needs 16 bytes; shared_memory_byte_size is 8"):
        registry.write_output(tensor, _params("r", 8))


def test_bytes_tensors_use_length_prefixes(registry: SharedMemoryRegistry, tmp_path: Path) -> None:
    values = np.array([b"ab", b"", b"xyz"], dtype=object)
    raw = serialize_bytes_tensor(values)
    (tmp_path / "region").write_bytes(raw + bytes(256 - len(raw)))
    registry.register("r", "/region", 0, 256)
    got = registry.read_input("s", "BYTES", (3,), _params("r", len(raw)))
    assert got.tolist() == [b"ab", b"", b"xyz"]
    registry.write_output(OutputTensor("t", "BYTES", values), _params("r", 64, 100))
    registry.close()
    assert (tmp_path / "region").read_bytes()[100 : 100 + len(raw)] == raw
