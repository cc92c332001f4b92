"""`inferbridge export sklearn|torch|sentence-transformers`: argument parsing and reporting.

Exit status: 0 when every export agrees with its original within the tolerance, 1 when one
does not (the entry is left on disk for inspection), 2 for bad arguments or inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from inferbridge.errors import InferBridgeError

__all__ = ["add_export_parser", "run_export"]


def add_export_parser(commands: Any) -> None:
    export = commands.add_parser(
        "export", help="turn a framework model into a verified repository entry"
    )
    kinds = export.add_subparsers(dest="kind", required=True)

    def common(parser: argparse.ArgumentParser, tolerance: float) -> None:
        parser.add_argument("--repository", type=Path, required=True, help="model repository")
        parser.add_argument("--name", required=True, help="model name in the repository")
        parser.add_argument(
            "--tolerance",
            type=float,
            default=tolerance,
            help=f"max abs diff (default {tolerance:g})",
        )

    sk = kinds.add_parser("sklearn", help="a joblib/pickle scikit-learn estimator -> ONNX/skops")
    sk.add_argument("model", type=Path, help="the estimator file (joblib.dump)")
    sk.add_argument("--sample", type=Path, help=".npy rows to verify on (default random)")
    sk.add_argument("--features", type=int, help="feature count when no --sample is given")
    sk.add_argument("--input-name", default="input")
    sk.add_argument(
        "--format",
        choices=("onnx", "skops"),
        default="onnx",
        help="onnx (skl2onnx, the onnx runtime) or skops (the sklearn runtime, no pickle)",
    )
    common(sk, 1e-4)

    th = kinds.add_parser("torch", help="a torch module (or checkpoint) -> TorchScript/ONNX")
    th.add_argument("--module", help="pkg.mod:Class or factory returning an nn.Module")
    th.add_argument("--checkpoint", type=Path, help="state dict (with --module) or whole module")
    th.add_argument("--input-shape", required=True, help="sample shape, e.g. 1,3,32,32")
    th.add_argument("--input-dtype", default="float32")
    th.add_argument("--format", default="torchscript,onnx", help="torchscript, onnx or both")
    th.add_argument("--input-names", default="input")
    th.add_argument("--output-names", default="output")
    common(th, 1e-4)

    st = kinds.add_parser(
        "sentence-transformers", help="a sentence-transformers directory -> ONNX + tokenizer"
    )
    st.add_argument("source", type=Path, help="the model directory")
    st.add_argument("--truncation", choices=["truncate", "reject"], default="truncate")
    st.add_argument("--sentences", nargs="+", help="texts to verify on")
    common(st, 1e-4)


def run_export(options: argparse.Namespace) -> int:
    from inferbridge.export.verify import ExportMismatch

    try:
        results = _dispatch(options)
    except ExportMismatch as exc:
        print(f"inferbridge export: FAILED: {exc.message}", file=sys.stderr)
        return 1
    except (InferBridgeError, OSError, ValueError, ImportError) as exc:
        message = exc.message if isinstance(exc, InferBridgeError) else str(exc)
        print(f"inferbridge export: {message}", file=sys.stderr)
        return 2
    for result in results:
        print(result.line())
    print(f"inferbridge export: wrote {options.repository / options.name}* and verified it")
    return 0


def _dispatch(options: argparse.Namespace) -> list[Any]:
    options.repository.mkdir(parents=True, exist_ok=True)
    if options.kind == "sklearn":
        return [_sklearn(options)]
    if options.kind == "torch":
        return _torch(options)
    from inferbridge.export.sentence import SAMPLE_SENTENCES, export_sentence_transformer

    return [
        export_sentence_transformer(
            options.source,
            options.repository,
            options.name,
            sentences=options.sentences or SAMPLE_SENTENCES,
            tolerance=options.tolerance,
            truncation=options.truncation,
        )
    ]


def _sklearn(options: argparse.Namespace) -> Any:
    import joblib

    from inferbridge.export.sklearn import export_sklearn

    estimator = joblib.load(options.model)
    if options.sample is not None:
        sample = np.load(options.sample)
    else:
        features = options.features or getattr(estimator, "n_features_in_", None)
        if not features:
            raise InferBridgeError("give --sample rows or --features")
        sample = np.random.default_rng(0).normal(size=(16, int(features)))
    if options.format == "skops":
        from inferbridge.export.sklearn import export_sklearn_skops

        return export_sklearn_skops(
            estimator,
            sample,
            options.repository / options.name,
            input_name=options.input_name,
            tolerance=options.tolerance,
        )
    return export_sklearn(
        estimator,
        sample,
        options.repository / options.name,
        input_name=options.input_name,
        tolerance=options.tolerance,
    )


def _torch(options: argparse.Namespace) -> list[Any]:
    from inferbridge.export.torch_models import export_torch, load_module

    shape = [int(d) for d in options.input_shape.split(",")]
    rng = np.random.default_rng(0)
    samples = []
    for batch in (shape[0], shape[0] + 2):  # a second batch size checks the variable batch dim
        array = rng.normal(size=[batch, *shape[1:]]).astype(options.input_dtype)
        samples.append(array)
    return export_torch(
        load_module(options.module, options.checkpoint),
        samples,
        options.repository,
        options.name,
        formats=[f.strip() for f in options.format.split(",") if f.strip()],
        input_names=options.input_names.split(","),
        output_names=options.output_names.split(","),
        tolerance=options.tolerance,
    )
