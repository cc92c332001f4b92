import json

import numpy as np
import orjson
import pytest

from inferbridge.errors import InvalidInput
from inferbridge.protocol.rest_codec import decode_infer_request, encode_infer_response
from inferbridge.protocol.types import InferenceResponse, OutputTensor


def _binary_body(header: dict[str, object], *chunks: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), len(head)


def test_binary_inputs_are_split_in_order() -> None:
    a = np.arange(4, dtype=np.float32)
    b = np.array([1, 2], dtype=np.int64)
    body, length = _binary_body(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                },
                {
                    "name": "b",
                    "datatype": "INT64",
                    "shape": [2],
                    "parameters": {"binary_data_size": 16},
                },
            ]
        },
        a.tobytes(),
        b.tobytes(),
    )
    request = decode_infer_request(body, length, "m", None)
    np.testing.assert_array_equal(request.inputs["a"], a)
    np.testing.assert_array_equal(request.inputs["b"], b)


@pytest.mark.parametrize(
    ("size", "extra", "fragment"),
    [
        (16, b"", "runs past the end"),
        (4, b"", "needs 8 bytes of data, got 4"),
        (8, b"\0\0", "add up to 8"),
    ],
)
def test_bad_binary_framing(size: int, extra: bytes, fragment: str) -> None:
    body, length = _binary_body(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [2],
                    "parameters": {"binary_data_size": size},
                }
            ]
        },
        b"\0" * 8 + extra,
    )
    with pytest.raises(InvalidInput, match=fragment):
        decode_infer_request(body, length, "m", None)


def test_header_length_past_the_body() -> None:
    with pytest.raises(InvalidInput, match="only 2 bytes"):
        decode_infer_request(b"{}", 10, "m", None)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "malformed JSON"),
        (b"[]", "JSON object"),
        (b'{"inputs": []}', "non-empty 'inputs'"),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP99", "shape": [1], "data": [1]}]}',
            "unknown datatype",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1], "data": [1]}]}',
            "non-negative",
        ),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]}', "neither 'data'"),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [' + b"1," * 64 + b"1],"
            b' "data": [1]}]}',
            "at most 32",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "BYTES", "shape": [1], "data": [1000]}]}',
            "must be strings",
        ),
    ],
)
def test_malformed_json_requests(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        decode_infer_request(body, None, "m", None)


def test_response_outputs_go_binary_only_when_asked() -> None:
    request = decode_infer_request(
        b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}],'
        b' "outputs": [{"name": "y", "parameters": {"binary_data": true}}, {"name": "z"}]}',
        None,
        "m",
        None,
    )
    response = InferenceResponse(
        "m",
        "1",
        [
            OutputTensor("y", "FP32", np.array([1.5, 2.5], dtype=np.float32)),
            OutputTensor("z", "BYTES", np.array([b"ok"], dtype=object)),
        ],
    )
    body, length = encode_infer_response(response, request)
    assert length is not None
    header = orjson.loads(body[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert header["outputs"][1]["data"] == ["ok"]
    np.testing.assert_array_equal(np.frombuffer(body[length:], dtype=np.float32), [1.5, 2.5])
