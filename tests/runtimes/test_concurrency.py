"""Runtimes that keep per-thread state (wasm, opencv, tflite) and reentrant native libraries
answer correctly when several instances run requests at once."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbridge.examples.build import digits_split, iris_split
from inferbridge.repository.config import load_config
from inferbridge.runtimes.registry import runtime_class
from tests.runtimes.common import TRANSPORTS, assert_same, copy_model, serving
from tests.serverproc import ServerProcess

#: model -> (framework module, input name, outputs, dataset)
MODELS: dict[str, tuple[str | None, str, list[str], str]] = {
    "iris_go": (None, "input", ["probabilities", "label"], "iris"),
    "digits_c": (None, "pixels", ["probabilities", "label"], "digits"),
    "iris_wasm": ("wasmtime", "input", ["scores", "label"], "iris"),
    "digits_opencv": ("cv2", "pixels", ["scores", "probabilities"], "digits"),
    "digits_tflite": ("ai_edge_litert", "pixels", ["scores", "probabilities", "label"], "digits"),
}


def _available(examples: Path) -> list[str]:
    return [
        name
        for name, (module, *_) in MODELS.items()
        if (examples / name).exists()
        and (module is None or importlib.util.find_spec(module) is not None)
    ]


@pytest.fixture(scope="module")
def pooled(examples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    names = _available(examples_dir)
    if not names:
        pytest.skip("no runtime examples built")
    root = tmp_path_factory.mktemp("pooled")
    for name in names:
        target = copy_model(examples_dir, name, root)
        config = target / "config.yaml"
        config.write_text(config.read_text() + "instance_group: [{count: 3, kind: cpu}]\n")
    with serving(root) as server:
        yield server


def _expected(examples: Path, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    config = load_config(examples / name / "config.yaml")
    runtime = runtime_class(config.runtime)()
    runtime.load(examples / name / "1", config, "cpu")
    try:
        return runtime.infer(inputs)
    finally:
        runtime.unload()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_concurrent_requests_get_their_own_answers(
    examples_dir: Path, pooled: ServerProcess, name: str
) -> None:
    if name not in _available(examples_dir):
        pytest.skip(f"{name} not built or its framework is missing")
    _, input_name, outputs, dataset = MODELS[name]
    X = (digits_split if dataset == "digits" else iris_split)()[1]
    # Different batches (sizes 1..24, different rows) so a mixed-up answer cannot pass.
    batches = [X[i : i + 1 + i % 7] for i in range(24)]
    wanted = [_expected(examples_dir, name, {input_name: b}) for b in batches]

    def call(index: int) -> dict[str, Any]:
        transport = TRANSPORTS["grpc" if index % 2 else "http"]
        return transport(pooled, name, {input_name: batches[index]}, outputs)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(len(batches))))
    for got, want in zip(results, wanted, strict=True):
        assert_same(got, {k: np.asarray(v) for k, v in want.items()})
