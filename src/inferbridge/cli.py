"""The `inferbridge` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferbridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model repository over REST and gRPC")
    serve.add_argument(
        "repository", nargs="?", type=Path, help="model repository (default: the bundled examples)"
    )
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, help="REST port (default 8000; 0 = any free)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port (default 8001; 0 = any free)")
    serve.add_argument("--default-model", help="model behind /predict and AIService (default iris)")
    serve.add_argument("--max-request-bytes", type=int, help="largest request body accepted")
    serve.add_argument("--max-model-file-bytes", type=int, help="largest model file a load reads")
    serve.add_argument(
        "--strict-readiness",
        action="store_true",
        default=None,
        help="report not ready while any model failed to load",
    )
    serve.add_argument(
        "--grpc-frontend",
        choices=("auto", "gateway", "grpcio"),
        help="what serves gRPC: the Go gateway, grpc.aio, or auto (default: the gateway "
        "when Go can build it)",
    )
    serve.add_argument(
        "--rest-frontend",
        choices=("auto", "gateway", "uvicorn"),
        help="what serves REST: the Go gateway, uvicorn, or auto (default: the gateway "
        "whenever it serves gRPC)",
    )
    serve.add_argument(
        "--grpc-queue-full-code",
        choices=("resource_exhausted", "unavailable"),
        help="gRPC status of a request refused because its model's queue is full (default "
        "resource_exhausted; unavailable is Triton's, which KServe's client retries)",
    )
    serve.add_argument("--log-level", help="logging level (default info)")
    serve.add_argument("--log-format", choices=("text", "json"), help="log lines as text or JSON")
    serve.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log one line per request (protocol, model, version, status, duration, bytes, "
        "trace id) to the logger inferbridge.access",
    )
    serve.add_argument(
        "--model-control-mode",
        choices=("none", "poll", "explicit"),
        help="none: load the repository once (default); poll: follow its directory; "
        "explicit: load --load-model at start, then through the repository API",
    )
    serve.add_argument(
        "--repository-poll-secs", type=float, help="poll mode rescan interval (default 15)"
    )
    serve.add_argument(
        "--state-dir", type=Path, help="durable state (rollouts); default per repository"
    )
    serve.add_argument(
        "--load-model",
        action="append",
        metavar="NAME",
        help="explicit mode: load this model at start (repeatable; '*' = all)",
    )
    serve.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve Prometheus metrics at /metrics (default on)",
    )
    serve.add_argument("--metrics-port", type=int, help="also serve /metrics on this port")
    serve.add_argument(
        "--trace-mode",
        choices=("off", "opentelemetry"),
        help="export OpenTelemetry spans over OTLP (default off; OTEL_TRACES_EXPORTER=otlp "
        "turns it on too)",
    )
    serve.add_argument("--trace-rate", type=float, help="fraction of new traces sampled (0-1)")
    serve.add_argument("--trace-endpoint", help="OTLP endpoint (default: OTEL_EXPORTER_OTLP_*)")
    serve.add_argument("--trace-protocol", choices=("grpc", "http/protobuf"), help="OTLP transport")
    _add_security_flags(serve)

    examples = commands.add_parser("examples", help="build the bundled example repository")
    examples.add_argument("--rebuild", action="store_true", help="rebuild even if cached")

    from inferbridge.frontends.gateway.cli import add_gateway_parser

    add_gateway_parser(commands)

    from inferbridge.export.cli import add_export_parser

    add_export_parser(commands)

    from inferbridge.fleet import cli as fleet_cli

    fleet_cli.register(commands)

    from inferbridge.release import cli as rollout_cli

    rollout_cli.register(commands)

    from inferbridge.placement import cli as placement_cli

    placement_cli.register(commands)

    from inferbridge.security import cli as auth_cli

    auth_cli.register(commands)
    return parser


def _add_security_flags(serve: argparse.ArgumentParser) -> None:
    """docs/security.md's flags: authentication, rate limits, TLS."""
    group = serve.add_argument_group("security (docs/security.md)")
    group.add_argument(
        "--auth-keys", type=Path, metavar="FILE", help="API keys file; turns authentication on"
    )
    group.add_argument(
        "--auth-jwt-hs256-secret-file",
        type=Path,
        metavar="FILE",
        help="accept JWTs signed HS256 with this secret (>= 32 bytes)",
    )
    group.add_argument(
        "--auth-jwt-jwks",
        type=Path,
        metavar="FILE",
        help="accept JWTs signed RS256/ES256 by a key of this JWKS file (by kid)",
    )
    group.add_argument("--auth-jwt-issuer", metavar="ISS", help="a JWT's iss must equal it")
    group.add_argument("--auth-jwt-audience", metavar="AUD", help="a JWT's aud must contain it")
    group.add_argument(
        "--auth-jwt-leeway-s",
        type=float,
        metavar="S",
        help="clock skew allowed on exp/nbf (default 30, at most 300)",
    )
    group.add_argument(
        "--auth-open-health",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="health endpoints need no credential (default on; off: they need read)",
    )
    group.add_argument(
        "--auth-default-rate",
        metavar="RPS[:BURST]",
        help="rate limit of a principal without its own",
    )
    group.add_argument(
        "--rate-limit",
        action="append",
        metavar="GLOB=RPS[:BURST]",
        help="per-model rate limit, one bucket per model (repeatable; the first match wins)",
    )
    group.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate chain")
    group.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key")
    group.add_argument(
        "--tls-client-ca", type=Path, metavar="FILE", help="mutual TLS: verify clients by these CAs"
    )
    group.add_argument(
        "--tls-client-auth",
        choices=("require", "request"),
        help="require (default with a client CA) or request a client certificate",
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    if options.command == "export":
        from inferbridge.export.cli import run_export

        return run_export(options)
    if options.command == "rollout":
        from inferbridge.release import cli as rollout_cli

        return rollout_cli.run(options)
    if options.command == "placement":
        from inferbridge.placement import cli as placement_cli

        return placement_cli.run(options)
    if options.command == "auth":
        from inferbridge.security import cli as auth_cli

        return auth_cli.run(options)
    if options.command == "fleet":
        from inferbridge.fleet import cli as fleet_cli

        return fleet_cli.run(options)
    if options.command == "examples":
        from inferbridge.examples.build import example_repository

        print(example_repository(rebuild=options.rebuild))
        return 0
    if options.command == "gateway":
        from inferbridge.frontends.gateway.cli import run_gateway

        return run_gateway(options)
    return _serve(options)


def _serve(options: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from inferbridge.server import run
    from inferbridge.settings import Settings

    overrides: dict[str, Any] = {
        key: value
        for key, value in vars(options).items()
        if key not in ("command",) and value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"inferbridge: invalid settings: {exc}", file=sys.stderr)
        return 2
    from inferbridge.observability.logs import configure_logging

    try:
        configure_logging(settings.log_level, settings.log_format)
    except ValueError as exc:  # an unknown level name
        print(f"inferbridge: invalid settings: {exc}", file=sys.stderr)
        return 2
    repository = settings.repository
    if repository is None:
        from inferbridge.examples.build import example_repository

        print("inferbridge: preparing the bundled example repository", flush=True)
        repository = example_repository()
    if not repository.is_dir():
        print(f"inferbridge: model repository {repository} is not a directory", file=sys.stderr)
        return 2
    print(f"inferbridge: model repository {repository}", flush=True)
    code = run(settings, repository)
    # Skip interpreter teardown: some frameworks' native extensions (triton, pulled in by
    # torch) print pages of leak reports while being torn down, after a clean shutdown.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
