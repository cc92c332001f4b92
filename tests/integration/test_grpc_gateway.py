"""The Go gRPC gateway: it is what serves gRPC by default, and it fails safe."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from inferbridge.frontends.grpc import gateway_build
from tests.serverproc import ServerProcess, start_server

_INFER = "/inference.GRPCInferenceService/ModelInfer"


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
            if "inferbridge-grpc-gateway" in Path(f"/proc/{pid}/cmdline").read_text():
                return pid
        except OSError:
            continue
    raise AssertionError("no gateway child process")


def _raw_call(target: str, method: str, payload: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as caught:
            call(payload, timeout=10)
    error = caught.value
    assert isinstance(error, grpc.RpcError)
    return error


def test_the_default_server_serves_grpc_through_the_gateway(server: ServerProcess) -> None:
    assert any("gRPC served by the Go gateway" in line for line in server.output)
    _gateway_pid(server)


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
        assert any("gRPC gateway exited unexpectedly" in line for line in proc.output)
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
        assert any("gRPC served by grpc.aio" in line for line in proc.output)
        with grpc.insecure_channel(proc.grpc_url) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        proc.stop()
