"""Text processors: tokenisation with a Hugging Face tokenizer.json, masked mean pooling and
L2 normalisation (sentence-transformers' pooling and Normalize modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import InvalidInput, ModelLoadError
from inferbridge.pipelines.base import Array, Params, Processor, Value, param

__all__ = ["L2Normalize", "MeanPool", "Tokenize", "l2_normalize", "mean_pool"]


def mean_pool(tokens: Array, mask: Array) -> Array:
    """[N, L, H] token embeddings and an [N, L] attention mask -> [N, H] masked means."""
    weights = np.asarray(mask, np.float32)[..., np.newaxis]
    summed = np.sum(np.asarray(tokens, np.float32) * weights, axis=1)
    counts = np.clip(np.sum(weights, axis=1), 1e-9, None)
    result: Array = (summed / counts).astype(np.float32)
    return result


def l2_normalize(vectors: Array, eps: float = 1e-12) -> Array:
    """Rows scaled to unit L2 norm (torch.nn.functional.normalize semantics)."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    result: Array = vectors / np.maximum(norms, eps)
    return result


class Tokenize(Processor):
    """BYTES [N] (UTF-8 texts) -> input_ids, attention_mask, token_type_ids (INT64 [N, L],
    padded to the longest text) and truncated (BOOL [N]).

    Parameters: `tokenizer` (tokenizer.json in the version directory), `max_tokens` (the
    model's limit, special tokens included; default 512), `truncation`: `truncate` (cut and
    flag it in `truncated`) or `reject` (answer 400 naming the text; the default)."""

    name = "tokenize"
    returns = (3, 4)

    def __init__(self, params: Params, model_dir: Path) -> None:
        super().__init__(params, model_dir)
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ModelLoadError(f"tokenize needs the tokenizers package ({exc})") from None
        path = model_dir / param(params, "tokenizer", str, "tokenizer.json", self.name)
        try:
            self._plain = Tokenizer.from_file(str(path))
            self._cut = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise ModelLoadError(f"tokenize: cannot read {path}: {exc}") from None
        self.max_tokens = param(params, "max_tokens", int, 512, self.name)
        self.truncation = param(params, "truncation", str, "reject", self.name)
        if self.truncation not in ("truncate", "reject"):
            raise ModelLoadError(
                f"tokenize: truncation={self.truncation!r}; use truncate or reject"
            )
        self._plain.no_truncation()
        self._plain.no_padding()
        self._cut.no_padding()
        self._cut.enable_truncation(self.max_tokens)
        self.pad_id = int(param(params, "pad_id", int, 0, self.name))

    def texts(self, value: Value) -> list[str]:
        texts: list[str] = []
        for index, item in enumerate(np.asarray(value, dtype=object).reshape(-1)):
            try:
                texts.append(item.decode() if isinstance(item, bytes) else str(item))
            except UnicodeDecodeError:
                raise InvalidInput(f"text {index} is not valid UTF-8") from None
        return texts

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        texts = self.texts(values[0])
        encodings: list[Any] = self._plain.encode_batch(texts) if texts else []
        truncated = np.zeros(len(texts), bool)
        for index, encoding in enumerate(encodings):
            if len(encoding.ids) <= self.max_tokens:
                continue
            if self.truncation == "reject":
                raise InvalidInput(
                    f"text {index} is {len(encoding.ids)} tokens, over the model's limit of "
                    f"{self.max_tokens}; this model rejects long texts (truncation: reject)"
                )
            encodings[index] = self._cut.encode(texts[index])
            truncated[index] = True
        length = max((len(e.ids) for e in encodings), default=0)
        ids = np.full((len(texts), length), self.pad_id, np.int64)
        mask = np.zeros((len(texts), length), np.int64)
        types = np.zeros((len(texts), length), np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = encoding.attention_mask
            types[row, :n] = encoding.type_ids
        return ids, mask, types, truncated


class MeanPool(Processor):
    """(token embeddings [N, L, H], attention mask [N, L]) -> [N, H] masked means."""

    name = "mean_pool"
    arity = (2, 2)

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        return (mean_pool(np.asarray(values[0]), np.asarray(values[1])),)


class L2Normalize(Processor):
    """[N, H] -> rows of unit L2 norm."""

    name = "l2_normalize"

    def __call__(self, *values: Value) -> tuple[Value, ...]:
        return (l2_normalize(np.asarray(values[0])),)
