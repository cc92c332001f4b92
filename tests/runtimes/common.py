"""Helpers shared by the runtime tests: infer through the real server, start broken repos."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.serverproc import ServerProcess, start_server

Arrays = dict[str, np.ndarray[Any, Any]]


def infer_http(
    server: ServerProcess, model: str, inputs: Arrays, outputs: list[str], *, binary: bool = True
) -> Arrays:
    """Infer over REST (tritonclient.http): the binary tensor extension, or JSON lists only."""
    client = httpclient.InferenceServerClient(url=server.http_url)
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array, binary_data=binary)
            tensors.append(tensor)
        wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
        result = client.infer(model, tensors, outputs=wanted)
        return {n: result.as_numpy(n) for n in outputs}
    finally:
        client.close()


def infer_json(server: ServerProcess, model: str, inputs: Arrays, outputs: list[str]) -> Arrays:
    """Infer over REST with JSON lists only (tritonclient.http, binary_data=False)."""
    return infer_http(server, model, inputs, outputs, binary=False)


def infer_grpc(server: ServerProcess, model: str, inputs: Arrays, outputs: list[str]) -> Arrays:
    """Infer over gRPC (tritonclient.grpc, raw_input_contents)."""
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [grpcclient.InferRequestedOutput(n) for n in outputs]
        result = client.infer(model, tensors, outputs=wanted)
        return {n: result.as_numpy(n) for n in outputs}
    finally:
        client.close()


TRANSPORTS = {"http": infer_http, "json": infer_json, "grpc": infer_grpc}


def assert_same(got: Arrays, want: Arrays, atol: float = 1e-5) -> None:
    for name, expected in want.items():
        actual = got[name]
        assert actual.shape == expected.shape, name
        if np.issubdtype(expected.dtype, np.floating):
            np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=name)


def platform_of(server: ServerProcess, model: str) -> str:
    response = httpx.get(f"{server.base_url}/v2/models/{model}", timeout=10)
    response.raise_for_status()
    return str(response.json()["platform"])


def post_json(server: ServerProcess, model: str, inputs: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=30
    )


def grpc_error(server: ServerProcess, model: str, inputs: Arrays, outputs: list[str]) -> str:
    """The gRPC status name of a request that must fail (e.g. 'StatusCode.INVALID_ARGUMENT')."""
    try:
        infer_grpc(server, model, inputs, outputs)
    except InferenceServerException as exc:
        return f"{exc.status()} {exc.message()}"
    raise AssertionError(f"request to {model} succeeded")


def model_errors(server: ServerProcess) -> dict[str, str]:
    response = httpx.get(f"{server.base_url}/v2", timeout=10)
    response.raise_for_status()
    errors: dict[str, str] = response.json().get("model_errors", {})
    return errors


def copy_model(examples: Path, name: str, target: Path, as_name: str | None = None) -> Path:
    destination = target / (as_name or name)
    shutil.copytree(examples / name, destination)
    return destination


def trust_without_pin(model_dir: Path) -> None:
    """Swap a config's pinned digests for `trust_pickle: true`, for a test that replaces
    an artefact that runs code (which its pin would refuse first)."""
    config = model_dir / "config.yaml"
    lines = [line for line in config.read_text().splitlines() if not line.startswith("sha256:")]
    config.write_text("\n".join([*lines, "trust_pickle: true"]) + "\n")


@contextmanager
def serving(repository: Path, *args: str) -> Iterator[ServerProcess]:
    server = start_server(repository, *args)
    try:
        yield server
    finally:
        server.stop()
