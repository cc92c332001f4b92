"""`inferbridge gateway --config`: a bad file is refused with the file, line, field and
what was expected; --check validates; the upstreams file is re-read when it changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import upstream
from tests.gateway.procs import infer_body, start_gateway, wait_for
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.slow


def _gateway(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferbridge", "gateway", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "upstreams: [{rest: 'http://127.0.0.1:1'}]\nbreaker:\n  failure_rate: high\n",
            ':3: breaker.failure_rate: expected a number from 0 to 1, got "high"',
        ),
        ("upstreams: [{name: a}]\n", ":1: upstreams[0]: expected rest and/or grpc"),
        ("upstream: []\n", ":1: upstream: unknown field (expected one of admission,"),
        ("listen: {http: ':0'}\n", ": upstreams: expected a list of upstreams, upstreams_file or"),
        (
            "upstreams: [{rest: 'http://127.0.0.1:1'}]\nlisten: {tls: {}}\n",
            ":2: listen.tls: expected both cert and key",
        ),
        (
            "upstreams: [{rest: 'http://127.0.0.1:1'}]\nauth: {keys: missing.yaml}\n",
            ":2: auth.keys: stat ",
        ),
        (
            "upstreams: [{rest: 'https://127.0.0.1:1'}]\n",
            ": upstreams[0].tls: expected a tls block",
        ),
    ],
)
def test_a_config_error_refuses_to_start(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(text)
    result = _gateway(config)
    assert result.returncode == 2
    assert f"{config}{expected}" in result.stderr, result.stderr
    assert "listening" not in result.stdout


def test_check_loads_the_security_files(tmp_path: Path) -> None:
    """--check reads the keys file and the TLS pair, naming the entry that is wrong."""
    (tmp_path / "keys.yaml").write_text("keys:\n  - {name: a, scopes: [read]}\n")
    (tmp_path / "c.pem").write_text("not a certificate\n")
    (tmp_path / "k.pem").write_text("not a key\n")
    config = tmp_path / "gw.yaml"
    config.write_text("upstreams: [{grpc: '127.0.0.1:1'}]\nauth: {keys: keys.yaml}\n")
    result = _gateway(config, "--check")
    assert result.returncode == 2
    assert f"{config}: auth: keys file {tmp_path / 'keys.yaml'}: keys[0]" in result.stderr
    config.write_text(
        "upstreams: [{grpc: '127.0.0.1:1'}]\nlisten: {tls: {cert: c.pem, key: k.pem}}\n"
    )
    result = _gateway(config, "--check")
    assert result.returncode == 2
    assert f"{config}:2: listen.tls: TLS certificate {tmp_path / 'c.pem'}" in result.stderr


def test_check_validates(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("upstreams: [{name: a, grpc: '127.0.0.1:1'}]\n")
    result = _gateway(config, "--check")
    assert result.returncode == 0 and result.stdout.strip() == f"{config}: ok", result


def test_the_upstreams_file_is_reread(
    server_a: ServerProcess, server_b: ServerProcess, tmp_path: Path
) -> None:
    ups = tmp_path / "upstreams.yaml"
    ups.write_text(f"- {upstream('a', server_a)}\n".replace("'", '"'))
    gw = start_gateway(
        "listen: {http: '127.0.0.1:0', grpc: '127.0.0.1:0'}\n"
        "upstreams_file: upstreams.yaml\ndiscovery: {interval: 200ms}\n",
        tmp_path,
    )
    try:
        url = f"{gw.base}/v2/models/slow/infer"
        assert httpx.post(url, json=infer_body(), timeout=30).status_code == 404
        ups.write_text(
            f"upstreams:\n  - {upstream('a', server_a)}\n  - {upstream('b', server_b)}\n".replace(
                "'", '"'
            )
        )
        wait_for(lambda: set(gw.upstreams()) == {"a", "b"}, what="the new upstream")
        wait_for(lambda: "slow" in gw.upstreams()["b"]["models"], what="b discovered")
        # A file that does not parse leaves the set as it was.
        ups.write_text("- {name: broken}\n")
        wait_for(
            lambda: any("upstreams file not applied" in line for line in gw.lines),
            what="the bad file logged",
        )
        assert set(gw.upstreams()) == {"a", "b"}
    finally:
        gw.stop()
