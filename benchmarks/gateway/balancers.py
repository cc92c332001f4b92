"""What sits between the load generator and the upstreams: the inferbridge gateway, nginx,
HAProxy, or nothing (direct to one upstream). Each is a `Front` with a REST URL and a gRPC
target, started for a list of targets (an upstream, or a fault proxy in front of one)."""

from __future__ import annotations

import shutil
import string
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import Server, free_port, http_ok, launch

__all__ = [
    "BALANCERS",
    "Front",
    "Target",
    "direct",
    "gateway",
    "gateway_available",
    "gateway_counters",
    "haproxy",
    "nginx",
]

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parents[1]


@dataclass(frozen=True)
class Target:
    """One upstream as a balancer sees it: its REST and gRPC addresses (host:port)."""

    name: str
    rest: str
    grpc: str


@dataclass
class Front:
    """A running balancer (or none): where the load generator sends its requests."""

    name: str  # shown in tables: "gateway p2c-ewma", "nginx least_conn", "direct", ...
    rest_url: str
    grpc_target: str
    server: Server | None = None  # None for direct

    def cpu_seconds(self) -> float:
        return self.server.cpu_seconds() if self.server is not None else 0.0

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def as_server(self, fallback: Server) -> Server:
        """A `Server` for benchmarks.loadgen (direct: the upstream itself)."""
        if self.server is not None:
            return self.server
        return fallback


#: Per kind of front, its balancer names as the scenarios ask for them.
BALANCERS = {
    "gateway": {"ewma": "p2c-ewma", "least": "least-outstanding", "rr": "round-robin"},
    "nginx": {"ewma": "", "least": "least_conn", "rr": "round-robin"},
    "haproxy": {"ewma": "", "least": "leastconn", "rr": "roundrobin"},
}


#: Fronts started so far in this process: each gets its own config, prefix and log file.
_GATEWAY_RUNS = [0]


def _render(template: str, **values: object) -> str:
    return string.Template((_HERE / template).read_text()).substitute(
        {k: str(v) for k, v in values.items()}
    )


def _ready(url: str):  # type: ignore[no-untyped-def]
    def check(server: Server) -> bool:
        return http_ok(url)

    return check


def direct(target: Target) -> Front:
    """No balancer: the load generator talks to one upstream (or its fault proxy)."""
    return Front("direct", f"http://{target.rest}", target.grpc)


def nginx(
    work: Path,
    targets: Sequence[Target],
    *,
    balance: str = "least_conn",
    read_timeout_s: float = 30.0,
    workers: int = 2,
) -> Front:
    """nginx with passive health (max_fails=1 fail_timeout=10s) and proxy_next_upstream."""
    _GATEWAY_RUNS[0] += 1  # each nginx gets its own prefix (two may run at once)
    prefix = work / "nginx" / f"{_GATEWAY_RUNS[0]:02d}"
    if prefix.exists():
        shutil.rmtree(prefix)
    prefix.mkdir(parents=True)
    http_port, grpc_port = free_port(), free_port()
    options = "max_fails=1 fail_timeout=10s"
    config = _render(
        "nginx.conf.tmpl",
        workers=workers,
        prefix=prefix,
        balance="least_conn;" if balance == "least_conn" else "",
        rest_servers="\n".join(f"        server {t.rest} {options};" for t in targets),
        grpc_servers="\n".join(f"        server {t.grpc} {options};" for t in targets),
        http_port=http_port,
        grpc_port=grpc_port,
        read_timeout=f"{read_timeout_s:g}s",
    )
    path = prefix / "nginx.conf"
    path.write_text(config)
    argv = ["nginx", "-c", str(path), "-p", f"{prefix}/", "-g", "daemon off;"]
    server = launch(
        f"nginx {balance}",
        argv,
        log_path=prefix / "stdout.log",
        ready=_ready(f"http://127.0.0.1:{http_port}/v2/health/ready"),
        http_port=http_port,
        grpc_port=grpc_port,
        timeout=30,
    )
    return Front(f"nginx {balance}", server.base_url, server.grpc_target, server)


def haproxy(
    work: Path,
    targets: Sequence[Target],
    *,
    balance: str = "leastconn",
    read_timeout_s: float = 30.0,
    check_timeout_s: float = 1.0,
    workers: int = 2,
) -> Front:
    """HAProxy with active httpchk on /v2/health/ready, retry-on and option redispatch."""
    _GATEWAY_RUNS[0] += 1
    prefix = work / "haproxy" / f"{_GATEWAY_RUNS[0]:02d}"
    prefix.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = free_port(), free_port()
    rest = []
    grpc = []
    for i, t in enumerate(targets, 1):
        # The gRPC servers are checked over their upstream's REST port.
        host, _, port = t.rest.rpartition(":")
        rest.append(f"    server s{i} {t.rest}")
        grpc.append(f"    server s{i} {t.grpc} proto h2 check-proto h1 addr {host} port {port}")
    config = _render(
        "haproxy.cfg.tmpl",
        workers=workers,
        balance=balance,
        rest_servers="\n".join(rest),
        grpc_servers="\n".join(grpc),
        http_port=http_port,
        grpc_port=grpc_port,
        read_timeout=f"{read_timeout_s:g}s",
        check_timeout=f"{check_timeout_s:g}s",
    )
    path = prefix / "haproxy.cfg"
    path.write_text(config)
    server = launch(
        f"haproxy {balance}",
        ["haproxy", "-db", "-f", str(path)],
        log_path=prefix / "stdout.log",
        ready=_ready(f"http://127.0.0.1:{http_port}/v2/health/ready"),
        http_port=http_port,
        grpc_port=grpc_port,
        timeout=30,
    )
    return Front(f"haproxy {balance}", server.base_url, server.grpc_target, server)


def gateway_available() -> str:
    """'' when `inferbridge gateway --config` exists in this checkout, else why not."""
    cli = _ROOT / "src" / "inferbridge" / "frontends" / "gateway" / "cli.py"
    if not cli.is_file() or "--config" not in cli.read_text():
        return "`inferbridge gateway --config` is not in this checkout"
    return ""


def gateway_counters(front: Front) -> dict[str, float]:
    """The gateway's retry, failure and ejection counters (non-zero), from its /metrics."""
    wanted = (
        "inferbridge_gateway_retries_total",
        "inferbridge_gateway_retries_refused_total",
        "inferbridge_gateway_upstream_failures_total",
        "inferbridge_gateway_upstream_ejections_total",
        "inferbridge_gateway_rejected_total",
    )
    try:
        with urllib.request.urlopen(front.rest_url + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    counters: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            if float(value):
                counters[name.removeprefix("inferbridge_gateway_")] = float(value)
    return counters


def gateway(
    work: Path,
    targets: Sequence[Target],
    *,
    balance: str = "p2c-ewma",
    deadline_s: float = 30.0,
    check_timeout_s: float = 0.0,
    label: str = "",
    extra: str = "",
    gomaxprocs: int = 0,
) -> Front:
    """`inferbridge gateway --config gateway.yaml` over the targets (REST and gRPC);
    `check_timeout_s` replaces the health checks' and discovery's default timeouts;
    `gomaxprocs` (0 = Go's default, every core) is the process's GOMAXPROCS."""
    prefix = work / "gateway"
    prefix.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = free_port(), free_port()
    lines = [
        f"listen: {{http: 127.0.0.1:{http_port}, grpc: 127.0.0.1:{grpc_port}}}",
        "upstreams:",
    ]
    for t in targets:
        lines.append(f"  - {{name: {t.name}, rest: http://{t.rest}, grpc: {t.grpc}}}")
    lines += [
        f"balancer: {balance}",
        f"timeouts: {{default: {deadline_s:g}s}}",
    ]
    if check_timeout_s:
        lines.append(f"health: {{timeout: {check_timeout_s:g}s}}")
        lines.append(f"discovery: {{timeout: {check_timeout_s:g}s}}")
    if extra:
        lines.append(extra)
    _GATEWAY_RUNS[0] += 1
    path = prefix / f"{_GATEWAY_RUNS[0]:02d}-gateway-{balance}{'-' + label if label else ''}.yaml"
    path.write_text("\n".join(lines) + "\n")
    argv = [sys.executable, "-m", "inferbridge", "gateway", "--config", str(path)]
    name = f"gateway {balance}" + (f" {label}" if label else "")
    server = launch(
        name,
        argv,
        log_path=prefix / f"{path.stem}.log",
        ready=_ready(f"http://127.0.0.1:{http_port}/v2/models/iris_onnx/ready"),
        http_port=http_port,
        grpc_port=grpc_port,
        env={"GOMAXPROCS": str(gomaxprocs)} if gomaxprocs else None,
        cwd=_ROOT,
        timeout=120,
    )
    return Front(name, server.base_url, server.grpc_target, server)
