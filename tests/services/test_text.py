"""text_embedding end to end: REST /v1/text/embed and OIP with BYTES, against
sentence-transformers' own embeddings; long texts truncated or rejected as configured."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serverproc import ServerProcess, start_server
from tests.services.common import bytes_tensor, oip, sentence_transformers_embeddings

SENTENCES = [
    "A man is eating food.",
    "Backend services want to send a sentence and get an answer, not reimplement preprocessing.",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
    "ok",
]
LONG = "word " * 400  # 402 tokens with [CLS] and [SEP]; the model takes 256


@pytest.fixture(scope="module")
def text(examples_dir: Path, server: ServerProcess) -> ServerProcess:
    if not (examples_dir / "text_embedding").exists():
        pytest.skip("text_embedding example not built (needs sentence-transformers)")
    return server


@pytest.fixture(scope="module")
def reference() -> np.ndarray:  # type: ignore[type-arg]
    pytest.importorskip("sentence_transformers")
    return sentence_transformers_embeddings([*SENTENCES, LONG])


def embed(server: ServerProcess, texts: object) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/text/embed", json={"texts": texts}, timeout=60)


def test_rest_embeddings_match_sentence_transformers(
    text: ServerProcess,
    reference: np.ndarray,  # type: ignore[type-arg]
) -> None:
    response = embed(text, SENTENCES)
    assert response.status_code == 200, response.text
    got = np.asarray(response.json()["embeddings"], np.float32)
    assert got.shape == (len(SENTENCES), 384)
    assert np.abs(got - reference[: len(SENTENCES)]).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert response.json()["truncated"] == []


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_oip_bytes_embeddings(
    text: ServerProcess,
    reference: np.ndarray,  # type: ignore[type-arg]
    transport: str,
) -> None:
    inputs = {"text": bytes_tensor([s.encode() for s in SENTENCES])}
    out = oip(text, transport, "text_embedding", inputs, ["embeddings", "truncated"])
    assert out["embeddings"].dtype == np.float32 and out["embeddings"].shape == (4, 384)
    assert np.abs(out["embeddings"] - reference[: len(SENTENCES)]).max() < 1e-4
    assert out["truncated"].tolist() == [False] * 4


def test_large_requests_are_split_into_batches(text: ServerProcess) -> None:
    texts = [f"sentence number {i}" for i in range(70)]  # max_batch_size is 32
    got = np.asarray(embed(text, texts).json()["embeddings"])
    single = np.asarray(embed(text, [texts[69]]).json()["embeddings"])
    assert got.shape == (70, 384)
    assert np.abs(got[69] - single[0]).max() < 1e-5


def test_long_text_is_truncated_by_default_and_says_so(
    text: ServerProcess,
    reference: np.ndarray,  # type: ignore[type-arg]
) -> None:
    response = embed(text, ["short", LONG])
    assert response.status_code == 200
    assert response.json()["truncated"] == [1]
    # sentence-transformers truncates to 256 tokens too.
    got = np.asarray(response.json()["embeddings"][1], np.float32)
    assert np.abs(got - reference[-1]).max() < 1e-4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"texts": []}, "non-empty list"),
        ({"texts": "one string"}, "non-empty list"),
        ({"texts": ["fine", 3]}, "must be a string"),
        ({"text": ["wrong key"]}, "non-empty list"),
    ],
)
def test_bad_text_requests_are_400(text: ServerProcess, body: object, message: str) -> None:
    response = httpx.post(f"{text.base_url}/v1/text/embed", json=body, timeout=30)
    assert response.status_code == 400 and message in response.json()["error"]
    bad_json = httpx.post(f"{text.base_url}/v1/text/embed", content=b"{nope", timeout=30)
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]
    assert embed(text, ["still serving"]).status_code == 200


@pytest.fixture(scope="module")
def rejecting(
    examples_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    if not (examples_dir / "text_embedding").exists():
        pytest.skip("text_embedding example not built")
    root = tmp_path_factory.mktemp("reject")
    for name in ("text_embedding", "text_embedding_encoder"):
        shutil.copytree(examples_dir / name, root / name)
    config = root / "text_embedding" / "config.yaml"
    config.write_text(config.read_text().replace("truncation: truncate", "truncation: reject"))
    server = start_server(root)
    yield server
    server.stop()


def test_long_text_rejected_when_configured(rejecting: ServerProcess) -> None:
    response = embed(rejecting, ["short", LONG])
    assert response.status_code == 400
    error = response.json()["error"]
    assert "text 1 is 402 tokens" in error and "limit of 256" in error and "reject" in error
    assert embed(rejecting, ["short"]).status_code == 200
