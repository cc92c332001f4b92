"""The Go gateway: it serves gRPC and REST by default, refuses overload itself, and fails
safe."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from inferbridge.frontends.gateway import build as gateway_build
from tests.serverproc import ServerProcess, start_server

_INFER = "/inference.GRPCInferenceService/ModelInfer"
_ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _gateway_pid(server: ServerProcess) -> int:
    for pid in _children(server.process.pid):
        try:
            if "inferbridge-gateway" in Path(f"/proc/{pid}/cmdline").read_text():
                return pid
        except OSError:
            continue
    raise AssertionError("no gateway child process")


def _listening_ports(pid: int) -> set[int]:
    """TCP ports a process listens on, from its socket inodes and /proc/net/tcp*."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _raw_call(target: str, method: str, payload: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as caught:
            call(payload, timeout=10)
    error = caught.value
    assert isinstance(error, grpc.RpcError)
    return error


def test_the_default_server_serves_both_protocols_through_the_gateway(
    server: ServerProcess,
) -> None:
    assert any("gRPC and REST served by the Go gateway" in line for line in server.output)
    gateway = _gateway_pid(server)
    listening = _listening_ports(gateway)
    assert {server.http_port, server.grpc_port} <= listening
    assert server.http_port not in _listening_ports(server.process.pid)


@pytest.mark.parametrize("method", ["/inference.GRPCInferenceService/Nope", "/no.Such/Method"])
def test_unknown_methods_are_unimplemented(grpc_server: ServerProcess, method: str) -> None:
    error = _raw_call(grpc_server.grpc_url, method, b"")
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_bytes_that_are_not_a_request_message_are_invalid(server: ServerProcess) -> None:
    error = _raw_call(server.grpc_url, _INFER, b"\xff\xff\xff\xff")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ModelInferRequest" in (error.details() or "")


def test_the_gateway_exits_with_the_server(examples_dir: Path) -> None:
    proc = start_server(examples_dir)
    gateway = _gateway_pid(proc)
    assert proc.stop(signal.SIGTERM) == 0
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{gateway}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{gateway}")


def test_a_dead_gateway_stops_the_server(examples_dir: Path) -> None:
    proc = start_server(examples_dir)
    try:
        os.kill(_gateway_pid(proc), signal.SIGKILL)
        proc.process.wait(30)
        assert proc.process.returncode == 1
        assert any("gateway exited unexpectedly" in line for line in proc.output)
    finally:
        proc.stop()


def test_without_go_the_build_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INFERBRIDGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gateway_build, "find_go", lambda: None)
    with pytest.raises(gateway_build.GatewayBuildError, match="no Go toolchain"):
        gateway_build.build_gateway()


def test_without_go_auto_falls_back_to_grpcio(examples_dir: Path, tmp_path: Path) -> None:
    """No cached binary and no Go on PATH: gRPC still works, served by grpc.aio."""
    env = {"INFERBRIDGE_CACHE_DIR": str(tmp_path), "INFERBRIDGE_GO": str(tmp_path / "no-go")}
    proc = start_server(examples_dir, env=env)
    try:
        assert any("gRPC served by grpc.aio, REST by uvicorn" in line for line in proc.output)
        assert httpx.get(f"{proc.base_url}/v2/health/ready", timeout=10).status_code == 200
        with grpc.insecure_channel(proc.grpc_url) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        proc.stop()


def test_rest_beyond_a_models_queue_bound_is_refused_by_the_gateway(tmp_path: Path) -> None:
    """The gateway knows the bound (max_queue_size 2 + 1 instance: at most 3 requests reach
    the model at once) and answers the rest 429 / RESOURCE_EXHAUSTED itself; what it
    forwards is served."""
    model = tmp_path / "slow"
    (model / "1").mkdir(parents=True)
    (model / "config.yaml").write_text(
        "runtime: tests.support.runtimes:SleepEcho\nmax_batch_size: 1\n"
        "dynamic_batching: {max_queue_size: 2}\nparameters: {sleep_s: 0.5}\n"
    )
    proc = start_server(tmp_path, env={"PYTHONPATH": str(_ROOT)})
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=30) as client:
            return list(
                await asyncio.gather(
                    *(client.post("/v2/models/slow/infer", json=body) for _ in range(8))
                )
            )

    async def grpc_burst() -> list[grpc.aio.AioRpcError | None]:
        request = service_pb2.ModelInferRequest(model_name="slow")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        request.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())
        async with grpc.aio.insecure_channel(proc.grpc_url) as channel:
            call = channel.unary_unary(
                _INFER, request_serializer=service_pb2.ModelInferRequest.SerializeToString
            )

            async def one() -> grpc.aio.AioRpcError | None:
                try:
                    await call(request, timeout=30)
                except grpc.aio.AioRpcError as error:
                    return error
                return None

            return list(await asyncio.gather(*(one() for _ in range(8))))

    try:
        responses = asyncio.run(burst())
        grpc_errors = asyncio.run(grpc_burst())
    finally:
        proc.stop()
    exhausted = [
        e for e in grpc_errors if e is not None and e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ]
    assert len(exhausted) == 5, [e and e.code() for e in grpc_errors]
    for error in exhausted:
        assert "model 'slow' is overloaded: its queue is full" in (error.details() or "")
    assert grpc_errors.count(None) == 3  # the three let through are served
    refused = [r for r in responses if r.status_code == 429]
    served = [r for r in responses if r.status_code == 200]
    assert len(served) == 3 and len(refused) == 5, [r.status_code for r in responses]
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert "model 'slow'" in response.json()["error"]
        assert "queue is full" in response.json()["error"]
