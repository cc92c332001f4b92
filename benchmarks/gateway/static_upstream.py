"""A static upstream: nginx answering every inference with one canned OIP response.

In front of it, what a front spends per request is what it alone costs, with next to
nothing else on the machine: the Python upstreams of the other scenarios share the two
cores with the front and make its req/s swing by a third from one 5-s point to the next,
while its CPU per request here moves by a few per cent.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks.gateway.balancers import Target
from benchmarks.procs import free_port

__all__ = ["StaticUpstream"]

#: What the upstream answers an inference with (iris_onnx's outputs, one row).
_RESPONSE = {
    "model_name": "iris_onnx",
    "model_version": "1",
    "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [0]},
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [0.9, 0.05, 0.05]},
    ],
}
_INDEX = [{"name": "iris_onnx", "version": "1", "state": "READY"}]


@dataclass
class StaticUpstream:
    """One nginx worker serving the repository index, health and a canned inference
    answer over REST (it has no gRPC: its gRPC address is a closed port)."""

    work: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self) -> Target:
        prefix = self.work / "static-upstream"
        prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        default_type application/json;
        client_body_buffer_size 64k;
        location = /v2/repository/index {{ return 200 '{json.dumps(_INDEX)}'; }}
        location / {{ return 200 '{json.dumps(_RESPONSE)}'; }}
    }}
}}
"""
        (prefix / "nginx.conf").write_text(conf)
        self.process = subprocess.Popen(
            ["nginx", "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
            stdout=subprocess.DEVNULL,
            stderr=(prefix / "stderr.log").open("wb"),
        )
        deadline = time.monotonic() + 10
        url = f"http://127.0.0.1:{self.port}/v2/health/ready"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1):
                    break
            except OSError as exc:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"the static upstream did not start (see {prefix})") from exc
                time.sleep(0.05)
        return Target("static", f"127.0.0.1:{self.port}", f"127.0.0.1:{free_port()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
