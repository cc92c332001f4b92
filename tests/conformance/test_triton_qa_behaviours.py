"""What Triton's QA files (test_triton_qa.py, run from a local copy) check, written here
against the same Triton-layout repository so that CI covers it without their files: the
element-count and byte-size overflow phrases, a repository index body nested past the JSON
parser's depth limit, Triton's phrase for load/unload outside explicit mode, and Triton's
phrase for a shared memory key that names nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from inferbridge.errors import InvalidInput
from inferbridge.frontends.rest.index import index_ready_only
from tests.conformance.triton_qa.repository import build_http_repository
from tests.serverproc import ServerProcess, start_server

POLLING = "explicit model load / unload is not allowed if polling is enabled"


@pytest.fixture(scope="module")
def qa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(build_http_repository(tmp_path_factory.mktemp("qa-http")))
    yield server
    server.stop()


def _infer(server: ServerProcess, shape: list[int]) -> httpx.Response:
    body = {"inputs": [{"name": "INPUT0", "shape": shape, "datatype": "FP32", "data": [1.0]}]}
    return httpx.post(f"{server.base_url}/v2/models/onnx_zero_1_float32/infer", json=body)


@pytest.mark.parametrize(
    ("shape", "phrase"),
    [
        ([2**4, 2**60 + 2], "causes total element count to exceed maximum size of"),
        ([2**2, 2**60 + 2], "byte size overflow for input 'INPUT0'"),
    ],
)
def test_a_shape_past_any_buffer_is_400_with_tritons_phrase(
    qa_server: ServerProcess, shape: list[int], phrase: str
) -> None:
    response = _infer(qa_server, shape)
    assert response.status_code == 400
    assert phrase in response.json()["error"]


def test_an_index_ready_nested_past_the_parsers_limit_is_not_a_boolean(
    qa_server: ServerProcess,
) -> None:
    depth = 250_000  # Triton's test_repository_index_deeply_nested_json
    body = '{"ready":' + "[" * depth + "true" + "]" * depth + "}"
    response = httpx.post(f"{qa_server.base_url}/v2/repository/index", content=body, timeout=60)
    assert response.status_code == 400
    assert "Invalid value for 'ready': expected a boolean" in response.json()["error"]
    assert httpx.get(f"{qa_server.base_url}/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    ("body", "ready"),
    [(b"", False), (b" ", False), (b"{}", False), (b'{"ready": true}', True)],
)
def test_index_bodies(body: bytes, ready: bool) -> None:
    assert index_ready_only(body) is ready


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        (b'{"ready": "yes"}', "Invalid value for 'ready': expected a boolean, got 'yes'"),
        (b'{"ready": [true]}', "Invalid value for 'ready': expected a boolean"),
        (b'{"ready": ' + b"[" * 2000 + b"]" * 2000 + b"}", "expected a boolean"),
        (b'{"other": ' + b"[" * 2000 + b"]" * 2000 + b"}", "malformed JSON"),
        (b"[true]", "must be a JSON object"),
        (b"{", "malformed JSON"),
    ],
)
def test_index_bodies_refused(body: bytes, phrase: str) -> None:
    with pytest.raises(InvalidInput) as info:
        index_ready_only(body)
    assert phrase in str(info.value)


def test_load_and_unload_outside_explicit_mode_carry_tritons_phrase(
    qa_server: ServerProcess,
) -> None:
    http = httpclient.InferenceServerClient(qa_server.http_url)
    grpc = grpcclient.InferenceServerClient(qa_server.grpc_url)
    try:
        for call in (http.load_model, http.unload_model, grpc.load_model, grpc.unload_model):
            with pytest.raises(InferenceServerException, match=POLLING):
                call("onnx_zero_1_float32")
    finally:
        http.close()
        grpc.close()


def test_a_shared_memory_key_that_names_nothing_carries_tritons_phrase(
    qa_server: ServerProcess,
) -> None:
    # Triton's aio QA: register("test_shm", "/test_shm", 0) fails on the key before the size.
    grpc = grpcclient.InferenceServerClient(qa_server.grpc_url)
    http = httpclient.InferenceServerClient(qa_server.http_url)
    try:
        for client in (grpc, http):
            with pytest.raises(InferenceServerException) as info:
                client.register_system_shared_memory("test_shm", "/test_shm_absent_qa", 0)
            assert "Unable to open shared memory region: '/test_shm_absent_qa'" in str(
                info.value
            )
    finally:
        http.close()
        grpc.close()


def test_the_repository_is_tritons_layout(tmp_path: Path) -> None:
    root = build_http_repository(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == [
        "onnx_zero_1_float16", "onnx_zero_1_float32", "onnx_zero_1_float32_queue",
        "onnx_zero_1_object", "onnx_zero_1_object_1_element", "onnx_zero_3_float32",
        "simple_identity", "simple_identity_int64",
    ]  # fmt: skip
    assert all((p / "config.pbtxt").is_file() and (p / "1" / "model.onnx").is_file()
               for p in root.iterdir())  # fmt: skip
