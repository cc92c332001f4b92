"""Run the gateway benchmarks of issue #12: the inferbridge gateway beside nginx and HAProxy
(and direct to one upstream), in front of real inferbridge upstreams, healthy and under faults.

    .venv/bin/python -m benchmarks.gateway                  # every scenario (~8 min on 2 cores)
    .venv/bin/python -m benchmarks.gateway --quick          # shorter points (~4 min)
    .venv/bin/python -m benchmarks.gateway --scenarios 1,2 --fronts nginx,haproxy

Output goes to benchmarks/results/gateway/ (ignored by git); a run of every scenario also
publishes its section into benchmarks/RESULTS.md (replacing the previous one) and its plots
into benchmarks/plots/. See benchmarks/gateway/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.context import load_average, wait_quiet
from benchmarks.gateway import aggregation, chaos, healthy, publish
from benchmarks.gateway.balancers import gateway_available
from benchmarks.gateway.bench import Bench, Section
from benchmarks.gateway.fleet import Fleet, build_repository
from benchmarks.tools import _build_ibload

__all__ = ["main"]

_HERE = Path(__file__).resolve().parent
SCENARIOS: dict[str, Callable[[Bench], Section]] = {
    "1": healthy.scenario_1,
    "2": chaos.scenario_2,
    "3": chaos.scenario_3,
    "4": chaos.scenario_4,
    "5": healthy.scenario_5,
    "6": aggregation.scenario_6,
}
_KINDS = ("gateway", "nginx", "haproxy", "direct")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter points, fewer of them")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="e.g. 1,2,5")
    parser.add_argument("--fronts", default=",".join(_KINDS), help="subset of " + ",".join(_KINDS))
    parser.add_argument("--duration", type=float, help="seconds per healthy point (default 5)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="healthy scenarios (1, 5): measure every point this many times, rotating the "
        "fronts' order, and report the median (default 3; 1 with --quick)",
    )
    parser.add_argument("--fault-duration", type=float, help="seconds per fault run (default 24)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each scenario, wait up to this long for other work to use < 0.3 cores",
    )
    parser.add_argument(
        "--gateway-gomaxprocs",
        type=int,
        default=1,
        metavar="N",
        help="GOMAXPROCS of the gateway process (default 1: on 2 cores shared with its "
        "upstreams and the load generator it serves as fast for less CPU; 0 = Go's default, "
        "every core)",
    )
    parser.add_argument("--out", type=Path, default=_HERE.parent / "results" / "gateway")
    parser.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the section into benchmarks/RESULTS.md (default: on for a full run); "
        "scenarios not run keep what was last published for them",
    )
    return parser


def _ensure_debian(binary: str, package: str) -> bool:
    """nginx / haproxy from Debian, installed when missing and we may (root, apt-get)."""
    if shutil.which(binary):
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    print(f"bench: installing {package} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False, env=env)
    return shutil.which(binary) is not None


def _gateway_batches() -> bool:
    """Whether the gateway's configuration knows batch aggregation yet."""
    config = _HERE.parents[1] / "src/inferbridge/frontends/gateway/go/internal/config/config.go"
    return config.is_file() and "batch" in config.read_text().lower()


def _start_fleet(fleet: Fleet) -> None:
    """Start the upstreams two at a time (each takes a few seconds to load its models)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(u.start) for u in fleet.upstreams]:
            future.result()


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    keys = [k.strip() for k in options.scenarios.split(",") if k.strip()]
    for key in keys:
        if key not in SCENARIOS:
            raise SystemExit(f"unknown scenario {key!r}; choose from {', '.join(SCENARIOS)}")
    kinds = tuple(k.strip() for k in options.fronts.split(",") if k.strip())
    quick = bool(options.quick)
    out: Path = options.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = datetime.now(UTC)
    notes = []
    for binary in ("nginx", "haproxy"):
        if binary in kinds and not _ensure_debian(binary, binary):
            kinds = tuple(k for k in kinds if k != binary)
            notes.append(f"{binary} is not installed (apt-get install {binary}): left out.")
    ibload = _build_ibload()
    if not ibload:
        raise SystemExit("ibload could not be built (is Go installed?)")
    missing = gateway_available() if "gateway" in kinds else "not asked for (--fronts)"
    if missing:
        notes.append(f"The inferbridge gateway is left out: {missing}.")
    if not _gateway_batches():
        notes.append(
            "Not measured: scenario 6 (batch aggregation at the gateway): the gateway in "
            "this checkout has no batching."
        )
    if options.rounds is not None and options.rounds < 1:
        raise SystemExit(f"--rounds must be 1 or more, not {options.rounds}")
    if options.gateway_gomaxprocs < 0:
        raise SystemExit(
            "--gateway-gomaxprocs must be 0 (Go's default) or more, "
            f"not {options.gateway_gomaxprocs}"
        )
    # per section: a partial run republishes only its own sections
    gomaxprocs_note = ""
    if "gateway" in kinds and not missing:
        gomaxprocs_note = (
            f"The gateway ran with GOMAXPROCS={options.gateway_gomaxprocs}"
            if options.gateway_gomaxprocs
            else "The gateway ran with Go's default GOMAXPROCS (every core)"
        ) + " (`--gateway-gomaxprocs`); nginx with 2 workers, HAProxy with 2 threads."
    repository = build_repository(out)
    count = 5 if "3" in keys else 3
    fleet = Fleet(repository, out / "logs", count)
    bench = Bench(
        ibload=ibload,
        work=out,
        fleet=fleet,
        duration=options.duration or (3.0 if quick else 5.0),
        fault_duration=options.fault_duration or (22.0 if quick else 24.0),
        warmup=1.0,
        quick=quick,
        kinds=kinds,
        gateway_missing=missing if "gateway" in kinds else "",
        gateway_gomaxprocs=options.gateway_gomaxprocs,
        rounds=options.rounds or (1 if quick else 3),
    )
    print(
        f"bench: gateway scenarios {', '.join(keys)}; fronts {', '.join(kinds)}; {count} upstreams"
    )
    sections: list[Section] = []
    try:
        t0 = time.monotonic()
        _start_fleet(fleet)
        print(f"bench: {count} upstreams ready in {time.monotonic() - t0:.1f} s", flush=True)
        for key in keys:
            scenario = SCENARIOS[key]
            print(f"bench: scenario G{key}: {(scenario.__doc__ or '').strip()}", flush=True)
            if options.wait_quiet > 0:
                cores = wait_quiet(options.wait_quiet, window=2.0)
                print(f"bench: other work on the machine: {cores:.2f} cores", flush=True)
            t0 = time.monotonic()
            loadavg = load_average()[0]
            try:
                bench.settle()
                section = scenario(bench)
            except Exception as exc:  # one broken scenario must not lose the others
                traceback.print_exc()
                section = Section(f"g{key}", f"G{key}. (failed) {scenario.__name__}")
                section.error = f"{type(exc).__name__}: {exc}"
            section.seconds = time.monotonic() - t0
            if gomaxprocs_note:
                section.notes.append(gomaxprocs_note)
            section.extra["load_average"] = loadavg
            section.extra["ran"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
            sections.append(section)
            print(publish.section_text(section), flush=True)
    finally:
        fleet.stop()
    text = publish.markdown(sections, started, notes, bench)
    (out / "RESULTS-gateway.md").write_text(text)
    raw = [
        {
            "key": s.key,
            "title": s.title,
            "runs": [asdict(r) for r in s.runs],
            "targets": [asdict(t) for t in s.targets],
            "notes": s.notes,
            "error": s.error,
        }
        for s in sections
    ]
    (out / "raw.json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"bench: wrote {out / 'RESULTS-gateway.md'}")
    do_publish = options.publish
    if do_publish is None:
        do_publish = not quick and sorted(keys) == sorted(SCENARIOS)
    if do_publish:
        # Sections of earlier published runs stay for the scenarios not run this time.
        results = _HERE.parent / "RESULTS.md"
        old = results.read_text() if results.exists() else ""
        texts = publish.merge_published(sections, old)
        text = publish.markdown(sections, started, notes, bench, texts)
        publish.into_results(text, sections, _HERE.parent)
        print(f"bench: published into {_HERE.parent / 'RESULTS.md'} and {_HERE.parent / 'plots'}")
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
