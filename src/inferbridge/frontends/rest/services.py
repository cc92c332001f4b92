"""Service endpoints: a photo or a sentence in, an answer out, as adapters over the dataplane.

`POST /v1/vision/faces`, `/v1/vision/classify`, `/v1/vision/detect` take a multipart upload
(field `image`) or a raw image body (`Content-Type: image/...`); `POST /v1/text/embed` takes
`{"texts": [...]}`. Each becomes an ordinary OIP request on a pipeline model (`?model=`
picks another than the default), so batching, deadlines and errors are the dataplane's.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson

from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.errors import InvalidInput, ModelNotFound
from inferbridge.pipelines.image import DEFAULT_MAX_PIXELS, probe_image
from inferbridge.protocol.types import InferenceRequest

__all__ = ["DEFAULT_MODELS", "handle", "parse_multipart"]

Scope = MutableMapping[str, Any]

#: The model behind each endpoint unless the request says `?model=`.
DEFAULT_MODELS = {
    ("vision", "faces"): "face_detection",
    ("vision", "classify"): "digits_classifier",
    ("vision", "detect"): "detection",
    ("text", "embed"): "text_embedding",
}
_DETECTOR_OPTIONS = ("scale_factor", "min_neighbors", "min_size")


async def handle(dataplane: DataPlane, route: tuple[str, str], scope: Scope, body: bytes) -> Any:
    """Serve one service request; returns the JSON document of a 200 answer."""
    if route not in DEFAULT_MODELS:
        raise ModelNotFound(f"no service /v1/{'/'.join(route)}; services: {_listing()}")
    query = _query(scope)
    model = query.get("model") or DEFAULT_MODELS[route]
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    content_type = headers.get("content-type", "")
    if route == ("text", "embed"):
        return await _embed(dataplane, model, body)
    image, fields = _image_upload(content_type, body)
    _check_pixels(dataplane, model, image)
    options = {**fields, **query}
    if route == ("vision", "faces"):
        return await _faces(dataplane, model, image, options)
    if route == ("vision", "classify"):
        return await _classify(dataplane, model, image, options)
    return await _detect(dataplane, model, image)


def _listing() -> str:
    return ", ".join(f"POST /v1/{a}/{b}" for a, b in DEFAULT_MODELS)


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in parse_qs(raw).items()}


# -- vision -------------------------------------------------------------------------------


def _image_upload(content_type: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    """The uploaded image's bytes (checked from its header) and any other form fields."""
    fields: dict[str, str] = {}
    kind = content_type.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        parts = parse_multipart(content_type, body)
        if "image" not in parts:
            raise InvalidInput(
                f"the multipart upload has no field 'image' (fields: {sorted(parts) or 'none'})"
            )
        image = parts.pop("image")
        for name, value in parts.items():
            try:
                fields[name] = value.decode()
            except UnicodeDecodeError:
                raise InvalidInput(f"form field '{name}' is not UTF-8 text") from None
    elif kind.startswith("image/") or kind == "application/octet-stream":
        image = body
    else:
        raise InvalidInput(
            "send the image as multipart/form-data (field 'image') or as the raw body with "
            f"Content-Type image/jpeg or image/png; got Content-Type {content_type or 'none'!r}"
        )
    probe_image(image)  # not an image, empty or cut short: 400 before it reaches a batch
    return image, fields


def _check_pixels(dataplane: DataPlane, model: str, image: bytes) -> None:
    """Refuse an image over the model's decode limit here, before it joins a batch (where
    its error would fail the requests batched with it)."""
    header = probe_image(image)
    limit = DEFAULT_MAX_PIXELS
    steps = dataplane.model_settings(model).get("parameters", {}).get("steps")
    for step in steps if isinstance(steps, list) else []:
        if isinstance(step, dict) and step.get("processor") == "decode_image":
            limit = int(step.get("max_pixels", DEFAULT_MAX_PIXELS))
            break
    pixels = header.width * header.height
    if pixels > limit:
        raise InvalidInput(
            f"the image is {header.width}x{header.height} = {pixels} pixels, over model "
            f"'{model}''s limit of {limit} pixels"
        )


def parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """Fields of a multipart/form-data body by name (RFC 7578); InvalidInput when malformed."""
    boundary = ""
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise InvalidInput("multipart/form-data without a boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    if delimiter + b"--" not in body:
        raise InvalidInput("the multipart body is incomplete (no closing boundary)")
    fields: dict[str, bytes] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        chunk = chunk.removeprefix(b"\r\n")
        head, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise InvalidInput("a multipart part has no blank line after its headers")
        name = _field_name(head.decode("latin-1"))
        if name is not None:
            fields[name] = content.removesuffix(b"\r\n")
    return fields


def _field_name(head: str) -> str | None:
    for line in head.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        for item in value.split(";")[1:]:
            attribute, _, quoted = item.strip().partition("=")
            if attribute.lower() == "name":
                return quoted.strip().strip('"')
    return None


def _bytes_input(image: bytes) -> np.ndarray[Any, Any]:
    array = np.empty(1, dtype=object)
    array[0] = image
    return array


async def _faces(
    dataplane: DataPlane, model: str, image: bytes, options: dict[str, str]
) -> dict[str, Any]:
    detector = np.zeros((1, 3), np.float32)  # 0: the model's configured value
    for column, name in enumerate(_DETECTOR_OPTIONS):
        if name in options:
            detector[0, column] = _number(name, options[name])
    outputs = await _infer(
        dataplane,
        model,
        {"image": (_bytes_input(image), "BYTES"), "detector": (detector, "FP32")},
    )
    count = int(outputs["count"][0])
    boxes = outputs["boxes"][0][:count].tolist()
    return {"faces": [dict(zip("xywh", box, strict=True)) for box in boxes]}


async def _classify(
    dataplane: DataPlane, model: str, image: bytes, options: dict[str, str]
) -> dict[str, Any]:
    outputs = await _infer(dataplane, model, {"image": (_bytes_input(image), "BYTES")})
    labels, scores = outputs["labels"][0], outputs["scores"][0]
    limit = int(_number("top_k", options["top_k"])) if "top_k" in options else len(labels)
    return {
        "predictions": [
            {"label": _text(label), "score": float(score)}
            for label, score in list(zip(labels, scores, strict=True))[: max(limit, 1)]
        ]
    }


async def _detect(dataplane: DataPlane, model: str, image: bytes) -> dict[str, Any]:
    outputs = await _infer(dataplane, model, {"image": (_bytes_input(image), "BYTES")})
    count = int(outputs["count"][0])
    labels = outputs.get("labels")
    detections = []
    for i in range(count):
        x, y, w, h = (float(v) for v in outputs["boxes"][0][i])
        cls = int(outputs["classes"][0][i])
        detections.append(
            {
                "label": _text(labels[0][i]) if labels is not None else str(cls),
                "class": cls,
                "score": float(outputs["scores"][0][i]),
                **{"x": x, "y": y, "w": w, "h": h},
            }
        )
    return {"detections": detections}


# -- text ---------------------------------------------------------------------------------


async def _embed(dataplane: DataPlane, model: str, body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    texts = document.get("texts") if isinstance(document, dict) else None
    if not isinstance(texts, list) or not texts:
        raise InvalidInput('send {"texts": [...]} with a non-empty list of strings')
    if not all(isinstance(t, str) for t in texts):
        raise InvalidInput("every entry of 'texts' must be a string")
    # Requests above the model's batch limit are split, and the pieces batch like any other.
    limit = _batch_limit(dataplane, model)
    pieces = [texts[i : i + limit] for i in range(0, len(texts), limit)]
    results = await asyncio.gather(
        *(
            _infer(
                dataplane,
                model,
                {"text": (np.array([t.encode() for t in piece], dtype=object), "BYTES")},
            )
            for piece in pieces
        )
    )
    embeddings = np.concatenate([r["embeddings"] for r in results])
    document = {"embeddings": embeddings.tolist()}
    if all("truncated" in r for r in results):
        flags = np.concatenate([r["truncated"] for r in results])
        document["truncated"] = [int(i) for i in np.flatnonzero(flags)]
    return document


def _batch_limit(dataplane: DataPlane, model: str) -> int:
    size = int(dataplane.model_settings(model).get("max_batch_size", 0))
    return size if size > 0 else 1 << 30


# -- shared -------------------------------------------------------------------------------


async def _infer(
    dataplane: DataPlane, model: str, inputs: dict[str, tuple[np.ndarray[Any, Any], str]]
) -> dict[str, np.ndarray[Any, Any]]:
    request = InferenceRequest(
        model_name=model,
        model_version=None,
        inputs={name: array for name, (array, _) in inputs.items()},
        input_datatypes={name: datatype for name, (_, datatype) in inputs.items()},
    )
    response = await dataplane.infer(request)
    return {tensor.name: tensor.data for tensor in response.outputs}


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidInput(f"parameter '{name}' must be a number, got {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise InvalidInput(f"parameter '{name}' must be a non-negative number, got {value!r}")
    return number


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
