"""The HTTP floor through inferbridge's Go gateway: the same bare ASGI app as floor_app,
answered by the gateway's Python backend instead of uvicorn. Usage:

    python -m benchmarks.floor_gateway PORT

It prints `REST listening on http://127.0.0.1:PORT` once serving and runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

from benchmarks.floor_app import app
from inferbridge.dataplane.dataplane import DataPlane
from inferbridge.frontends.gateway.build import build_gateway
from inferbridge.frontends.gateway.process import GatewayFrontend


async def _serve(port: int) -> None:
    frontend = GatewayFrontend(
        DataPlane(),
        binary=build_gateway(),
        max_message_bytes=64 * 1024 * 1024,
        default_model="none",
        rest_app=app,
    )
    await frontend.start("127.0.0.1", 0, port)
    print(f"REST listening on http://127.0.0.1:{frontend.http_port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(_serve(int(sys.argv[1])))
