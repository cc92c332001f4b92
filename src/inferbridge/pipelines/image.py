"""Image processors: decode (with a pixel limit read from the header), resize, letterbox,
colour order, scale and normalise, HWC -> CHW with cv2.dnn.blobFromImage semantics."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import InvalidInput, ModelLoadError
from inferbridge.pipelines.base import Array, Params, Processor, Value, param, rows_of

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Color",
    "CropToContent",
    "DecodeImage",
    "Flatten",
    "ImageHeader",
    "Letterbox",
    "Normalize",
    "Resize",
    "ToBlob",
    "decode_image",
    "crop_to_content",
    "letterbox",
    "probe_image",
    "to_blob",
]

#: Images above this many pixels are refused before decoding (a decompression-bomb guard).
DEFAULT_MAX_PIXELS = 40_000_000

_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...); not C4/C8/CC.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_INTERPOLATION = {"nearest": 0, "linear": 1, "cubic": 2, "area": 3, "lanczos": 4}


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str
    width: int
    height: int


def probe_image(data: bytes) -> ImageHeader:
    """Format and size from the header alone; InvalidInput when it is not a JPEG, PNG or BMP
    or is visibly cut short."""
    if not data:
        raise InvalidInput("the image is empty (0 bytes)")
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise InvalidInput("the PNG image is truncated (no complete IHDR header)")
        width, height = struct.unpack(">II", data[16:24])
        if _PNG_END not in data[-4096:]:  # (tolerating a few bytes appended after it)
            raise InvalidInput("the PNG image is truncated (no IEND chunk at the end)")
        return ImageHeader("png", width, height)
    if data.startswith(b"\xff\xd8"):
        width, height = _jpeg_size(data)
        # Markers cannot occur inside entropy-coded data: the image is whole when an
        # end-of-image marker follows the last start-of-scan (an EXIF thumbnail has its own
        # pair earlier; some cameras append bytes after the end).
        last_scan = data.rfind(b"\xff\xda")
        if last_scan < 0 or data.rfind(b"\xff\xd9") < last_scan:
            raise InvalidInput("the JPEG image is truncated (no end-of-image marker)")
        return ImageHeader("jpeg", width, height)
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return ImageHeader("bmp", abs(width), abs(height))
    raise InvalidInput("the upload is not an image this server decodes (JPEG, PNG or BMP)")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise InvalidInput("the JPEG image is corrupt (bad marker before the frame header)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        i += 2 + length
    raise InvalidInput("the JPEG image is truncated or corrupt (no frame header)")


def decode_image(data: bytes, color: str = "bgr", max_pixels: int = DEFAULT_MAX_PIXELS) -> Array:
    """Decode one JPEG/PNG/BMP with OpenCV: HxWx3 uint8 (bgr, rgb) or HxW (gray).

    The pixel count is checked from the header before anything is decoded."""
    import cv2

    header = probe_image(data)
    pixels = header.width * header.height
    if header.width == 0 or header.height == 0:
        raise InvalidInput(f"the {header.format.upper()} image has no pixels (0 width or height)")
    if pixels > max_pixels:
        raise InvalidInput(
            f"the image is {header.width}x{header.height} = {pixels} pixels, over this "
            f"model's limit of {max_pixels} pixels"
        )
    flag = cv2.IMREAD_GRAYSCALE if color == "gray" else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise InvalidInput(f"the {header.format.upper()} image could not be decoded (corrupt?)")
    if color == "rgb":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.asarray(image)


class DecodeImage(Processor):
    """BYTES [N] (encoded JPEG/PNG/BMP) -> a list of N uint8 images.

    Parameters: `color` (bgr, rgb or gray; default bgr), `max_pixels` (default 40 million)."""

    name = "decode_image"

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        self.color = param(params, "color", str, "bgr", self.name)
        if self.color not in ("bgr", "rgb", "gray"):
            raise ModelLoadError(f"decode_image: color={self.color!r}; use bgr, rgb or gray")
        self.max_pixels = param(params, "max_pixels", int, DEFAULT_MAX_PIXELS, self.name)

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        images: list[Array] = []
        for index, item in enumerate(np.asarray(values[0]).reshape(-1)):
            data = item if isinstance(item, bytes) else bytes(item)
            try:
                images.append(decode_image(data, self.color, self.max_pixels))
            except InvalidInput as exc:
                prefix = f"image {index}: " if len(values[0]) > 1 else ""
                raise InvalidInput(prefix + exc.message) from None
        return (images,)


def _size(value: Any, step: str) -> tuple[int, int]:
    try:
        if isinstance(value, int):
            return value, value
        width, height = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ModelLoadError(f"step '{step}': size must be N or [width, height]") from None
    if width < 1 or height < 1:
        raise ModelLoadError(f"step '{step}': size must be positive")
    return width, height


def _interpolation(params: Params, default: str, step: str) -> int:
    name = param(params, "interpolation", str, default, step)
    if name not in _INTERPOLATION:
        raise ModelLoadError(f"step '{step}': interpolation {name!r}; use {sorted(_INTERPOLATION)}")
    return _INTERPOLATION[name]


class Resize(Processor):
    """Images -> an array [N, H, W(, C)] of one size (`size`: [width, height] or N;
    `interpolation`: nearest, linear (default), cubic, area, lanczos)."""

    name = "resize"

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        self.size = _size(params.get("size"), self.name)
        self.interpolation = _interpolation(params, "linear", self.name)

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        import cv2

        resized = [
            cv2.resize(image, self.size, interpolation=self.interpolation)
            for image in rows_of(values[0])
        ]
        return (_stack(resized, self.size),)


def crop_to_content(
    image: Array, min_fill: float = 0.75, margin: float = 0.0, ink: str = "dark"
) -> Array:
    """A grayscale image cropped to a square around its ink, padded with the paper's colour.

    Ink is whatever differs from the paper (the 90th percentile, or 10th for light ink) by
    more than a quarter of the image's contrast. Images whose ink already spans `min_fill`
    of the height or width, and images without contrast, come back unchanged."""
    import cv2

    if image.ndim != 2:
        raise InvalidInput("crop_to_content expects grayscale images (decode with color: gray)")
    values = image.astype(np.float32)
    if ink == "light":
        values = 255 - values
    paper = float(np.percentile(values, 90))
    contrast = paper - float(values.min())
    if contrast < 16:
        return image
    mask = values < paper - max(16.0, 0.25 * contrast)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if max(height / image.shape[0], width / image.shape[1]) >= min_fill:
        return image
    content = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = round(max(height, width) * (1 + 2 * margin))
    top, left = (side - height) // 2, (side - width) // 2
    fill = float(np.percentile(image, 10 if ink == "light" else 90))
    return np.asarray(
        cv2.copyMakeBorder(
            content,
            top,
            side - height - top,
            left,
            side - width - left,
            cv2.BORDER_CONSTANT,
            value=round(fill),
        )
    )


class CropToContent(Processor):
    """Grayscale images -> each cropped to a square around its ink (see crop_to_content), so
    a small digit on a large page fills the frame like the training digits did.

    Parameters: `min_fill` (0.75: leave images whose ink spans this much alone), `margin`
    (0: extra border as a fraction of the ink's side), `ink` (dark, the default, or light)."""

    name = "crop_to_content"

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        self.min_fill = param(params, "min_fill", float, 0.75, self.name)
        self.margin = param(params, "margin", float, 0.0, self.name)
        self.ink = param(params, "ink", str, "dark", self.name)
        if self.ink not in ("dark", "light"):
            raise ModelLoadError(f"crop_to_content: ink={self.ink!r}; use dark or light")

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        return (
            [
                crop_to_content(image, self.min_fill, self.margin, self.ink)
                for image in rows_of(values[0])
            ],
        )


def letterbox(
    image: Array, size: tuple[int, int], fill: int = 114, scale_up: bool = True
) -> tuple[Array, Array]:
    """Resize keeping the aspect ratio and pad to `size` (width, height), Ultralytics' way.

    Returns the image and its transform [scale, pad_left, pad_top, width, height] (the last
    two are the original size), which `YoloDecode` uses to map boxes back."""
    import cv2

    height, width = image.shape[:2]
    target_w, target_h = size
    ratio = min(target_w / width, target_h / height)
    if not scale_up:
        ratio = min(ratio, 1.0)
    new_w, new_h = round(width * ratio), round(height * ratio)
    pad_w, pad_h = (target_w - new_w) / 2, (target_h - new_h) / 2
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(pad_h - 0.1), round(pad_h + 0.1)
    left, right = round(pad_w - 0.1), round(pad_w + 0.1)
    channels = image.shape[2] if image.ndim == 3 else 1
    boxed = cv2.copyMakeBorder(
        image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(fill,) * channels
    )
    transform = np.array([ratio, left, top, width, height], dtype=np.float64)
    return np.asarray(boxed), transform


class Letterbox(Processor):
    """Images -> (array [N, H, W, C] padded to `size`, transforms [N, 5]).

    Parameters: `size` ([width, height] or N; default 640), `fill` (114), `scale_up` (true)."""

    name = "letterbox"
    returns = (2, 2)

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        self.size = _size(params.get("size", 640), self.name)
        self.fill = param(params, "fill", int, 114, self.name)
        self.scale_up = param(params, "scale_up", bool, True, self.name)

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        boxed, transforms = [], []
        for image in rows_of(values[0]):
            out, transform = letterbox(image, self.size, self.fill, self.scale_up)
            boxed.append(out)
            transforms.append(transform)
        return _stack(boxed, self.size), np.stack(transforms) if transforms else np.zeros((0, 5))


_CONVERSIONS = {
    "bgr2rgb": "COLOR_BGR2RGB",
    "rgb2bgr": "COLOR_RGB2BGR",
    "bgr2gray": "COLOR_BGR2GRAY",
    "rgb2gray": "COLOR_RGB2GRAY",
    "gray2bgr": "COLOR_GRAY2BGR",
    "gray2rgb": "COLOR_GRAY2RGB",
}


class Color(Processor):
    """Colour order: `convert` one of bgr2rgb, rgb2bgr, bgr2gray, rgb2gray, gray2bgr, gray2rgb."""

    name = "color"

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        convert = param(params, "convert", str, "bgr2rgb", self.name)
        if convert not in _CONVERSIONS:
            raise ModelLoadError(f"color: convert={convert!r}; use one of {sorted(_CONVERSIONS)}")
        self.convert = convert

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        import cv2

        code = getattr(cv2, _CONVERSIONS[self.convert])
        converted = [np.asarray(cv2.cvtColor(image, code)) for image in rows_of(values[0])]
        return (converted if isinstance(values[0], list) else np.stack(converted),)


class Normalize(Processor):
    """float32 `(x * scale + offset - mean) / std`, per channel for mean and std.

    Parameters: `scale` (1), `offset` (0), `mean` (0; a number or one per channel), `std` (1).
    Inverting dark-on-light 8-bit ink to sklearn's 0..16 digits: scale -16/255, offset 16."""

    name = "normalize"

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        self.scale = param(params, "scale", float, 1.0, self.name)
        self.offset = param(params, "offset", float, 0.0, self.name)
        self.mean = np.asarray(params.get("mean", 0.0), dtype=np.float32)
        self.std = np.asarray(params.get("std", 1.0), dtype=np.float32)
        if np.any(self.std == 0):
            raise ModelLoadError("normalize: std must not be 0")

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        out = [
            (np.asarray(image, np.float32) * self.scale + self.offset - self.mean) / self.std
            for image in rows_of(values[0])
        ]
        return (out if isinstance(values[0], list) else _stack_any(out),)


def to_blob(
    images: list[Array] | Array,
    scale: float = 1.0,
    mean: tuple[float, ...] = (0.0, 0.0, 0.0),
    swap_rb: bool = False,
    std: tuple[float, ...] | None = None,
) -> Array:
    """NCHW float32 as cv2.dnn.blobFromImages(images, scale, mean=mean, swapRB=swap_rb):
    channels swapped first, then `(x - mean) * scale` (and `/ std` when given)."""
    batch = np.asarray(_stack_any([np.asarray(i) for i in images]), dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[..., np.newaxis]
    if swap_rb and batch.shape[-1] >= 3:
        batch = batch[..., [2, 1, 0, *range(3, batch.shape[-1])]]
    channels = batch.shape[-1]
    batch = (batch - np.asarray(mean[:channels], np.float32)) * np.float32(scale)
    if std is not None:
        batch = np.asarray(batch / np.asarray(std[:channels], np.float32), np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


class ToBlob(Processor):
    """Images [N, H, W, C] -> float32 [N, C, H, W] with blobFromImage semantics.

    Parameters: `scale` (1), `mean` ([0, 0, 0], subtracted after the swap), `swap_rb`
    (false), `std` (none)."""

    name = "to_blob"

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        self.scale = param(params, "scale", float, 1.0, self.name)
        mean = params.get("mean", [0.0, 0.0, 0.0])
        self.mean = tuple(float(m) for m in (mean if isinstance(mean, list) else [mean] * 3))
        self.swap_rb = param(params, "swap_rb", bool, False, self.name)
        std = params.get("std")
        self.std = None if std is None else tuple(float(s) for s in std)

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        return (to_blob(values[0], self.scale, self.mean, self.swap_rb, self.std),)


class Flatten(Processor):
    """[N, ...] -> [N, prod(...)] (row-major); `dtype` (default float32)."""

    name = "flatten"

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        self.dtype = np.dtype(param(params, "dtype", str, "float32", self.name))

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        batch = _stack_any([np.asarray(r) for r in rows_of(values[0])])
        return (batch.reshape(len(batch), -1).astype(self.dtype, copy=False),)


def _stack(images: list[Array], size: tuple[int, int]) -> Array:
    if images:
        return np.stack(images)
    return np.zeros((0, size[1], size[0], 3), np.uint8)


def _stack_any(rows: list[Array]) -> Array:
    if not rows:
        return np.zeros((0,), np.float32)
    shapes = {r.shape for r in rows}
    if len(shapes) > 1:
        raise InvalidInput(
            f"images of different sizes {sorted(shapes)} cannot form a batch; resize them first"
        )
    return np.stack(rows)
