"""A sentence-transformers (or Hugging Face) model directory -> an ONNX encoder entry plus a
pipeline entry (tokenizer.json, the encoder, mean pooling, L2 normalisation), verified
against sentence-transformers' own `encode`. Serving then needs only tokenizers + ORT."""

from __future__ import annotations

import inspect
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import InferBridgeError
from inferbridge.export.verify import Verification, verify_entry

__all__ = ["SAMPLE_SENTENCES", "export_sentence_transformer"]

SAMPLE_SENTENCES = (
    "A man is eating food.",
    "Backend services want to send a sentence and get an answer.",
    "Hi",
    "The quick brown fox jumps over the lazy dog, twice, while the cat watches from afar.",
)
# ORT refuses an output named `embedding` (it clashes with a node name; FACTS.md).
ENCODER_OUTPUT = "token_embeddings"


def export_sentence_transformer(
    source: Path,
    repository: Path,
    name: str,
    *,
    sentences: Sequence[str] = SAMPLE_SENTENCES,
    tolerance: float = 1e-4,
    truncation: str = "truncate",
    max_batch_size: int = 32,
) -> Verification:
    """Write `<name>_encoder` (ONNX, token embeddings) and `<name>` (the pipeline), then
    compare the pipeline's embeddings with SentenceTransformer(source).encode(sentences)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu")
    modules = {type(m).__name__: m for m in model}
    transformer = model[0]
    pooling = modules.get("Pooling")
    if pooling is not None:
        config = pooling.get_config_dict()
        mode = config.get("pooling_mode") or (
            "mean" if config.get("pooling_mode_mean_tokens") else "other"
        )
        if mode != "mean":
            raise InferBridgeError(f"{source}: pooling mode {mode!r}; export supports mean pooling")
    normalise = "Normalize" in modules
    encoder = transformer.auto_model.eval()
    accepted = inspect.signature(encoder.forward).parameters
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
    max_tokens = int(model.max_seq_length or 512)
    # Renamed in sentence-transformers 6; older releases have only the long name.
    get_dimension = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    dimension = int(get_dimension() or 0)

    encoder_dir = repository / f"{name}_encoder"
    pipeline_dir = repository / name
    (encoder_dir / "1").mkdir(parents=True, exist_ok=True)
    (pipeline_dir / "1").mkdir(parents=True, exist_ok=True)
    _export_encoder(encoder, transformer.tokenizer, inputs, encoder_dir / "1" / "model.onnx")
    (encoder_dir / "config.yaml").write_text(
        f"# The transformer of {source.name}, exported to ONNX; token embeddings out.\n"
        "runtime: onnx\n"
    )
    _copy_tokenizer(source, transformer.tokenizer, pipeline_dir / "1" / "tokenizer.json")
    (pipeline_dir / "config.yaml").write_text(
        _pipeline_config(name, inputs, max_tokens, truncation, dimension, normalise, max_batch_size)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = model.encode(list(sentences), convert_to_numpy=True, batch_size=len(sentences))
    texts = np.array([s.encode() for s in sentences], dtype=object)
    return verify_entry(pipeline_dir, {"text": texts}, {"embeddings": want}, tolerance)


def _export_encoder(encoder: Any, tokenizer: Any, inputs: list[str], path: Path) -> None:
    import torch

    class TokenEmbeddings(torch.nn.Module):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> Any:
            return self.inner(**dict(zip(inputs, tensors, strict=True))).last_hidden_state

    sample = tokenizer(
        ["a short one", "and a somewhat longer sentence to trace with"],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(sample[n] for n in inputs)
    axes = {n: {0: "batch", 1: "tokens"} for n in [*inputs, ENCODER_OUTPUT]}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TokenEmbeddings(encoder).eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=[ENCODER_OUTPUT],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _copy_tokenizer(source: Path, tokenizer: Any, target: Path) -> None:
    if (source / "tokenizer.json").exists():
        shutil.copy(source / "tokenizer.json", target)
        return
    if not getattr(tokenizer, "is_fast", False):
        raise InferBridgeError(f"{source}: no tokenizer.json and the tokenizer is not a fast one")
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_pretrained(scratch)
        shutil.copy(Path(scratch) / "tokenizer.json", target)


def _pipeline_config(
    name: str,
    inputs: list[str],
    max_tokens: int,
    truncation: str,
    dimension: int,
    normalise: bool,
    max_batch_size: int,
) -> str:
    feeds = ", ".join(f"{n}: {n}" for n in inputs)
    token_outputs = "[input_ids, attention_mask, token_type_ids, truncated]"
    pooled = "pooled" if normalise else "embeddings"
    lines = [
        f"# Text embeddings: tokenizer.json + {name}_encoder (ONNX) + mean pooling"
        f"{' + L2 normalisation' if normalise else ''}.\n",
        "# Texts over max_tokens are cut (truncation: truncate, flagged in `truncated`) or\n",
        "# refused with 400 (truncation: reject).\n",
        "runtime: pipeline\n",
        f"max_batch_size: {max_batch_size}\n",
        "dynamic_batching: {max_queue_delay_ms: 2}\n",
        "inputs:\n  - {name: text, datatype: BYTES, shape: [-1]}\n",
        "outputs:\n",
        f"  - {{name: embeddings, datatype: FP32, shape: [-1, {dimension or -1}]}}\n",
        "  - {name: truncated, datatype: BOOL, shape: [-1]}\n",
        "parameters:\n  steps:\n",
        f"    - {{processor: tokenize, inputs: [text], outputs: {token_outputs},\n",
        f"       tokenizer: tokenizer.json, max_tokens: {max_tokens}, truncation: {truncation}}}\n",
        f"    - {{model: {name}_encoder, inputs: {{{feeds}}},\n",
        f"       outputs: {{{ENCODER_OUTPUT}: tokens}}}}\n",
        "    - {processor: mean_pool, inputs: [tokens, attention_mask],\n",
        f"       outputs: [{pooled}]}}\n",
    ]
    if normalise:
        lines.append("    - {processor: l2_normalize, inputs: [pooled], outputs: [embeddings]}\n")
    return "".join(lines)
