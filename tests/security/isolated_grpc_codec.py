"""The gRPC codec: OIP's rules for ModelInferRequest, round trips of every datatype and
shape (raw and typed contents), and any message or byte string decoding to a request or a
domain error, never another exception.

Run by test_grpc_codec.py in a pytest process of its own: it imports inferbridge's gRPC
stubs, which register the same protobuf file names as tritonclient's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from inferbridge.errors import InferBridgeError, InvalidInput
from inferbridge.protocol.generated import grpc_service_pb2 as pb
from inferbridge.protocol.grpc_codec import (
    decode_model_infer_request,
    encode_model_infer_response,
)
from inferbridge.protocol.tensors import array_from_raw, array_to_raw
from inferbridge.protocol.types import InferenceResponse, OutputTensor
from tests.security.strategies import BOUNDED, tensors

Tensor = pb.ModelInferRequest.InferInputTensor

_TYPED = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _fp32(name: str = "x", values: tuple[float, ...] = (1.0, 2.0)) -> Any:
    return Tensor(
        name=name,
        datatype="FP32",
        shape=[len(values)],
        contents=pb.InferTensorContents(fp32_contents=list(values)),
    )


def test_raw_input_contents_and_typed_contents_together_are_refused() -> None:
    raw = np.array([1.0, 2.0], np.float32).tobytes()
    message = pb.ModelInferRequest(model_name="m", inputs=[_fp32()], raw_input_contents=[raw])
    with pytest.raises(InvalidInput, match="sets contents while the request uses raw_input"):
        decode_model_infer_request(message)
    # Even an empty contents message counts: the client set the field.
    empty = Tensor(name="x", datatype="FP32", shape=[2], contents=pb.InferTensorContents())
    message = pb.ModelInferRequest(model_name="m", inputs=[empty], raw_input_contents=[raw])
    with pytest.raises(InvalidInput, match="sets contents"):
        decode_model_infer_request(message)


def test_typed_contents_in_the_wrong_field_are_refused() -> None:
    tensor = Tensor(
        name="x",
        datatype="FP32",
        shape=[2],
        contents=pb.InferTensorContents(fp32_contents=[1.0, 2.0], int_contents=[3]),
    )
    with pytest.raises(InvalidInput, match=r"FP32 data travels in fp32_contents.*int_contents"):
        decode_model_infer_request(pb.ModelInferRequest(model_name="m", inputs=[tensor]))


def test_other_rules() -> None:
    cases: list[tuple[Any, str]] = [
        (pb.ModelInferRequest(model_name="m"), "at least one input"),
        (pb.ModelInferRequest(inputs=[_fp32(""), _fp32()]), r"inputs\[0\] needs a name"),
        (pb.ModelInferRequest(inputs=[_fp32(), _fp32()]), "already exists in request"),
        (
            pb.ModelInferRequest(
                inputs=[_fp32()], outputs=[pb.ModelInferRequest.InferRequestedOutputTensor()]
            ),
            r"outputs\[0\] needs a name",
        ),
        (
            pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="FP17", shape=[1])]),
            "unknown datatype",
        ),
        (
            pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="FP32", shape=[-1])]),
            "non-negative integers",
        ),
        (
            pb.ModelInferRequest(
                inputs=[Tensor(name="x", datatype="FP32", shape=[3])],
                raw_input_contents=[bytes(8)],
            ),
            "needs 12 bytes of data, got 8",
        ),
        (
            pb.ModelInferRequest(inputs=[_fp32("a"), _fp32("b")], raw_input_contents=[bytes(8)]),
            "1 buffers for 2 inputs",
        ),
        (
            pb.ModelInferRequest(
                inputs=[Tensor(name="b", datatype="BOOL", shape=[2])],
                raw_input_contents=[b"\x01\x02"],
            ),
            "BOOL data holds bytes other than 0 and 1",
        ),
        (
            pb.ModelInferRequest(
                inputs=[Tensor(name="s", datatype="BYTES", shape=[1])],
                raw_input_contents=[b"\x05\x00\x00\x00abc"],
            ),
            "runs past the end",
        ),
        (
            pb.ModelInferRequest(
                inputs=[
                    Tensor(name="h", datatype="FP16", shape=[1], contents=pb.InferTensorContents())
                ]
            ),
            "must travel in raw_input_contents",
        ),
    ]
    for message, pattern in cases:
        with pytest.raises(InvalidInput, match=pattern):
            decode_model_infer_request(message)


def _same(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert list(got.reshape(-1)) == list(want.reshape(-1))
    else:
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@BOUNDED
@given(st.lists(tensors(), min_size=1, max_size=3))
def test_raw_requests_round_trip(items: list[tuple[str, np.ndarray[Any, Any]]]) -> None:
    message = pb.ModelInferRequest(
        model_name="m",
        inputs=[
            Tensor(name=f"x{i}", datatype=datatype, shape=array.shape)
            for i, (datatype, array) in enumerate(items)
        ],
        raw_input_contents=[array_to_raw(array, datatype) for datatype, array in items],
    )
    request = decode_model_infer_request(
        pb.ModelInferRequest.FromString(message.SerializeToString())
    )
    for i, (datatype, array) in enumerate(items):
        assert request.input_datatypes[f"x{i}"] == datatype
        _same(request.inputs[f"x{i}"], array)


@BOUNDED
@given(tensors(datatypes=sorted(_TYPED)))
def test_typed_requests_round_trip(tensor: tuple[str, np.ndarray[Any, Any]]) -> None:
    datatype, array = tensor
    contents = pb.InferTensorContents()
    getattr(contents, _TYPED[datatype]).extend(array.reshape(-1).tolist())
    message = pb.ModelInferRequest(
        inputs=[Tensor(name="x", datatype=datatype, shape=array.shape, contents=contents)]
    )
    request = decode_model_infer_request(
        pb.ModelInferRequest.FromString(message.SerializeToString())
    )
    got = request.inputs["x"]
    if datatype in ("FP32", "FP64"):
        np.testing.assert_array_equal(got, array)  # NaN payloads may change on the wire
        assert got.dtype == array.dtype
    else:
        _same(got, array)


@BOUNDED
@given(tensors())
def test_responses_round_trip(tensor: tuple[str, np.ndarray[Any, Any]]) -> None:
    datatype, array = tensor
    message = encode_model_infer_response(
        InferenceResponse("m", "1", [OutputTensor("y", datatype, array)])
    )
    parsed = pb.ModelInferResponse.FromString(message.SerializeToString())
    (output,) = parsed.outputs
    assert (output.name, output.datatype, tuple(output.shape)) == ("y", datatype, array.shape)
    _same(array_from_raw("y", datatype, array.shape, parsed.raw_output_contents[0]), array)


def _decodes_or_refuses(message: Any) -> None:
    try:
        result = decode_model_infer_request(message)
    except InferBridgeError:
        return
    assert result.inputs


@BOUNDED
@given(st.binary(max_size=256))
def test_any_bytes_decode_or_are_refused(data: bytes) -> None:
    try:
        message = pb.ModelInferRequest.FromString(data)
    except DecodeError:
        return  # grpc answers INTERNAL for a message protobuf cannot parse, before the codec
    _decodes_or_refuses(message)


_DATATYPES = st.sampled_from([*_TYPED, "FP16", "BF16", "", "fp32", "INT128"])


@st.composite
def _messages(draw: st.DrawFn) -> Any:
    inputs = []
    for _ in range(draw(st.integers(0, 3))):
        tensor = Tensor(
            name=draw(st.sampled_from(["x", "y", ""])),
            datatype=draw(_DATATYPES),
            shape=draw(st.lists(st.integers(-2, 2**62), max_size=3)),
        )
        if draw(st.booleans()):
            field = draw(st.sampled_from(sorted(set(_TYPED.values()))))
            values = {
                "bool_contents": st.booleans(),
                "int_contents": st.integers(-(2**31), 2**31 - 1),
                "int64_contents": st.integers(-(2**63), 2**63 - 1),
                "uint_contents": st.integers(0, 2**32 - 1),
                "uint64_contents": st.integers(0, 2**64 - 1),
                "fp32_contents": st.floats(width=32),
                "fp64_contents": st.floats(),
                "bytes_contents": st.binary(max_size=4),
            }[field]
            getattr(tensor.contents, field).extend(draw(st.lists(values, max_size=6)))
        if draw(st.booleans()):
            tensor.parameters[draw(st.sampled_from(["binary_data_size", "k"]))].int64_param = draw(
                st.integers(-1, 10)
            )
        inputs.append(tensor)
    return pb.ModelInferRequest(
        model_name="m",
        inputs=inputs,
        raw_input_contents=draw(st.lists(st.binary(max_size=24), max_size=3)),
        outputs=[
            pb.ModelInferRequest.InferRequestedOutputTensor(name=name)
            for name in draw(st.lists(st.sampled_from(["a", "b", ""]), max_size=2))
        ],
    )


@BOUNDED
@given(_messages())
def test_any_message_decodes_or_is_refused(message: Any) -> None:
    _decodes_or_refuses(message)
