"""`inferbridge gateway`: build the Go gateway binary, or (with ``--config``) run it as
the gateway in front of many Open Inference Protocol servers (docs/gateway.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_gateway_parser", "run_gateway"]


def add_gateway_parser(commands: Any) -> None:
    """Add the `gateway` subcommand to an argparse subparsers object."""
    gateway = commands.add_parser(
        "gateway",
        help="run the gateway in front of many OIP servers (--config), or build it now",
        description=__doc__,
    )
    gateway.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    gateway.add_argument(
        "--config",
        type=Path,
        help="serve as the gateway of this YAML configuration (docs/gateway.md); without "
        "it the command only builds the binary and prints its path",
    )
    gateway.add_argument(
        "--check", action="store_true", help="with --config: validate the file and exit"
    )


def run_gateway(options: argparse.Namespace) -> int:
    """Build the binary; with --config, replace this process with it (signals, stdout
    and the exit status are then the gateway's own)."""
    from inferbridge.frontends.gateway.build import GatewayBuildError, build_gateway

    try:
        binary = build_gateway(force=options.rebuild)
    except GatewayBuildError as exc:
        print(f"inferbridge: {exc}", file=sys.stderr)
        return 1
    if options.config is None:
        if options.check:
            print("inferbridge: --check needs --config", file=sys.stderr)
            return 2
        print(binary)
        return 0
    argv = [str(binary), "--config", str(options.config)]
    if options.check:
        argv.append("--check")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(binary, argv)
    return 1  # not reached: execv replaces the process or raises
