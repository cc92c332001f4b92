"""System shared memory with tritonclient against real servers (the Go gateway and the
Python front ends): Triton's simple_http_shm_client / simple_grpc_shm_client flow on a
model like Triton's `simple`, BYTES, mixed shared-memory and in-message tensors, status,
unregister, and the errors (bounds, unknown and doubly registered regions), plus CUDA
shared memory's refusal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from tests.serverproc import ServerProcess, start_server

Client = Any


def build_repository(root: Path) -> Path:
    """`simple` (Triton's example model: INT32 INPUT0, INPUT1 [-1, 16]; OUTPUT0 = sum,
    OUTPUT1 = difference) and `identity_bytes` (BYTES [-1, -1])."""
    import onnx
    from onnx import TensorProto, helper

    def save(
        name: str, nodes: list[Any], inputs: list[Any], outputs: list[Any], config: str = ""
    ) -> None:
        graph = helper.make_graph(nodes, name, inputs, outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        (root / name / "1").mkdir(parents=True)
        onnx.save(model, root / name / "1" / "model.onnx")
        (root / name / "config.yaml").write_text("runtime: onnx\n" + config)

    info = helper.make_tensor_value_info
    int32 = TensorProto.INT32
    for name, config in (
        ("simple", ""),
        # The same model behind the dynamic batcher: requests from regions share a batch.
        ("simple_batched", "max_batch_size: 8\ndynamic_batching:\n  max_queue_delay_ms: 50\n"),
    ):
        save(
            name,
            [
                helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
                helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
            ],
            [info("INPUT0", int32, ["n", 16]), info("INPUT1", int32, ["n", 16])],
            [info("OUTPUT0", int32, ["n", 16]), info("OUTPUT1", int32, ["n", 16])],
            config,
        )
    save(
        "identity_bytes",
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        [info("INPUT0", TensorProto.STRING, ["n", "m"])],
        [info("OUTPUT0", TensorProto.STRING, ["n", "m"])],
    )
    return root


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("shm_repo"))


@pytest.fixture(scope="module", params=["gateway", "python"])
def served(request: pytest.FixtureRequest, repository: Path) -> Iterator[ServerProcess]:
    args = (
        []
        if request.param == "gateway"
        else ["--grpc-frontend", "grpcio", "--rest-frontend", "uvicorn"]
    )
    proc = start_server(repository, *args)
    yield proc
    proc.stop()


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, served: ServerProcess) -> Iterator[tuple[Any, Client]]:
    if request.param == "http":
        c: Client = httpclient.InferenceServerClient(served.http_url)
        module: Any = httpclient
    else:
        c = grpcclient.InferenceServerClient(served.grpc_url)
        module = grpcclient
    c.unregister_system_shared_memory()
    yield module, c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def regions() -> Iterator[list[Any]]:
    """Regions a test creates (destroyed after it)."""
    made: list[Any] = []
    yield made
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def _region(regions: list[Any], byte_size: int) -> tuple[str, str, Any]:
    name = f"r{uuid.uuid4().hex[:10]}"
    key = f"/ib_test_{name}"
    handle = shm.create_shared_memory_region(name, key, byte_size)
    regions.append(handle)
    return name, key, handle


def _status(module: Any, c: Client, name: str = "") -> dict[str, dict[str, int | str]]:
    status = c.get_system_shared_memory_status(name)
    if module is httpclient:
        return {s["name"]: s for s in status}
    return {
        n: {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
        for n, r in status.regions.items()
    }


def test_simple_shm_client_flow(client: tuple[Any, Client], regions: list[Any]) -> None:
    """What Triton's simple_{http,grpc}_shm_client examples do, step by step: both inputs
    in one region, both outputs in another (HTTP asks for them binary, as the example
    does), read back from the region."""
    module, c = client
    c.unregister_system_shared_memory()
    c.unregister_cuda_shared_memory()
    input0 = np.arange(16, dtype=np.int32)
    input1 = np.ones(16, dtype=np.int32)
    size = input0.nbytes
    out_name, out_key, out_handle = _region(regions, size * 2)
    c.register_system_shared_memory(out_name, out_key, size * 2)
    in_name, in_key, in_handle = _region(regions, size * 2)
    shm.set_shared_memory_region(in_handle, [input0])
    shm.set_shared_memory_region(in_handle, [input1], offset=size)
    c.register_system_shared_memory(in_name, in_key, size * 2)

    inputs = [module.InferInput("INPUT0", [1, 16], "INT32")]
    inputs[-1].set_shared_memory(in_name, size)
    inputs.append(module.InferInput("INPUT1", [1, 16], "INT32"))
    inputs[-1].set_shared_memory(in_name, size, offset=size)
    binary = {"binary_data": True} if module is httpclient else {}
    outputs = [module.InferRequestedOutput("OUTPUT0", **binary)]
    outputs[-1].set_shared_memory(out_name, size)
    outputs.append(module.InferRequestedOutput("OUTPUT1", **binary))
    outputs[-1].set_shared_memory(out_name, size, offset=size)
    result = c.infer(model_name="simple", inputs=inputs, outputs=outputs)

    out0 = result.get_output("OUTPUT0")
    if module is httpclient:
        assert out0["shape"] == [1, 16] and out0["datatype"] == "INT32"
        assert out0["parameters"]["shared_memory_region"] == out_name
        assert "data" not in out0
    else:
        assert list(out0.shape) == [1, 16] and out0.datatype == "INT32"
        assert out0.parameters["shared_memory_region"].string_param == out_name
        assert len(result.get_response().raw_output_contents) == 0
    got0 = shm.get_contents_as_numpy(out_handle, np.int32, [1, 16])
    got1 = shm.get_contents_as_numpy(out_handle, np.int32, [1, 16], offset=size)
    np.testing.assert_array_equal(got0, [input0 + input1])
    np.testing.assert_array_equal(got1, [input0 - input1])

    status = _status(module, c)
    assert status[in_name] == {"name": in_name, "key": in_key, "offset": 0, "byte_size": size * 2}
    assert set(_status(module, c, out_name)) == {out_name}
    c.unregister_system_shared_memory(in_name)
    assert in_name not in _status(module, c)
    c.unregister_system_shared_memory()
    assert _status(module, c) == {}


def test_mixed_shared_memory_and_message(client: tuple[Any, Client], regions: list[Any]) -> None:
    """One input in shared memory, the other in the message; one output in shared memory,
    the other in the response (gRPC buffers stay in output order)."""
    module, c = client
    input0 = np.full((2, 16), 7, dtype=np.int32)
    input1 = np.arange(32, dtype=np.int32).reshape(2, 16)
    name, key, handle = _region(regions, 4096)
    shm.set_shared_memory_region(handle, [input1], offset=128)
    c.register_system_shared_memory(name, key, 4096)
    inputs = [
        module.InferInput("INPUT0", [2, 16], "INT32"),
        module.InferInput("INPUT1", [2, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(input0)
    inputs[1].set_shared_memory(name, input1.nbytes, offset=128)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory(name, input1.nbytes, offset=1024)
    result = c.infer("simple", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), input0 - input1)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(handle, np.int32, [2, 16], offset=1024), input0 + input1
    )


def test_bytes_through_shared_memory(client: tuple[Any, Client], regions: list[Any]) -> None:
    module, c = client
    values = np.array([[b"alpha", b""], [b"b e t a", "ünï".encode()]], dtype=np.object_)
    raw = serialize_byte_tensor(values)  # Triton's 4-byte length prefixes, as one item
    size = len(raw.item())
    in_name, in_key, in_handle = _region(regions, size)
    out_name, out_key, out_handle = _region(regions, 256)
    shm.set_shared_memory_region(in_handle, [raw])
    c.register_system_shared_memory(in_name, in_key, size)
    c.register_system_shared_memory(out_name, out_key, 256)
    tensor = module.InferInput("INPUT0", [2, 2], "BYTES")
    tensor.set_shared_memory(in_name, size)
    output = module.InferRequestedOutput("OUTPUT0")
    output.set_shared_memory(out_name, 256)
    c.infer("identity_bytes", [tensor], outputs=[output])
    got = shm.get_contents_as_numpy(out_handle, np.object_, [2, 2])
    assert got.tolist() == values.tolist()


def _error(call: Any) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    return f"{info.value.status()} {info.value.message()}"


def test_register_errors(client: tuple[Any, Client], regions: list[Any]) -> None:
    module, c = client
    name, key, _ = _region(regions, 64)
    bad = "400" if module is httpclient else "INVALID_ARGUMENT"
    missing = "404" if module is httpclient else "NOT_FOUND"
    message = _error(lambda: c.register_system_shared_memory(name, key, 64, offset=8))
    assert bad in message and "beyond the 64 bytes" in message
    message = _error(lambda: c.register_system_shared_memory(name, "/ib_no_such_key", 64))
    assert bad in message and "no shared memory object" in message
    message = _error(lambda: c.register_system_shared_memory(name, "/../etc/passwd", 64))
    assert bad in message and "not a POSIX shared memory name" in message
    c.register_system_shared_memory(name, key, 64)
    message = _error(lambda: c.register_system_shared_memory(name, key, 64))
    assert bad in message and "already registered" in message
    message = _error(lambda: c.get_system_shared_memory_status("nope"))
    assert missing in message and "nope" in message
    message = _error(lambda: c.unregister_system_shared_memory("nope"))
    assert missing in message


def test_infer_bounds_errors(client: tuple[Any, Client], regions: list[Any]) -> None:
    module, c = client
    name, key, _ = _region(regions, 128)
    c.register_system_shared_memory(name, key, 96)
    bad = "400" if module is httpclient else "INVALID_ARGUMENT"

    def infer(in_size: int, in_offset: int, out_size: int, region: str = name) -> str:
        inputs = [module.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        inputs[0].set_shared_memory(region, in_size, offset=in_offset)
        inputs[1].set_shared_memory(name, 64)
        output = module.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory(name, out_size)
        return _error(lambda: c.infer("simple", inputs, outputs=[output]))

    message = infer(64, 64, 64)
    assert bad in message and "beyond shared memory region" in message and "96 bytes" in message
    message = infer(32, 0, 64)
    assert bad in message and "needs 64 bytes" in message
    message = infer(64, 0, 32)
    assert bad in message and "needs 64 bytes; shared_memory_byte_size is 32" in message
    message = infer(64, 0, 64, region="unknown_region")
    assert bad in message and "'unknown_region' is not registered" in message


def test_cuda_shared_memory_is_refused(client: tuple[Any, Client]) -> None:
    module, c = client
    status = c.get_cuda_shared_memory_status()
    assert (status == []) if module is httpclient else (len(status.regions) == 0)
    message = _error(lambda: c.register_cuda_shared_memory("gpu", b"\x00" * 64, 0, 64))
    assert "CUDA shared memory is not supported on this server (no GPU build)" in message
    c.unregister_cuda_shared_memory()


def test_server_metadata_lists_the_extensions(served: ServerProcess) -> None:
    extensions = httpclient.InferenceServerClient(served.http_url).get_server_metadata()[
        "extensions"
    ]
    assert {"system_shared_memory", "logging", "trace"} <= set(extensions)
    assert "cuda_shared_memory" not in extensions


def test_batched_requests_from_regions(
    client: tuple[Any, Client], served: ServerProcess, regions: list[Any]
) -> None:
    """Four concurrent requests, each from its own slots of one region, through the dynamic
    batcher (its 50 ms window lets them share batches); each answer lands in its own slot."""
    module, c = client
    size = 64
    name, key, handle = _region(regions, size * 2 * 4)
    out_name, out_key, out_handle = _region(regions, size * 4)
    for i in range(4):
        shm.set_shared_memory_region(
            handle, [np.full(16, i, dtype=np.int32), np.full(16, 10 * i, dtype=np.int32)], i * 128
        )
    c.register_system_shared_memory(name, key, size * 2 * 4)
    c.register_system_shared_memory(out_name, out_key, size * 4)

    def infer(i: int) -> None:
        url = served.http_url if module is httpclient else served.grpc_url
        own: Client = module.InferenceServerClient(url)
        inputs = [module.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        inputs[0].set_shared_memory(name, size, offset=i * 128)
        inputs[1].set_shared_memory(name, size, offset=i * 128 + size)
        output = module.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory(out_name, size, offset=i * size)
        own.infer("simple_batched", inputs, outputs=[output])
        own.close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(infer, range(4)))
    for i in range(4):
        got = shm.get_contents_as_numpy(out_handle, np.int32, [16], offset=i * size)
        assert got.tolist() == [11 * i] * 16


def test_rest_routes_answer_clearly(served: ServerProcess) -> None:
    base = f"{served.base_url}/v2"
    answer = httpx.get(f"{base}/systemsharedmemory/region/r/register", timeout=10)
    assert answer.status_code == 405 and "use POST" in answer.json()["error"]
    answer = httpx.post(
        f"{base}/systemsharedmemory/region/r/register", json={"key": "/k", "size": 1}, timeout=10
    )
    assert answer.status_code == 400 and "unknown field(s) ['size']" in answer.json()["error"]
    answer = httpx.get(f"{base}/cudasharedmemory/region/gpu/status", timeout=10)
    assert answer.status_code == 400 and "no GPU build" in answer.json()["error"]
    assert httpx.get(f"{base}/cudasharedmemory/status", timeout=10).json() == []
    assert httpx.get(f"{base}/systemsharedmemory/nonsense", timeout=10).status_code == 404
