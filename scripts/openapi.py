"""Write (or check) the REST API's OpenAPI 3.1 document,
src/inferbridge/frontends/rest/openapi.json, which the server serves at GET /openapi.json.

    python scripts/openapi.py          # regenerate the committed file
    python scripts/openapi.py --check  # exit 1 when the committed file is not what this writes

The document is written from this one description so that shared shapes (a tensor, an
error, the answers every route can give) are stated once; tests/security/test_openapi.py
checks that the committed file is current, valid, covers every route the app serves, and
that a live server answers as it says.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DOCUMENT = Path(__file__).resolve().parent.parent / "src/inferbridge/frontends/rest/openapi.json"

JSON = "application/json"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: Schema, description: str = "") -> Schema:
    return {"description": description or "the answer", "content": {JSON: {"schema": schema}}}


def error(description: str) -> Schema:
    return {"$ref": f"#/components/responses/{description}"}


# Answers that any request can get when authentication or rate limits are on
# (docs/security.md); listed on every operation so that a client knows them.
GUARDED = {"401": error("Unauthenticated"), "403": error("Forbidden"), "429": error("TooMany")}


def answers(ok: dict[str, Schema], *codes: str) -> dict[str, Schema]:
    """The responses of one operation: its successes, then its error codes (each with the
    {"error": ...} body), then the authentication and rate-limit ones."""
    names = {
        "400": "BadRequest",
        "403": "Forbidden",
        "404": "NotFound",
        "409": "Conflict",
        "413": "TooLarge",
        "429": "TooMany",
        "500": "ServerError",
        "503": "Unavailable",
        "504": "Timeout",
    }
    result = dict(ok)
    for code in codes:
        result[code] = error(names[code])
    for code, response in GUARDED.items():
        result.setdefault(code, response)
    return result


MODEL = {
    "name": "model_name",
    "in": "path",
    "required": True,
    "description": "the model's name",
    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
}
VERSION = {
    "name": "model_version",
    "in": "path",
    "required": True,
    "description": "the model's version (a decimal number in a repository)",
    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
}
REGION = {
    "name": "region_name",
    "in": "path",
    "required": True,
    "description": "the shared-memory region's name",
    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
}
ROLLOUT_MODEL = {**MODEL, "description": "the model whose rollout this is"}


def schemas() -> dict[str, Schema]:
    parameters: Schema = {
        "type": "object",
        "description": "names to strings, numbers or booleans (never null, arrays or objects)",
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    }
    datatype: Schema = {
        "type": "string",
        "enum": [
            "BOOL",
            "UINT8",
            "UINT16",
            "UINT32",
            "UINT64",
            "INT8",
            "INT16",
            "INT32",
            "INT64",
            "FP16",
            "FP32",
            "FP64",
            "BYTES",
            "BF16",
        ],
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "what was wrong"}},
        },
        "Parameters": parameters,
        "Datatype": datatype,
        "TensorMetadata": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": ref("Datatype"),
                "shape": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "-1 is a variable dimension",
                },
            },
        },
        "RequestInput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": ref("Datatype"),
                "parameters": ref("Parameters"),
                "data": {
                    "description": "row-major elements, nested or flat (absent when the "
                    "input travels in the binary part: parameters.binary_data_size)",
                },
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": ref("Parameters")},
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": ref("Parameters"),
                "inputs": {"type": "array", "minItems": 1, "items": ref("RequestInput")},
                "outputs": {"type": "array", "items": ref("RequestOutput")},
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "datatype": ref("Datatype"),
                "parameters": {"type": "object"},
                "data": {"description": "absent when the output travels in the binary part"},
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": ref("ResponseOutput")},
            },
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
                "model_errors": {
                    "type": "object",
                    "description": "models that failed to load, with the reason",
                },
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": ref("TensorMetadata")},
                "outputs": {"type": "array", "items": ref("TensorMetadata")},
            },
        },
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "ModelStatistics": {
            "type": "object",
            "required": ["model_stats"],
            "properties": {
                "model_stats": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "version", "inference_count", "execution_count"],
                        "properties": {
                            "name": {"type": "string"},
                            "version": {"type": "string"},
                            "last_inference": {"type": "integer"},
                            "inference_count": {"type": "integer"},
                            "execution_count": {"type": "integer"},
                            "inference_stats": {"type": "object"},
                            "batch_stats": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                }
            },
        },
        "RepositoryIndexRequest": {
            "type": "object",
            "properties": {
                "ready": {"type": "boolean", "description": "only the models that are ready"}
            },
        },
        "RepositoryIndex": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "version", "state", "reason"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "state": {
                        "type": "string",
                        "enum": ["READY", "UNAVAILABLE", "LOADING", "UNLOADING"],
                    },
                    "reason": {"type": "string"},
                },
            },
        },
        "RepositoryLoadRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "parameters": {
                    "type": "object",
                    "description": "`config`: a JSON model config that replaces the one on "
                    "disk; `file:<version>/<path>`: a file's bytes, base64",
                    "additionalProperties": {"type": ["string", "number", "boolean"]},
                }
            },
        },
        "RepositoryUnloadRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "parameters": {
                    "type": "object",
                    "properties": {"unload_dependents": {"type": "boolean"}},
                    "additionalProperties": {"type": ["string", "number", "boolean"]},
                }
            },
        },
        "Empty": {"type": "object", "maxProperties": 0},
        "RegionStatus": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "key", "offset", "byte_size"],
                "properties": {
                    "name": {"type": "string"},
                    "key": {"type": "string"},
                    "offset": {"type": "integer", "minimum": 0},
                    "byte_size": {"type": "integer", "minimum": 0},
                },
            },
        },
        "RegisterRequest": {
            "type": "object",
            "required": ["key", "byte_size"],
            "additionalProperties": False,
            "properties": {
                "key": {"type": "string", "description": "the POSIX shared-memory key"},
                "offset": {"type": "integer", "minimum": 0},
                "byte_size": {"type": "integer", "minimum": 0},
            },
        },
        "LogSettings": {
            "type": "object",
            "properties": {
                "log_file": {"type": "string", "description": "always '' (stderr)"},
                "log_info": {"type": "boolean"},
                "log_warning": {"type": "boolean"},
                "log_error": {"type": "boolean"},
                "log_verbose_level": {"type": "integer", "minimum": 0},
                "log_format": {"type": "string"},
            },
        },
        "TraceSettings": {
            "type": "object",
            "description": "Triton's trace settings; an update sets each given key "
            "(null clears a model's own value)",
            "properties": {
                "trace_level": {"type": "array", "items": {"type": "string"}},
                "trace_rate": {"type": "string"},
                "trace_count": {"type": "string"},
                "log_frequency": {"type": "string"},
                "trace_file": {"type": "string"},
                "trace_mode": {"type": "string"},
            },
        },
        "GenerateRequest": {
            "type": "object",
            "description": "`id`, `parameters`, and each model input by name (a scalar "
            "is one element, a list its elements); any other key is a request parameter",
            "properties": {"id": {"type": "string"}, "parameters": ref("Parameters")},
        },
        "GenerateResponse": {
            "type": "object",
            "required": ["model_name"],
            "description": "`model_name`, `model_version`, `id`, and each output by name",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
            },
        },
        "Rollout": {
            "type": "object",
            "description": "a rollout's status: step, weights, recent analyses, why",
        },
        "RolloutList": {
            "type": "object",
            "required": ["rollouts"],
            "properties": {"rollouts": {"type": "array", "items": ref("Rollout")}},
        },
        "RolloutSpec": {
            "type": "object",
            "required": ["model"],
            "description": "`model` plus the rollout spec of docs/release.md",
            "properties": {
                "model": {"type": "string", "minLength": 1},
                "actor": {"type": "string"},
            },
        },
        "AuditLog": {
            "type": "object",
            "required": ["events"],
            "properties": {
                "model": {"type": "string"},
                "events": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Actor": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "actor": {"type": "string", "maxLength": 1000},
                "reason": {"type": "string", "maxLength": 1000},
            },
        },
        "Approval": {
            "type": "object",
            "required": ["gate", "who"],
            "additionalProperties": False,
            "properties": {
                "gate": {"type": "string", "minLength": 1},
                "who": {"type": "string", "minLength": 1},
                "comment": {"type": "string", "maxLength": 1000},
            },
        },
    }


def responses() -> dict[str, Schema]:
    def error_response(description: str, headers: Schema | None = None) -> Schema:
        response = json_body(ref("Error"), description)
        if headers:
            response["headers"] = headers
        return response

    return {
        "BadRequest": error_response("the request is malformed; the message names what"),
        "Unauthenticated": error_response(
            "no credential, or one that is not valid (authentication on)",
            {
                "WWW-Authenticate": {
                    "schema": {"type": "string"},
                    "description": 'Bearer realm="inferbridge"',
                }
            },
        ),
        "Forbidden": error_response(
            "the principal lacks the scope; or the repository cannot be changed"
        ),
        "NotFound": error_response("unknown model, version, region or route"),
        "Conflict": error_response("the model or rollout is in a state that forbids this"),
        "TooLarge": error_response("the body is over --max-request-bytes"),
        "TooMany": error_response(
            "a full queue or a rate limit",
            {
                "Retry-After": {
                    "schema": {"type": "string"},
                    "description": "whole seconds, at least 1",
                }
            },
        ),
        "ServerError": error_response("the model raised while answering"),
        "Unavailable": error_response("the model or server is not ready"),
        "Timeout": error_response("the request's deadline passed"),
    }


def op(
    summary: str,
    responses: dict[str, Schema],
    *,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    tags: list[str],
    operation_id: str,
) -> Schema:
    operation: Schema = {
        "summary": summary,
        "operationId": operation_id,
        "tags": tags,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    return operation


def optional_json(schema: Schema, description: str) -> Schema:
    return {"required": False, "description": description, "content": {JSON: {"schema": schema}}}


def model_paths(prefix: str, params: list[Schema], suffix: str) -> dict[str, Schema]:
    """The routes of one model, or of one of its versions (`suffix` tells them apart in
    operation ids)."""
    header_length = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "description": "binary tensor data extension: the JSON header's byte count; 0: the "
        "whole body is the model's one input",
        "schema": {"type": "integer", "minimum": 0},
    }
    infer_body = {
        "required": True,
        "content": {
            JSON: {"schema": ref("InferenceRequest")},
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "the JSON header (Inference-Header-Content-Length bytes) "
                    "followed by the tensors' raw bytes, inputs in order",
                },
            },
        },
    }
    infer_ok = {
        "200": {
            "description": "the outputs: JSON, or a JSON header and binary outputs when "
            "an output asked for binary_data",
            "headers": {
                "Inference-Header-Content-Length": {
                    "schema": {"type": "string"},
                    "description": "present when the answer carries binary outputs",
                }
            },
            "content": {
                JSON: {"schema": ref("InferenceResponse")},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
    model = ["models"]
    infer_errors = ("400", "404", "413", "429", "500", "503", "504")
    return {
        prefix: {
            "get": op(
                "the model's metadata",
                answers({"200": json_body(ref("ModelMetadata"))}, "404"),
                parameters=params,
                tags=model,
                operation_id=f"model_metadata{suffix}",
            )
        },
        f"{prefix}/ready": {
            "get": op(
                "whether the model is ready (200) or not (503)",
                answers(
                    {
                        "200": json_body(ref("ModelReady"), "ready"),
                        "503": json_body(ref("ModelReady"), "not ready"),
                    },
                    "404",
                ),
                parameters=params,
                tags=model,
                operation_id=f"model_ready{suffix}",
            )
        },
        f"{prefix}/config": {
            "get": op(
                "Triton's ModelConfig JSON, with inferbridge's own config under `inferbridge`",
                answers({"200": json_body({"type": "object"})}, "404"),
                parameters=params,
                tags=model,
                operation_id=f"model_config{suffix}",
            )
        },
        f"{prefix}/stats": {
            "get": op(
                "the model's statistics (Triton's statistics extension)",
                answers({"200": json_body(ref("ModelStatistics"))}, "404"),
                parameters=params,
                tags=model,
                operation_id=f"model_stats{suffix}",
            )
        },
        f"{prefix}/infer": {
            "post": op(
                "inference (OIP v2; JSON, or the binary tensor data extension)",
                answers(infer_ok, *infer_errors),
                parameters=[*params, header_length],
                body=infer_body,
                tags=["inference"],
                operation_id=f"infer{suffix}",
            )
        },
        f"{prefix}/generate": {
            "post": op(
                "Triton's generate extension: one flat JSON object in, one out",
                answers({"200": json_body(ref("GenerateResponse"))}, *infer_errors),
                parameters=params,
                body={"required": True, "content": {JSON: {"schema": ref("GenerateRequest")}}},
                tags=["inference"],
                operation_id=f"generate{suffix}",
            )
        },
        f"{prefix}/generate_stream": {
            "post": op(
                "the generate extension as Server-Sent Events, one `data:` event a response",
                answers(
                    {
                        "200": {
                            "description": "events; an error while answering is an event "
                            '{"error": ...}',
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        }
                    },
                    *infer_errors,
                ),
                parameters=params,
                body={"required": True, "content": {JSON: {"schema": ref("GenerateRequest")}}},
                tags=["inference"],
                operation_id=f"generate_stream{suffix}",
            )
        },
    }


def shared_memory_paths(kind: str, summary: str) -> dict[str, Schema]:
    base = f"/v2/{kind}sharedmemory"
    tags = ["shared memory"]
    status_ok = {"200": json_body(ref("RegionStatus"), "the registered regions")}
    empty_ok = {"200": json_body(ref("Empty"), "done")}
    return {
        f"{base}/status": {
            "get": op(
                f"every registered {summary} region",
                answers(status_ok, "400"),
                tags=tags,
                operation_id=f"{kind}_shm_status",
            )
        },
        f"{base}/region/{{region_name}}/status": {
            "get": op(
                f"one {summary} region",
                answers(status_ok, "400", "404"),
                parameters=[REGION],
                tags=tags,
                operation_id=f"{kind}_shm_region_status",
            )
        },
        f"{base}/region/{{region_name}}/register": {
            "post": op(
                f"register a {summary} region"
                + (" (this server has no CUDA: always 400)" if kind == "cuda" else ""),
                answers(empty_ok, "400", "409"),
                parameters=[REGION],
                body={"required": True, "content": {JSON: {"schema": ref("RegisterRequest")}}},
                tags=tags,
                operation_id=f"{kind}_shm_register",
            )
        },
        f"{base}/unregister": {
            "post": op(
                f"unregister every {summary} region",
                answers(empty_ok, "400"),
                tags=tags,
                operation_id=f"{kind}_shm_unregister_all",
            )
        },
        f"{base}/region/{{region_name}}/unregister": {
            "post": op(
                f"unregister one {summary} region",
                answers(empty_ok, "400", "404"),
                parameters=[REGION],
                tags=tags,
                operation_id=f"{kind}_shm_unregister",
            )
        },
    }


def settings_path(
    path: str, schema: str, what: str, operation: str, params: list[Schema]
) -> dict[str, Schema]:
    tags = ["settings"]
    return {
        path: {
            "get": op(
                f"the {what}",
                answers({"200": json_body(ref(schema))}, "404"),
                parameters=params,
                tags=tags,
                operation_id=f"get_{operation}",
            ),
            "post": op(
                f"change the {what} (all or nothing); answers the new settings",
                answers({"200": json_body(ref(schema))}, "400", "404"),
                parameters=params,
                body=optional_json(ref(schema), "the settings to change"),
                tags=tags,
                operation_id=f"set_{operation}",
            ),
        }
    }


def rollout_paths() -> dict[str, Schema]:
    tags = ["rollouts"]
    params = [ROLLOUT_MODEL]
    paths: dict[str, Schema] = {
        "/v1/rollouts": {
            "get": op(
                "every model's rollout",
                answers({"200": json_body(ref("RolloutList"))}, "404"),
                tags=tags,
                operation_id="list_rollouts",
            ),
            "post": op(
                "start a rollout",
                answers({"201": json_body(ref("Rollout"), "started")}, "400", "404", "409"),
                body={"required": True, "content": {JSON: {"schema": ref("RolloutSpec")}}},
                tags=tags,
                operation_id="create_rollout",
            ),
        },
        "/v1/rollouts/{model_name}": {
            "get": op(
                "one model's rollout",
                answers({"200": json_body(ref("Rollout"))}, "404"),
                parameters=params,
                tags=tags,
                operation_id="get_rollout",
            ),
            "delete": op(
                "forget an ended rollout (back to the version policy)",
                answers({"200": json_body(ref("Rollout"))}, "400", "404", "409"),
                parameters=params,
                tags=tags,
                operation_id="delete_rollout",
            ),
        },
        "/v1/rollouts/{model_name}/history": {
            "get": op(
                "the model's rollout audit log",
                answers({"200": json_body(ref("AuditLog"))}, "404"),
                parameters=params,
                tags=tags,
                operation_id="rollout_history",
            )
        },
        "/v1/rollouts/{model_name}/approve": {
            "post": op(
                "approve a gate",
                answers({"200": json_body(ref("Rollout"))}, "400", "404", "409"),
                parameters=params,
                body=optional_json(ref("Approval"), "the gate and who approves it"),
                tags=tags,
                operation_id="approve_rollout",
            )
        },
    }
    for action in ("pause", "resume", "abort", "promote"):
        paths[f"/v1/rollouts/{{model_name}}/{action}"] = {
            "post": op(
                f"{action} the rollout",
                answers({"200": json_body(ref("Rollout"))}, "400", "404", "409"),
                parameters=params,
                body=optional_json(ref("Actor"), "who, and why"),
                tags=tags,
                operation_id=f"{action}_rollout",
            )
        }
    paths["/v1/rollout-audit"] = {
        "get": op(
            "every model's rollout audit log, oldest first",
            answers(
                {
                    "200": {
                        "description": "JSON, or JSON lines with ?format=jsonl",
                        "content": {
                            JSON: {"schema": ref("AuditLog")},
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    }
                },
                "404",
            ),
            parameters=[
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["json", "jsonl"]},
                }
            ],
            tags=tags,
            operation_id="rollout_audit",
        )
    }
    return paths


def service_paths() -> dict[str, Schema]:
    model_query = {
        "name": "model",
        "in": "query",
        "required": False,
        "description": "the pipeline model to use instead of the endpoint's default",
        "schema": {"type": "string", "minLength": 1},
    }
    image_body = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "additionalProperties": {"type": "string"},
                }
            },
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    box = {
        "x": {"type": "number"},
        "y": {"type": "number"},
        "w": {"type": "number"},
        "h": {"type": "number"},
    }
    outputs = {
        "faces": {
            "type": "object",
            "required": ["faces"],
            "properties": {
                "faces": {"type": "array", "items": {"type": "object", "properties": box}}
            },
        },
        "classify": {
            "type": "object",
            "required": ["predictions"],
            "properties": {"predictions": {"type": "array", "items": {"type": "object"}}},
        },
        "detect": {
            "type": "object",
            "required": ["detections"],
            "properties": {"detections": {"type": "array", "items": {"type": "object"}}},
        },
    }
    errors = ("400", "404", "413", "429", "500", "503", "504")
    paths: dict[str, Schema] = {}
    for name, summary in (
        ("faces", "faces found in a photo"),
        ("classify", "the class of an image"),
        ("detect", "objects detected in an image"),
    ):
        paths[f"/v1/vision/{name}"] = {
            "post": op(
                summary,
                answers({"200": json_body(outputs[name])}, *errors),
                parameters=[model_query],
                body=image_body,
                tags=["services"],
                operation_id=f"vision_{name}",
            )
        }
    paths["/v1/text/embed"] = {
        "post": op(
            "sentence embeddings",
            answers(
                {
                    "200": json_body(
                        {
                            "type": "object",
                            "required": ["embeddings"],
                            "properties": {
                                "embeddings": {
                                    "type": "array",
                                    "items": {"type": "array", "items": {"type": "number"}},
                                }
                            },
                        }
                    )
                },
                *errors,
            ),
            parameters=[model_query],
            body={
                "required": True,
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["texts"],
                            "properties": {
                                "texts": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "string"},
                                }
                            },
                        }
                    }
                },
            },
            tags=["services"],
            operation_id="text_embed",
        )
    }
    return paths


def paths() -> dict[str, Schema]:
    server = ["server"]
    health = ["health"]
    result: dict[str, Schema] = {
        "/v2/health/live": {
            "get": op(
                "liveness",
                answers(
                    {
                        "200": json_body(
                            {
                                "type": "object",
                                "required": ["live"],
                                "properties": {"live": {"type": "boolean"}},
                            }
                        )
                    }
                ),
                tags=health,
                operation_id="server_live",
            )
        },
        "/v2/health/ready": {
            "get": op(
                "readiness: 200 when every loaded model is ready, else 503",
                answers(
                    {
                        code: json_body(
                            {
                                "type": "object",
                                "required": ["ready"],
                                "properties": {"ready": {"type": "boolean"}},
                            },
                            what,
                        )
                        for code, what in (("200", "ready"), ("503", "not ready"))
                    }
                ),
                tags=health,
                operation_id="server_ready",
            )
        },
        "/v2": {
            "get": op(
                "the server's metadata",
                answers({"200": json_body(ref("ServerMetadata"))}),
                tags=server,
                operation_id="server_metadata",
            )
        },
        "/v2/models/stats": {
            "get": op(
                "every model's statistics",
                answers({"200": json_body(ref("ModelStatistics"))}),
                tags=["models"],
                operation_id="all_model_stats",
            )
        },
    }
    result.update(model_paths("/v2/models/{model_name}", [MODEL], ""))
    result.update(
        model_paths(
            "/v2/models/{model_name}/versions/{model_version}", [MODEL, VERSION], "_version"
        )
    )
    repository = ["repository"]
    result["/v2/repository/index"] = {
        "post": op(
            "the models of the repository and their state",
            answers({"200": json_body(ref("RepositoryIndex"))}, "400", "413"),
            body=optional_json(ref("RepositoryIndexRequest"), 'empty, or {"ready": bool}'),
            tags=repository,
            operation_id="repository_index",
        )
    }
    for action, schema in (
        ("load", "RepositoryLoadRequest"),
        ("unload", "RepositoryUnloadRequest"),
    ):
        result[f"/v2/repository/models/{{model_name}}/{action}"] = {
            "post": op(
                f"{action} a model (explicit model control)",
                answers(
                    {"200": json_body(ref("Empty"), "done")}, "400", "403", "404", "409", "413"
                ),
                parameters=[MODEL],
                body=optional_json(ref(schema), f"the {action} parameters"),
                tags=repository,
                operation_id=f"repository_{action}",
            )
        }
    result.update(shared_memory_paths("system", "system shared-memory"))
    result.update(shared_memory_paths("cuda", "CUDA shared-memory"))
    result.update(settings_path("/v2/logging", "LogSettings", "log settings", "logging", []))
    result.update(
        settings_path("/v2/trace/setting", "TraceSettings", "trace settings", "trace", [])
    )
    result.update(
        settings_path(
            "/v2/models/{model_name}/trace/setting",
            "TraceSettings",
            "model's trace settings",
            "model_trace",
            [MODEL],
        )
    )
    result["/metrics"] = {
        "get": op(
            "Prometheus metrics (Triton's names and inferbridge's)",
            answers(
                {
                    "200": {
                        "description": "the Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                "404",
            ),
            tags=server,
            operation_id="metrics",
        )
    }
    compat = ["compatibility"]
    result["/predict"] = {
        "post": op(
            "the default model's classes for a list of features (the seed's shortcut)",
            answers(
                {
                    "200": json_body(
                        {"type": "object", "required": ["class"], "properties": {"class": {}}}
                    )
                },
                "400",
                "404",
                "413",
                "429",
                "500",
                "503",
                "504",
            ),
            body={
                "required": True,
                "content": {
                    JSON: {
                        "schema": {
                            "description": "a list of numbers, a list of such lists, or "
                            '{"features": ...} / {"values": ...}',
                            "oneOf": [
                                {"type": "array"},
                                {
                                    "type": "object",
                                    "properties": {"features": {}, "values": {}},
                                },
                            ],
                        }
                    }
                },
            },
            tags=compat,
            operation_id="predict",
        )
    }
    result["/v1/models/{model_name}:predict"] = {
        "post": op(
            "TensorFlow Serving / KServe v1 predict",
            answers(
                {
                    "200": json_body(
                        {
                            "type": "object",
                            "required": ["predictions"],
                            "properties": {"predictions": {"type": "array"}},
                        }
                    )
                },
                "400",
                "404",
                "413",
                "429",
                "500",
                "503",
                "504",
            ),
            parameters=[MODEL],
            body={
                "required": True,
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["instances"],
                            "properties": {"instances": {"type": "array", "minItems": 1}},
                        }
                    }
                },
            },
            tags=compat,
            operation_id="v1_predict",
        )
    }
    result.update(service_paths())
    result.update(rollout_paths())
    result["/openapi.json"] = {
        "get": op(
            "this document",
            answers({"200": json_body({"type": "object"}, "OpenAPI 3.1")}),
            tags=server,
            operation_id="openapi",
        )
    }
    return result


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "inferbridge REST API",
            "version": "1",
            "description": "The Open Inference Protocol (KServe v2) with Triton's extensions, "
            "the seed's shortcuts, the vision and text services and the rollout API. Errors "
            'are {"error": "..."}. Credentials are optional: they are needed only when '
            "the server runs with authentication on (docs/security.md).",
        },
        "servers": [{"url": "http://127.0.0.1:8000"}],
        # {} first: no credential is needed unless the server turns authentication on.
        "security": [{}, {"bearer": []}, {"apiKey": []}],
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "responses": responses(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key, or a JWT when a JWT verifier is configured",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    arguments = parser.parse_args()
    text = render()
    if arguments.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != text:
            print(f"{DOCUMENT} is stale: run python scripts/openapi.py", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
