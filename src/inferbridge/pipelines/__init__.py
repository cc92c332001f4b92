"""Pipeline processors: small steps that run inside the server around model calls.

`PROCESSORS` maps each step name used in config.yaml (`processor: letterbox`) to its class;
`runtimes.pipeline` chains them with model steps.
"""

from __future__ import annotations

from inferbridge.pipelines.base import Processor, Value
from inferbridge.pipelines.classify import Labels, Softmax, TopK
from inferbridge.pipelines.detect import CascadeBoxes, YoloDecode
from inferbridge.pipelines.image import (
    Color,
    CropToContent,
    DecodeImage,
    Flatten,
    Letterbox,
    Normalize,
    Resize,
    ToBlob,
)
from inferbridge.pipelines.text import L2Normalize, MeanPool, Tokenize

__all__ = ["PROCESSORS", "Processor", "Value"]

PROCESSORS: dict[str, type[Processor]] = {
    cls.name: cls
    for cls in (
        DecodeImage,
        CropToContent,
        Resize,
        Letterbox,
        Color,
        Normalize,
        ToBlob,
        Flatten,
        Softmax,
        TopK,
        Labels,
        YoloDecode,
        CascadeBoxes,
        Tokenize,
        MeanPool,
        L2Normalize,
    )
}
