"""Softmax and top-k against numpy references."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inferbridge.pipelines.classify import Labels, Softmax, TopK, softmax


def test_softmax_matches_reference() -> None:
    scores = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32) * 30
    want = np.exp(scores.astype(np.float64)) / np.exp(scores.astype(np.float64)).sum(
        1, keepdims=True
    )
    np.testing.assert_allclose(softmax(scores), want, rtol=1e-5, atol=1e-7)
    (out,) = Softmax({}, Path("."))(scores)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-7)


def test_top_k_with_labels_file(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("zero\none\ntwo\nthree\n")
    scores = np.array([[0.1, 0.5, 0.3, 0.1], [0.7, 0.0, 0.1, 0.2]], np.float32)
    labels, best = TopK({"k": 2, "labels": "labels.txt"}, tmp_path)(scores)
    assert np.asarray(labels).tolist() == [[b"one", b"two"], [b"zero", b"three"]]
    np.testing.assert_allclose(best, [[0.5, 0.3], [0.7, 0.2]])


def test_top_k_softmax_and_index_labels() -> None:
    scores = np.array([[1.0, 3.0, 2.0]], np.float32)
    labels, best = TopK({"k": 5, "softmax": True}, Path("."))(scores)
    assert np.asarray(labels).tolist() == [[b"1", b"2", b"0"]]
    want = np.sort(softmax(scores)[0])[::-1]
    np.testing.assert_allclose(np.asarray(best)[0], want, rtol=1e-6)


def test_labels_maps_indices_of_any_shape(tmp_path: Path) -> None:
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    (names,) = Labels({"labels": "names.txt"}, tmp_path)(np.array([[0, 1], [1, 7]]))
    assert np.asarray(names).tolist() == [[b"cat", b"dog"], [b"dog", b"7"]]
