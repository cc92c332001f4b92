"""The REST API's OpenAPI document (src/inferbridge/frontends/rest/openapi.json): current
with scripts/openapi.py, valid OpenAPI 3.1, naming every route the app serves, served at
GET /openapi.json by both front ends, and true of a live server under a bounded
schemathesis run (no 5xx; statuses, content types, headers and bodies as documented)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import jsonschema_rs
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err, Ok

from inferbridge.frontends.rest import services
from tests.serverproc import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_PATH = ROOT / "src/inferbridge/frontends/rest/openapi.json"
#: The modules whose code decides which paths the REST app answers.
ROUTING_MODULES = [
    ROOT / "src/inferbridge/frontends/rest/app.py",
    ROOT / "src/inferbridge/frontends/rest/extensions.py",
    ROOT / "src/inferbridge/release/api.py",
]
#: Examples per operation in the fuzz run: ~55 operations x 2 front ends, kept to ~30 s.
EXAMPLES = int(os.environ.get("INFERBRIDGE_OPENAPI_EXAMPLES", "12"))
#: Path parameters of what the live server serves, so that fuzzed bodies reach a model.
SERVED = {"model_name": "iris", "model_version": "1"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openapi_generator", ROOT / "scripts/openapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _document() -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(DOCUMENT_PATH.read_bytes())
    return document


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    }


# -- the document itself -------------------------------------------------------------------


def test_committed_document_is_what_the_generator_writes() -> None:
    assert DOCUMENT_PATH.read_text() == _generator().render(), (
        "openapi.json is stale: run python scripts/openapi.py"
    )


def test_document_is_valid_openapi_3_1() -> None:
    document = _document()
    assert document["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # the OpenAPI 3.1 meta-schema (jsonschema_rs)
    loaded = [result for result in schema.get_all_operations() if isinstance(result, Ok)]
    broken = [
        str(result.err()) for result in schema.get_all_operations() if isinstance(result, Err)
    ]
    assert broken == []
    assert len(loaded) == len(_operations(document))
    for name, component in document["components"]["schemas"].items():
        # each schema compiles as JSON Schema 2020-12 (OpenAPI 3.1's dialect)
        resolvable = {**component, "$defs": document["components"]["schemas"]}
        text = orjson.dumps(resolvable).decode().replace("#/components/schemas/", "#/$defs/")
        jsonschema_rs.Draft202012Validator(orjson.loads(text))
        assert name


def test_security_schemes_are_declared_and_optional() -> None:
    document = _document()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {
        **schemes["apiKey"],
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }
    assert {} in document["security"], "credentials must be optional (authentication is off)"


def test_every_error_answer_is_the_error_body() -> None:
    document = _document()
    for name, response in document["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }, name
    for method, path in _operations(document):
        codes = document["paths"][path][method.lower()]["responses"]
        for code, response in codes.items():
            if int(code) >= 400 and "$ref" not in response:
                assert path.endswith("/ready") or path == "/v2/health/ready", (method, path, code)


# -- every route the app serves is documented ----------------------------------------------


def _route_literals(module: Path) -> set[str]:
    """Path segments the routing code matches: the string constants of the comparisons
    and string methods that involve the path's parts (`parts[0] == "v2"`, `rest in
    (["generate"], ...)`, `parts[2].endswith(":predict")`) and of module-level tuples of
    names (`_ACTIONS`)."""
    path_names = {"parts", "rest", "head", "action"}
    tree = ast.parse(module.read_text())
    candidates: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = {n.id for o in operands for n in ast.walk(o) if isinstance(n, ast.Name)}
            if names & path_names:
                candidates.extend(operands)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            # parts[2].endswith(":predict")
            names = {n.id for n in ast.walk(node.func.value) if isinstance(n, ast.Name)}
            if names & path_names:
                candidates.extend(node.args)
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Tuple):
            candidates.append(statement.value)
    return {
        leaf.value
        for candidate in candidates
        for leaf in ast.walk(candidate)
        if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str)
    }


def test_every_path_segment_the_router_knows_is_documented() -> None:
    """A new route needs a new literal in the routing code: it fails here until documented."""
    documented = {
        piece
        for path in _document()["paths"]
        for segment in path.split("/")
        for piece in re.split(r"\{[^}]+\}", segment)
        if piece
    }
    missing = {
        module.name: sorted(_route_literals(module) - documented) for module in ROUTING_MODULES
    }
    assert missing == {module.name: [] for module in ROUTING_MODULES}


def test_every_service_is_documented() -> None:
    paths = _document()["paths"]
    assert {f"/v1/{a}/{b}" for a, b in services.DEFAULT_MODELS} == {
        p for p in paths if p.startswith(("/v1/vision/", "/v1/text/"))
    }


# -- against live servers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_repository(tmp_path_factory: pytest.TempPathFactory, examples_dir: Path) -> Path:
    """Two quick models: the server starts in seconds and a fuzzed unload cannot hurt the
    session's shared server."""
    root = tmp_path_factory.mktemp("openapi-models")
    for name in ("iris", "iris_onnx"):
        shutil.copytree(examples_dir / name, root / name)
    return root


@pytest.fixture(scope="module", params=["gateway", "uvicorn"])
def live_server(request: pytest.FixtureRequest, small_repository: Path) -> Iterator[ServerProcess]:
    frontends = (
        ()
        if request.param == "gateway"
        else ("--rest-frontend", "uvicorn", "--grpc-frontend", "grpcio")
    )
    proc = start_server(
        small_repository, "--model-control-mode", "explicit", "--load-model", "*", *frontends
    )
    yield proc
    proc.stop()


def _concrete(path: str) -> str:
    values = {"model_name": "iris", "model_version": "1", "region_name": "nowhere"}
    return re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], path)


def test_document_is_served_by_both_front_ends(live_server: ServerProcess) -> None:
    answer = httpx.get(f"{live_server.base_url}/openapi.json", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == _document()


def test_every_documented_operation_is_routed(live_server: ServerProcess) -> None:
    """The converse of the literal check: nothing documented is a route the app lacks."""
    unrouted = []
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        for method, path in sorted(_operations(_document())):
            if path.endswith(("/unload", "/load")):
                continue  # changes the repository; the fuzz run below reaches it
            answer = client.request(method, _concrete(path))
            if answer.status_code in (404, 405) and "no route" in answer.text:
                unrouted.append(f"{method} {path}: {answer.status_code} {answer.text}")
            if answer.status_code == 405:
                unrouted.append(f"{method} {path}: {answer.text}")
    assert unrouted == []


def test_schemathesis_finds_no_server_error_and_no_drift(live_server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_dict(_document())
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/v2/repository/models/{model_name}/unload":
            continue  # unloading would leave the other operations only 404s to find
        names = {p.name for p in operation.path_parameters}
        served = {k: v for k, v in SERVED.items() if k in names}  # a model the server has
        strategy = st.one_of(
            operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
            operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
            operation.as_strategy(schemathesis.GenerationMode.POSITIVE, path_parameters=served),
            operation.as_strategy(schemathesis.GenerationMode.NEGATIVE, path_parameters=served),
        )

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # report, not shrink: keeps it bounded
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            try:
                case.call_and_validate(base_url=live_server.base_url, checks=CHECKS, timeout=30)
            except (Exception, BaseExceptionGroup) as error:  # FailureGroup is the latter
                failures.append(f"{case.method} {case.formatted_path}: {error}")

        run()
    assert not failures, "\n\n".join(failures[:20])
