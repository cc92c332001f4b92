"""The gateway benchmark's rounds and front-cost table (benchmarks/gateway): the median
round is the one reported, and ratios are against nginx at the same concurrency."""

from __future__ import annotations

from benchmarks.gateway import tables
from benchmarks.gateway.healthy import median_run
from benchmarks.gateway.load import Run


def _run(front: str, rps: float, front_cpu: float = 0.0, concurrency: int = 16) -> Run:
    return Run(
        front=front,
        protocol="REST",
        concurrency=concurrency,
        rps=rps,
        p50_ms=1.0,
        p99_ms=2.0,
        requests=int(rps * 5),
        ok=int(rps * 5),
        errors={},
        client_cpu=0.1,
        front_cpu=front_cpu,
        upstreams_cpu=1.0,
        other_cpu=0.0,
        duration_s=5.0,
    )


def test_the_median_round_is_reported_with_every_round() -> None:
    runs = [
        _run("gateway", 300.0, 0.03),
        _run("gateway", 100.0, 0.01),
        _run("gateway", 200.0, 0.04),
    ]
    median = median_run(runs)
    assert median.rps == 200.0
    assert median.extra["rounds_rps"] == [300.0, 100.0, 200.0]  # in the order measured
    assert [round(us) for us in median.extra["rounds_front_us"]] == [100, 100, 200]
    # An even count takes the lower of the middle two; one round is itself.
    assert median_run([_run("a", 4.0), _run("a", 1.0), _run("a", 3.0), _run("a", 2.0)]).rps == 2.0
    assert median_run([_run("a", 7.0)]).extra["rounds_rps"] == [7.0]


def test_front_cost_rows_are_against_nginx_at_the_same_concurrency() -> None:
    runs = [
        median_run([_run("nginx", 20_000.0, 0.84)]),  # 42 µs a request
        median_run([_run("gateway", 10_000.0, 0.89)]),  # 89 µs
        median_run([_run("gateway", 8_000.0, 0.96, concurrency=64)]),  # no nginx at 64
    ]
    table = tables.front_cost(runs)
    rows = {
        tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line
        for line in table.splitlines()[2:]
    }
    gateway = [c.strip() for c in rows[("gateway", "16")].strip("|").split("|")]
    assert gateway[2:6] == ["10,000", "0.50x", "89", "2.12x"]
    at_64 = [c.strip() for c in rows[("gateway", "64")].strip("|").split("|")]
    assert at_64[3] == "-" and at_64[5] == "-"
    nginx = [c.strip() for c in rows[("nginx", "16")].strip("|").split("|")]
    assert nginx[3] == "1.00x" and nginx[5] == "1.00x"
