import json

import numpy as np
import orjson
import pytest

from inferbridge.errors import InvalidInput
from inferbridge.protocol.rest_codec import (
    decode_headerless_request,
    decode_infer_request,
    encode_infer_response,
)
from inferbridge.protocol.types import InferenceResponse, OutputTensor, TensorSpec


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


def test_binary_data_output_leaves_listed_outputs_json() -> None:
    # Triton's server, not its protocol document: a listed output without binary_data is
    # JSON even under binary_data_output; unlisted (no `outputs`), every one is binary.
    response = InferenceResponse(
        "m", "1", [OutputTensor("y", "FP32", np.array([1.5], dtype=np.float32))]
    )
    head = b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}], '
    listed = decode_infer_request(
        head + b'"parameters": {"binary_data_output": true}, "outputs": [{"name": "y"}]}',
        None,
        "m",
        None,
    )
    body, length = encode_infer_response(response, listed)
    assert length is None and orjson.loads(body)["outputs"][0]["data"] == [1.5]
    unlisted = decode_infer_request(
        head + b'"parameters": {"binary_data_output": true}}', None, "m", None
    )
    body, length = encode_infer_response(response, unlisted)
    assert length is not None and body[length:] == np.float32(1.5).tobytes()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]},'
            b' {"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            "input 'a' already exists in request",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b' "outputs": [{"name": "y"}, {"name": "y", "parameters": {"binary_data": true}}]}',
            "Duplicate output name 'y' is not allowed in a request",
        ),
    ],
)
def test_duplicate_names_are_refused(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        decode_infer_request(body, None, "m", None)


@pytest.mark.parametrize(
    ("shape", "batch", "body", "want"),
    [
        ((-1, -1), 8, b"\0" * 32, (1, 8)),  # batch 1, the variable dimension from the size
        ((-1, 4), 8, b"\0" * 16, (1, 4)),
        ((-1, 4), 0, b"\0" * 32, (2, 4)),  # not batching: dimension 0 is the variable one
        ((2, -1), 0, b"\0" * 24, (2, 3)),
        ((4,), 0, b"\0" * 16, (4,)),
    ],
)
def test_headerless_request_shapes(
    shape: tuple[int, ...], batch: int, body: bytes, want: tuple[int, ...]
) -> None:
    spec = TensorSpec("x", "FP32", shape)
    request = decode_headerless_request(body, "m", None, [spec], batch)
    assert request.inputs["x"].shape == want
    assert request.parameters == {"binary_data_output": True} and request.outputs is None


@pytest.mark.parametrize(
    ("spec", "batch", "body", "fragment"),
    [
        (TensorSpec("x", "FP32", (-1, 4)), 8, b"\0" * 32, "cannot derive the shape"),
        (TensorSpec("x", "FP32", (4,)), 0, b"\0" * 12, "cannot derive the shape"),
        (TensorSpec("x", "FP32", (-1, 0, -1)), 8, b"", "cannot derive the shape"),
        (TensorSpec("x", "FP16", (-1, -1, -1)), 8, b"\0" * 8, "more than one variable-sized"),
        (TensorSpec("x", "BYTES", (-1, -1)), 8, b"427", "must have input shape \\[1\\]"),
        (TensorSpec("x", "BYTES", (-1,)), 0, b"427", "must have input shape \\[1\\]"),
    ],
)
def test_headerless_request_errors(
    spec: TensorSpec, batch: int, body: bytes, fragment: str
) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        decode_headerless_request(body, "m", None, [spec], batch)


def test_headerless_bytes_input_is_one_element() -> None:
    for shape, batch, want in (((-1, 1), 8, (1, 1)), ((1,), 0, (1,))):
        request = decode_headerless_request(
            b"427", "m", None, [TensorSpec("s", "BYTES", shape)], batch
        )
        assert request.inputs["s"].shape == want
        assert request.inputs["s"].reshape(-1).tolist() == [b"427"]
