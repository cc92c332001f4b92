"""Image processors against OpenCV and numpy references."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbridge.errors import InvalidInput
from inferbridge.pipelines.image import (
    Color,
    CropToContent,
    DecodeImage,
    Flatten,
    Letterbox,
    Normalize,
    Resize,
    ToBlob,
    decode_image,
    letterbox,
    probe_image,
    to_blob,
)

cv2 = pytest.importorskip("cv2")

HERE = Path(".")


def picture(height: int = 48, width: int = 64) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def encode(image: np.ndarray[Any, Any], ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return bytes(data)


@pytest.mark.parametrize(("ext", "fmt"), [(".png", "png"), (".jpg", "jpeg"), (".bmp", "bmp")])
def test_probe_reads_size_from_header(ext: str, fmt: str) -> None:
    header = probe_image(encode(picture(37, 53), ext))
    assert (header.format, header.width, header.height) == (fmt, 53, 37)


@pytest.mark.parametrize("color", ["bgr", "rgb", "gray"])
@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_decode_matches_imdecode(color: str, ext: str) -> None:
    data = encode(picture(), ext)
    flag = cv2.IMREAD_GRAYSCALE if color == "gray" else cv2.IMREAD_COLOR
    want = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if color == "rgb":
        want = want[..., ::-1]
    np.testing.assert_array_equal(decode_image(data, color), want)


def test_decode_processor_returns_one_image_per_row() -> None:
    rows = np.array([encode(picture(10, 20), ".png"), encode(picture(30, 5), ".png")], object)
    (images,) = DecodeImage({}, HERE)(rows)
    assert [i.shape for i in images] == [(10, 20, 3), (30, 5, 3)]


def _with_png_size(data: bytes, width: int, height: int) -> bytes:
    return data[:16] + struct.pack(">II", width, height) + data[24:]


def _with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    index = data.index(b"\xff\xc0")
    return data[: index + 5] + struct.pack(">HH", height, width) + data[index + 9 :]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not an image"),
        (encode(picture(), ".jpg")[:400], "truncated"),
        (encode(picture(), ".png")[:300], "truncated"),
        (b"\x89PNG\r\n\x1a\n\x00", "truncated"),
        (_with_png_size(encode(picture(), ".png"), 30000, 30000), "900000000 pixels"),
        (_with_jpeg_size(encode(picture(), ".jpg"), 30000, 30000), "900000000 pixels"),
    ],
    ids=["empty", "text", "cut-jpeg", "cut-png", "png-header-only", "png-bomb", "jpeg-bomb"],
)
def test_bad_images_are_invalid_input(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_image(data)


def test_pixel_limit_is_configurable() -> None:
    data = encode(picture(100, 100), ".png")
    with pytest.raises(InvalidInput, match="limit of 9999 pixels"):
        DecodeImage({"max_pixels": 9999}, HERE)(np.array([data], object))


def test_resize_matches_cv2() -> None:
    images = [picture(20, 30), picture(50, 10)]
    (out,) = Resize({"size": [16, 8], "interpolation": "area"}, HERE)(images)
    want = np.stack([cv2.resize(i, (16, 8), interpolation=cv2.INTER_AREA) for i in images])
    np.testing.assert_array_equal(out, want)


def test_letterbox_scales_and_pads_like_ultralytics() -> None:
    image = picture(128, 256)
    boxed, transform = letterbox(image, (64, 64))
    assert boxed.shape == (64, 64, 3)
    np.testing.assert_array_equal(transform, [0.25, 0, 16, 256, 128])
    np.testing.assert_array_equal(boxed[16:48], cv2.resize(image, (64, 32)))
    assert (boxed[:16] == 114).all() and (boxed[48:] == 114).all()


def test_letterbox_odd_padding_and_processor() -> None:
    image = picture(30, 61)
    boxed, transforms = Letterbox({"size": [40, 40], "fill": 0}, HERE)([image])
    ratio = 40 / 61
    new_h = round(30 * ratio)
    top = round((40 - new_h) / 2 - 0.1)
    assert np.asarray(boxed).shape == (1, 40, 40, 3)
    np.testing.assert_allclose(np.asarray(transforms)[0], [ratio, 0, top, 61, 30])
    np.testing.assert_array_equal(
        np.asarray(boxed)[0, top : top + new_h], cv2.resize(image, (40, new_h))
    )


@pytest.mark.parametrize("convert", ["bgr2rgb", "bgr2gray"])
def test_color_matches_cvtcolor(convert: str) -> None:
    image = picture()
    (out,) = Color({"convert": convert}, HERE)([image])
    code = cv2.COLOR_BGR2RGB if convert == "bgr2rgb" else cv2.COLOR_BGR2GRAY
    np.testing.assert_array_equal(out[0], cv2.cvtColor(image, code))


def test_normalize_per_channel() -> None:
    image = picture()
    params = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    (out,) = Normalize(params, HERE)(np.stack([image]))
    want = (image / 255.0 - np.array(params["mean"])) / np.array(params["std"])
    np.testing.assert_allclose(out[0], want, rtol=1e-5, atol=1e-5)


def test_normalize_inverts_ink_to_digits_scale() -> None:
    (out,) = Normalize({"scale": -16 / 255, "offset": 16}, HERE)(np.array([[[0, 255]]], np.uint8))
    np.testing.assert_allclose(out, [[[16, 0]]], atol=1e-5)


@pytest.mark.parametrize("swap_rb", [False, True])
def test_to_blob_matches_blob_from_images(swap_rb: bool) -> None:
    images = [picture(), picture()[::-1].copy()]
    mean = (10.0, 20.0, 30.0)
    want = cv2.dnn.blobFromImages(images, 1 / 127.5, mean=mean, swapRB=swap_rb, crop=False)
    np.testing.assert_allclose(to_blob(images, 1 / 127.5, mean, swap_rb), want, atol=1e-5)
    (out,) = ToBlob({"scale": 1 / 127.5, "mean": list(mean), "swap_rb": swap_rb}, HERE)(images)
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_flatten() -> None:
    batch = np.arange(2 * 8 * 8).reshape(2, 8, 8)
    (out,) = Flatten({}, HERE)(batch)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, batch.reshape(2, 64))


def test_crop_to_content_squares_small_ink_on_a_page() -> None:
    page = np.full((300, 400), 240, np.uint8)
    page[100:140, 50:70] = 10  # a 40 x 20 stroke
    (out,) = CropToContent({}, HERE)([page])
    assert out[0].shape == (40, 40)
    np.testing.assert_array_equal(out[0][:, 10:30], page[100:140, 50:70])
    assert (out[0][:, :10] == 240).all() and (out[0][:, 30:] == 240).all()


def test_crop_to_content_leaves_framed_and_blank_images() -> None:
    framed = np.full((64, 64), 255, np.uint8)
    framed[2:62, 20:40] = 0  # spans 94% of the height
    blank = np.full((30, 30), 200, np.uint8)
    (out,) = CropToContent({}, HERE)([framed, blank])
    assert out[0] is framed and out[1] is blank
    (always,) = CropToContent({"min_fill": 1.0, "margin": 0.5}, HERE)([framed])
    assert always[0].shape == (120, 120)


def test_jpeg_end_marker_rules() -> None:
    data = encode(picture(64, 64), ".jpg")
    assert decode_image(data + b"bytes a camera appended").shape == (64, 64, 3)
    for cut in (len(data) - 2, len(data) // 2):
        with pytest.raises(InvalidInput, match="truncated"):
            probe_image(data[:cut])
