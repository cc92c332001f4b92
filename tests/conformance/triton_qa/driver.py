"""Run one of Triton's QA test files (a local copy, never stored in this repository) against
a server: `python -m tests.conformance.triton_qa.driver TEST_FILE COMMON_DIR HTTP GRPC OUT`
plus `--skip Class.test=reason` pairs.

The file is read as Triton wrote it; the only change is the address: its `localhost:8000`
(HTTP) and `localhost:8001` (gRPC) become the server's. Skipped cases are marked with
unittest.skip before the run, so the file itself stays untouched. The counts and the names
of what failed, erred or was skipped are written to OUT as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import unittest
from pathlib import Path

__all__ = ["main"]


def _load(test_file: Path, workdir: Path, http: str, grpc: str) -> unittest.TestSuite:
    source = test_file.read_text()
    source = source.replace("localhost:8000", http).replace("localhost:8001", grpc)
    copy = workdir / test_file.name
    copy.write_text(source)
    spec = importlib.util.spec_from_file_location(test_file.stem, copy)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[test_file.stem] = module
    spec.loader.exec_module(module)
    return unittest.defaultTestLoader.loadTestsFromModule(module), module  # type: ignore[return-value]


def _skip(module: object, skips: dict[str, str]) -> None:
    for qualified, reason in skips.items():
        class_name, _, test_name = qualified.partition(".")
        cls = getattr(module, class_name)
        if test_name:
            setattr(cls, test_name, unittest.skip(reason)(getattr(cls, test_name)))
        else:
            setattr(module, class_name, unittest.skip(reason)(cls))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("test_file", type=Path)
    parser.add_argument("common_dir", type=Path, help="Triton's qa/common (test_util.py)")
    parser.add_argument("http")
    parser.add_argument("grpc")
    parser.add_argument("out", type=Path)
    parser.add_argument("--skip", action="append", default=[], help="Class.test=reason")
    options = parser.parse_args(argv)
    workdir = options.out.parent
    sys.path.insert(0, str(options.common_dir))
    os.chdir(workdir)  # TestResultCollector writes test_results.txt into the working directory
    skips = dict(item.split("=", 1) for item in options.skip)
    # The module is imported first so that the skips can wrap its classes' methods; the
    # tests are then loaded again from the patched classes.
    _, module = _load(options.test_file, workdir, options.http, options.grpc)  # type: ignore[misc]
    _skip(module, skips)
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    report = {
        "run": result.testsRun,
        "skipped": {test.id(): reason for test, reason in result.skipped},
        "failures": {test.id(): text for test, text in result.failures},
        "errors": {test.id(): text for test, text in result.errors},
        "unexpected_successes": [test.id() for test in result.unexpectedSuccesses],
    }
    options.out.write_text(json.dumps(report, indent=2))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
