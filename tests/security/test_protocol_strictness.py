"""OIP's rules enforced by the decoders (REST JSON and binary, gRPC), each refused with a
clear 400 / INVALID_ARGUMENT, on both front ends; and REST bodies that cannot be read
(bad chunked encoding, cut short of their length) answered 400, never 200."""

from __future__ import annotations

import socket
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc.service_pb2 as triton_pb
import tritonclient.grpc.service_pb2_grpc as triton_grpc

from inferbridge.errors import InvalidInput
from inferbridge.protocol.rest_codec import decode_infer_request
from tests.serverproc import ServerProcess

IRIS = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}


def _decode(document: dict[str, Any], binary: bytes = b"", header: int | None = None) -> Any:
    body = orjson.dumps(document)
    return decode_infer_request(
        body + binary, len(body) if binary or header is not None else None, "m", None
    )


@pytest.mark.parametrize(
    ("document", "binary", "message"),
    [
        (
            {"inputs": [{**IRIS, "parameters": {"binary_data_size": 16}}]},
            bytes(16),
            "carries both 'data' and a binary_data_size parameter",
        ),
        (
            {"inputs": [IRIS], "parameters": {"priority": [1]}},
            b"",
            "parameter 'priority' must be a string, number or boolean, got an array",
        ),
        (
            {"inputs": [{**IRIS, "parameters": {"k": None}}]},
            b"",
            "input 'input': parameter 'k' must be a string, number or boolean, got null",
        ),
        (
            {"inputs": [IRIS], "outputs": [{"name": "label", "parameters": {"binary_data": "no"}}]},
            b"",
            "parameter 'binary_data' must be a boolean, got 'no'",
        ),
        (
            {"inputs": [IRIS], "parameters": {"binary_data_output": 1}},
            b"",
            "parameter 'binary_data_output' must be a boolean",
        ),
        ({"inputs": [IRIS], "outputs": [{"name": ""}]}, b"", "outputs[0] needs a string 'name'"),
        ({"inputs": [IRIS, IRIS]}, b"", "already exists in request"),
        ({"inputs": [{**IRIS, "datatype": "FP128"}]}, b"", "unknown datatype 'FP128'"),
        ({"inputs": [{**IRIS, "shape": [1, 5]}]}, b"", "needs 5 elements, the data holds 4"),
        (
            {
                "inputs": [
                    {
                        "name": "b",
                        "shape": [2],
                        "datatype": "BOOL",
                        "parameters": {"binary_data_size": 2},
                    }
                ]
            },
            b"\x00\x07",
            "BOOL data holds bytes other than 0 and 1",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            },
            bytes(12),
            "binary_data_size add up to 8",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "s",
                        "shape": [2],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 9},
                    }
                ]
            },
            b"\x01\x00\x00\x00a\x09\x00\x00\x00",
            "runs past the end of its data",
        ),
        ({"inputs": [{**IRIS, "datatype": "BYTES", "data": [1, 2, 3, 4]}]}, b"", "must be strings"),
        ({"inputs": [{**IRIS, "data": [True, False, True, False]}]}, b"", "boolean values"),
    ],
)
def test_rest_decoder_rules(document: dict[str, Any], binary: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        _decode(document, binary)
    assert message in refused.value.message


def test_negative_header_length_is_refused() -> None:
    with pytest.raises(InvalidInput, match="negative"):
        decode_infer_request(b"{}", -1, "m", None)


def test_valid_parameters_still_decode() -> None:
    request = _decode(
        {
            "id": "r",
            "parameters": {"priority": 1, "timeout": 5, "tag": "x", "ratio": 0.5, "f": False},
            "inputs": [{**IRIS, "parameters": {"note": "n"}}],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
        }
    )
    assert request.parameters["tag"] == "x" and request.outputs[0].parameters["binary_data"]


# -- against real servers --------------------------------------------------------------


def test_rest_refusals_on_both_front_ends(rest_server: ServerProcess) -> None:
    url = f"{rest_server.base_url}/v2/models/iris/infer"
    cases = [
        {"inputs": [IRIS], "parameters": {"priority": {"level": 1}}},
        {"inputs": [IRIS], "outputs": [{"name": "label", "parameters": {"binary_data": "false"}}]},
        {"inputs": [{**IRIS, "parameters": {"binary_data_size": 16}}]},
    ]
    for document in cases:
        body = orjson.dumps(document)
        headers = {"Inference-Header-Content-Length": str(len(body))}
        extra = bytes(16) if "binary_data_size" in str(document) else b""
        response = httpx.post(url, content=body + extra, headers=headers, timeout=30)
        assert response.status_code == 400, response.text
        assert response.json()["error"]
    odd = httpx.post(
        url,
        content=orjson.dumps({"inputs": [IRIS]}),
        headers={_IHCL: "²".encode("latin-1")},
        timeout=30,
    )
    assert odd.status_code == 400 and "byte count" in odd.json()["error"]


_IHCL = "Inference-Header-Content-Length"


def test_grpc_raw_and_typed_contents_together_are_refused(grpc_server: ServerProcess) -> None:
    raw = np.array([[5.1, 3.5, 1.4, 0.2]], np.float32).tobytes()
    tensor = triton_pb.ModelInferRequest().InferInputTensor(
        name="input",
        datatype="FP32",
        shape=[1, 4],
        contents=triton_pb.InferTensorContents(fp32_contents=[5.1, 3.5, 1.4, 0.2]),
    )
    request = triton_pb.ModelInferRequest(
        model_name="iris", inputs=[tensor], raw_input_contents=[raw]
    )
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = triton_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents" in str(refused.value.details())
        del request.raw_input_contents[:]  # typed contents alone are fine
        assert stub.ModelInfer(request, timeout=30).outputs


# -- bodies that cannot be read ----------------------------------------------------------

_BODY = orjson.dumps({"inputs": [IRIS]})
_HEAD = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
_CHUNK = b"%x\r\n" % len(_BODY)
_NOT_HEX = _HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + _BODY + b"\r\n0\r\n\r\n"
#: Each with the status a server must answer (the client half-closes after sending, except
#: in the first case: the issue's own example, with the connection left open).
_UNREADABLE = {
    "chunk size not hex, connection open": (_NOT_HEX, 400),
    "chunk size not hex": (_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + _BODY, 400),
    "chunk cut short": (_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _CHUNK + _BODY[:9], 400),
    "no last chunk": (
        _HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _CHUNK + _BODY + b"\r\n",
        400,
    ),
    "body short of Content-Length": (_HEAD + b"Content-Length: 500\r\n\r\n" + _BODY, 400),
    "a whole request, then a half-close": (
        _HEAD + b"Content-Length: %d\r\n\r\n" % len(_BODY) + _BODY,
        200,
    ),
    "a whole chunked request, then a half-close": (
        _HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _CHUNK + _BODY + b"\r\n0\r\n\r\n",
        200,
    ),
}
#: What the Go front-end process does not do: it takes a half-close (EOF) after a whole
#: request for a client that went away (TCP cannot tell the two apart; a disconnect must
#: cancel the request), so it closes the connection without an answer.
_GATEWAY_BUGS = {
    "a whole request, then a half-close",
    "a whole chunked request, then a half-close",
}


def _exchange(port: int, data: bytes, half_close: bool) -> tuple[int, bytes]:
    """Send `data`, read until the server closes; (0, b"") if it closed without answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer:
        return 0, b""  # closed without an answer
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("case", sorted(_UNREADABLE))
def test_unreadable_bodies_are_answered_400(
    case: str, rest_server: ServerProcess, request: pytest.FixtureRequest
) -> None:
    gateway = any("served by the Go gateway" in line for line in rest_server.output)
    if gateway and case in _GATEWAY_BUGS:
        request.applymarker(
            pytest.mark.xfail(
                strict=False,  # the reply can beat the EOF: then it is answered
                reason="Go front end (issue #16): a half-close before the reply is taken "
                "for a disconnect (the request is cancelled, no answer)",
            )
        )
    data, want = _UNREADABLE[case]
    status, body = _exchange(rest_server.http_port, data, "open" not in case)
    assert status == want, (status, body)
    if want == 400:
        assert body, "a 400 must say why"
    else:
        assert b'"outputs"' in body
