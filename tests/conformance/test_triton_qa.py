"""Triton's own protocol QA tests, run unchanged against a real inferbridge server.

The test files are another project's code (triton-inference-server/server, BSD-3-Clause)
and are not stored here: point TRITON_QA_DIR at the `qa/` directory of a checkout of that
repository (these suites were last run against revision e1db8a603d86, 2.73.0 / 26.09):

    git clone https://github.com/triton-inference-server/server /tmp/triton-server
    TRITON_QA_DIR=/tmp/triton-server/qa .venv/bin/pytest tests/conformance/test_triton_qa.py

Each suite gets the repository its qa/L0_*/test.sh sets up (rebuilt in Triton's layout by
triton_qa/repository.py) and the server flags that script passes. The cases skipped below
are the documented differences from Triton (README, "Differences from Triton") and those
that need what this server does not have; each reason says which. The behaviours
themselves are covered without Triton's files by tests/integration/test_triton_compat.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conformance.triton_qa.repository import (
    build_aio_repository,
    build_generate_repository,
    build_grpc_unit_repository,
    build_http_repository,
)
from tests.serverproc import start_server

ROOT = Path(__file__).resolve().parents[2]
QA_DIR = os.environ.get("TRITON_QA_DIR")
PYTHONPATH = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]

pytestmark = pytest.mark.skipif(
    not QA_DIR,
    reason="TRITON_QA_DIR is not set (the qa/ directory of a triton-inference-server/server "
    "checkout; Triton's test files are not stored in this repository)",
)

_CUDA = "needs CUDA shared memory; this server answers 'not supported on this server'"
_NAME = "checks that the server's name is 'triton' (the issue excludes it)"
_PARAMETERS = (
    "mock_llm reads request parameters (REPETITION, DELAY, FAIL_LAST, OUTPUT_0_DIM); "
    "runtimes here do not see request parameters"
)
_OPTIONAL = "mock_llm's input_ids is an optional input; every input must be sent here"
_NOT_MODIFIABLE_CODE = (
    "load/unload outside explicit mode: FAILED_PRECONDITION here, UNAVAILABLE in Triton (a "
    "retry cannot help; KServe's client retries UNAVAILABLE) - README, Differences"
)


@dataclass(frozen=True)
class Suite:
    test_file: str  # under qa/
    build: Callable[[Path], Path]
    tests: int  # how many cases the file has (Triton's EXPECTED_NUM_TESTS where it says)
    server_args: tuple[str, ...] = ()
    skips: dict[str, str] = field(default_factory=dict)
    python_skips: dict[str, str] = field(default_factory=dict)  # the uvicorn/grpcio front ends
    gateway_skips: dict[str, str] = field(default_factory=dict)
    modules: tuple[str, ...] = ()  # what the test file imports beyond tritonclient


SUITES = {
    "L0_http/http_test": Suite(
        "L0_http/http_test.py",
        build_http_repository,
        17,
        ("--model-control-mode", "explicit", "--load-model", "*"),
        {
            "HttpTest.test_descriptive_status_code": "a full queue is 429 over REST here, 503 "
            "in Triton (README, Differences); test_triton_compat covers the 429",
            "HttpTest.test_negative_dimensions": "a negative dimension is 400 here (the "
            "client's error), 500 in Triton (README, Differences)",
            "HttpTest.test_load_oversized_file_parameter": "an oversized file: path is 400 / "
            "INVALID_ARGUMENT here, 500 'failed to poll from model repository' in Triton, "
            "whose own TODO says 400 (README, Differences)",
            "HttpTest.test_loading_large_invalid_model": "sends a 2.9 GB body (about 9 GB "
            "of client memory); a body over --max-request-bytes is refused with 413 here",
        },
        python_skips={
            "HttpTest.test_content_encoding_chunked_manually": "sends Content-Length and "
            "Transfer-Encoding: chunked together; uvicorn's parser (llhttp) refuses that as "
            "a request-smuggling risk, the default Go front end decodes it as Triton does",
        },
    ),
    "L0_http/python_http_aio_test": Suite(
        "L0_http/python_http_aio_test.py",
        lambda root: build_aio_repository(root, 7),
        18,
        skips={
            "TestHttpAioClient.test_get_server_metadata": _NAME,
            "TestHttpAioClient.test_register_cuda_shared_memory": _CUDA,
        },
    ),
    "L0_grpc/python_grpc_aio_test": Suite(
        "L0_grpc/python_grpc_aio_test.py",
        lambda root: build_aio_repository(root, 8),
        18,
        skips={
            "TestGrpcAioClient.test_get_server_metadata": _NAME,
            "TestGrpcAioClient.test_register_cuda_shared_memory": _CUDA,
            "TestGrpcAioClient.test_register_system_shared_memory": "a key that names no "
            "shared memory object is INVALID_ARGUMENT here (the client's error), INTERNAL in "
            "Triton; the message starts with Triton's 'Unable to open shared memory region'",
            "TestGrpcAioClient.test_load_model": _NOT_MODIFIABLE_CODE,
            "TestGrpcAioClient.test_unload_model": _NOT_MODIFIABLE_CODE,
        },
    ),
    "L0_grpc/python_unit_test": Suite(
        "L0_grpc/python_unit_test.py",
        build_grpc_unit_repository,
        7,
        skips={
            "RestrictedProtocolTest": "needs Triton's --grpc-restricted-protocol (header-"
            "keyed API groups), which this server does not have",
        },
    ),
    "L0_http/generate_endpoint_test": Suite(
        "L0_http/generate_endpoint_test.py",
        build_generate_repository,
        18,
        skips={
            "GenerateEndpointTest.test_generate_stream": _PARAMETERS,
            "GenerateEndpointTest.test_streaming": _PARAMETERS,
            "GenerateEndpointTest.test_generate_stream_response_error": _PARAMETERS,
            "GenerateEndpointTest.test_parameters": _PARAMETERS,
            "GenerateEndpointTest.test_0_dimension_output": _PARAMETERS,
            "GenerateEndpointTest.test_missing_inputs": _OPTIONAL,
            "GenerateEndpointTest.test_generate_with_all_inputs": _OPTIONAL,
        },
        gateway_skips={
            "GenerateEndpointTest.test_json_dtype_size_expansion_exceeds_limit_error": "the "
            "Go front end words a body over --max-request-bytes as 'request body of N bytes "
            "is over the limit of M bytes', not Triton's 'exceeds the maximum allowed input "
            "size'",
        },
        modules=("sseclient",),
    ),
}


@pytest.mark.parametrize("frontend", ["gateway", "python"])
@pytest.mark.parametrize("suite_name", list(SUITES))
def test_triton_qa_suite(suite_name: str, frontend: str, tmp_path: Path) -> None:
    assert QA_DIR is not None
    suite = SUITES[suite_name]
    for module in suite.modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{suite.test_file} needs the '{module}' module (pip install it)")
    repository = suite.build(tmp_path / "models")
    frontends = () if frontend == "gateway" else ("--rest-frontend", "uvicorn",
                                                  "--grpc-frontend", "grpcio")  # fmt: skip
    server = start_server(
        repository, *suite.server_args, *frontends, env={"PYTHONPATH": str(ROOT)}
    )
    report = tmp_path / "run" / "report.json"
    report.parent.mkdir()
    only = suite.python_skips if frontend == "python" else suite.gateway_skips
    skipping = {**suite.skips, **only}
    skips = [f"{name}={reason}" for name, reason in skipping.items()]
    try:
        run = subprocess.run(
            [sys.executable, "-m", "tests.conformance.triton_qa.driver",
             str(Path(QA_DIR) / suite.test_file), str(Path(QA_DIR) / "common"),
             server.http_url, server.grpc_url, str(report),
             *(arg for skip in skips for arg in ("--skip", skip))],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *PYTHONPATH])},
        )  # fmt: skip
    finally:
        server.stop()
    assert report.exists(), run.stdout + run.stderr
    result = json.loads(report.read_text())
    assert not result["failures"] and not result["errors"], run.stdout + run.stderr
    assert result["run"] == suite.tests, run.stdout
    # Exactly the cases named are skipped (a whole class: each of its cases).
    skipped_classes = {name for name in skipping if "." not in name}
    expected = {name for name in skipping if "." in name}
    seen = {test_id.split(".", 1)[1] for test_id in result["skipped"]}
    assert expected <= seen, result["skipped"]
    assert all(name.split(".")[0] in skipped_classes for name in seen - expected), seen
