"""Property tests of the REST codecs: every datatype and shape round-trips through the JSON
and binary encodings, and no body — random bytes, random JSON, a real request with random
parts — makes the decoder raise anything but a domain error."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from inferbridge.errors import InferBridgeError
from inferbridge.protocol.rest_codec import decode_infer_request, encode_infer_response
from inferbridge.protocol.tensors import array_from_raw, array_to_raw
from inferbridge.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    OutputTensor,
    RequestedOutput,
)
from tests.security.strategies import BOUNDED, json_values, tensors


def _json_data(datatype: str, array: np.ndarray[Any, Any]) -> Any:
    if datatype == "BYTES":
        return [item.decode() for item in array.reshape(-1)]
    return array.tolist()


def _assert_same(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert list(got.reshape(-1)) == list(want.reshape(-1))
    else:
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()  # bit for bit: NaN payloads and -0.0 too


@BOUNDED
@given(tensors(finite=True, text=True), st.booleans())
def test_json_requests_round_trip(tensor: tuple[str, np.ndarray[Any, Any]], nested: bool) -> None:
    datatype, array = tensor
    data = _json_data(datatype, array)
    if not nested and datatype != "BYTES":
        data = array.reshape(-1).tolist()
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": list(array.shape), "datatype": datatype, "data": data}]}
    )
    request = decode_infer_request(body, None, "m", None)
    assert request.input_datatypes == {"x": datatype}
    _assert_same(request.inputs["x"], array)


@BOUNDED
@given(st.lists(tensors(), min_size=1, max_size=3))
def test_binary_requests_round_trip(items: list[tuple[str, np.ndarray[Any, Any]]]) -> None:
    raws = [array_to_raw(array, datatype) for datatype, array in items]
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": f"x{i}",
                    "shape": list(array.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
                for i, ((datatype, array), raw) in enumerate(zip(items, raws, strict=True))
            ]
        }
    )
    request = decode_infer_request(header + b"".join(raws), len(header), "m", None)
    for i, (_, array) in enumerate(items):
        _assert_same(request.inputs[f"x{i}"], array)


@BOUNDED
@given(tensors(finite=True, text=True), st.booleans())
def test_responses_round_trip(tensor: tuple[str, np.ndarray[Any, Any]], binary: bool) -> None:
    datatype, array = tensor
    response = InferenceResponse("m", "1", [OutputTensor("y", datatype, array)])
    request = InferenceRequest(
        "m", None, {}, {}, outputs=[RequestedOutput("y", {"binary_data": binary})]
    )
    body, header_length = encode_infer_response(response, request)
    document = orjson.loads(body[:header_length] if header_length is not None else body)
    (output,) = document["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "y",
        datatype,
        list(array.shape),
    )
    if binary:
        assert header_length is not None
        raw = body[header_length:]
        assert output["parameters"]["binary_data_size"] == len(raw)
        _assert_same(array_from_raw("y", datatype, array.shape, raw), array)
    else:
        assert header_length is None
        flat = array.reshape(-1)
        if datatype == "BYTES":
            assert output["data"] == [x.decode() for x in flat]
        else:
            # Floats travel in their datatype's shortest form (FP16 0.1 is 0.099975586):
            # read back at that precision, they are the same bits.
            _assert_same(np.asarray(output["data"], dtype=array.dtype).reshape(-1), flat)


def _decodes_or_refuses(body: bytes, header_length: int | None) -> None:
    try:
        result = decode_infer_request(body, header_length, "m", None)
    except InferBridgeError:
        return
    assert isinstance(result, InferenceRequest)


@BOUNDED
@given(st.binary(max_size=256), st.none() | st.integers(-4, 300))
def test_any_bytes_decode_or_are_refused(body: bytes, header_length: int | None) -> None:
    _decodes_or_refuses(body, header_length)


@BOUNDED
@given(json_values)
def test_any_json_document_decodes_or_is_refused(document: Any) -> None:
    _decodes_or_refuses(json.dumps(document).encode(), None)


_FIELD = st.sampled_from(["name", "shape", "datatype", "data", "parameters", "id", "outputs"])


@BOUNDED
@given(
    tensors(finite=True, text=True),
    st.dictionaries(_FIELD, json_values, max_size=3),
    st.dictionaries(st.sampled_from(["id", "parameters", "outputs"]), json_values, max_size=2),
    st.binary(max_size=32),
)
def test_requests_with_random_parts_decode_or_are_refused(
    tensor: tuple[str, np.ndarray[Any, Any]],
    input_changes: dict[str, Any],
    request_changes: dict[str, Any],
    tail: bytes,
) -> None:
    datatype, array = tensor
    item = {
        "name": "x",
        "shape": list(array.shape),
        "datatype": datatype,
        "data": _json_data(datatype, array),
        **input_changes,
    }
    header = json.dumps({"inputs": [item], **request_changes}).encode()
    _decodes_or_refuses(header, None)
    _decodes_or_refuses(header + tail, len(header))
