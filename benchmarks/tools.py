"""Locate, and install when missing, the load generators: wrk (Debian), ghz and vegeta (Go);
build ibload, the project's own (clients/go/cmd/ibload), from this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GHZ_VERSION", "VEGETA_VERSION", "Tools", "locate_tools"]

_ROOT = Path(__file__).resolve().parent.parent
GHZ_VERSION = "v0.121.0"
VEGETA_VERSION = "v12.13.0"

_GO_TOOLS = {
    "ghz": f"github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}",
    "vegeta": f"github.com/tsenart/vegeta/v12@{VEGETA_VERSION}",
}


@dataclass(frozen=True)
class Tools:
    wrk: str
    ghz: str
    vegeta: str
    ibload: str = ""  # "" when Go is missing: the scenarios that need it fall back

    def versions(self) -> dict[str, str]:
        wrk = _first_line([self.wrk, "-v"]).split(" Copyright")[0]
        # `go install` binaries carry no version stamp: report the pinned ones.
        return {
            "wrk": wrk,
            "ghz": GHZ_VERSION,
            "vegeta": VEGETA_VERSION,
            "ibload": "built from this checkout" if self.ibload else "not built",
        }


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _go() -> str | None:
    return shutil.which("go") or (
        "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
    )


def _gobin() -> Path:
    gobin = os.environ.get("GOBIN")
    if gobin:
        return Path(gobin)
    gopath = os.environ.get("GOPATH") or os.path.expanduser("~/go")
    return Path(gopath.split(os.pathsep)[0]) / "bin"


def _locate_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("wrk is missing: install Debian's wrk package (apt-get install wrk)")
    print("bench: installing wrk with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get installed wrk but it is not on PATH")
    return found


def _locate_go_tool(name: str) -> str:
    candidate = _gobin() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    go = _go()
    if go is None:
        raise RuntimeError(f"{name} is missing and Go is not installed to `go install` it")
    print(f"bench: go install {_GO_TOOLS[name]}", flush=True)
    subprocess.run([go, "install", _GO_TOOLS[name]], check=True)
    if not candidate.is_file():
        raise RuntimeError(f"go install {_GO_TOOLS[name]} did not produce {candidate}")
    return str(candidate)


def _build_ibload() -> str:
    """`go build` clients/go/cmd/ibload into a temporary directory ("" without Go)."""
    go = _go()
    if go is None:
        print("bench: Go is missing: ibload not built", flush=True)
        return ""
    out = Path(tempfile.gettempdir()) / f"inferbridge-bench-{os.getuid()}" / "ibload"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [go, "build", "-o", str(out), "./cmd/ibload"],
        cwd=_ROOT / "clients" / "go",
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"bench: go build of ibload failed: {done.stderr[-500:]}", flush=True)
        return ""
    return str(out)


def locate_tools() -> Tools:
    """Find wrk, ghz and vegeta, installing whichever is missing; build ibload."""
    return Tools(
        wrk=_locate_wrk(),
        ghz=_locate_go_tool("ghz"),
        vegeta=_locate_go_tool("vegeta"),
        ibload=_build_ibload(),
    )
