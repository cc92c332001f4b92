"""Run the benchmark scenarios of issue #6 and write RESULTS.md with tables and plots.

    .venv/bin/python -m benchmarks.run              # all seven scenarios (~16 min on 2 cores)
    .venv/bin/python -m benchmarks.run --quick      # a short smoke version (~3 min)
    .venv/bin/python -m benchmarks.run --scenarios 1,5

Everything goes to benchmarks/results/ (ignored by git): RESULTS.md, raw.json, plots/, the
servers' logs. A full run of all scenarios also publishes RESULTS.md and the plots to
benchmarks/RESULTS.md and benchmarks/plots/ (committed), keeping the gateway section that
`python -m benchmarks.gateway` (issue #12's gateway benchmarks, a harness of its own) put
there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import report
from benchmarks.context import (
    NOISY_CPU,
    Context,
    NoiseRetry,
    ScenarioResult,
    load_average,
    wait_quiet,
)
from benchmarks.repos import build_repositories
from benchmarks.scenarios import SCENARIOS
from benchmarks.tools import locate_tools

__all__ = ["main"]

_HERE = Path(__file__).resolve().parent
_ALIASES = {
    "rest": "1",
    "grpc": "2",
    "image": "3",
    "ceilings": "4",
    "peers": "5",
    "overload": "6",
    "metrics": "7",
    "reload": "8",
    "shm": "9",
    "rollout": "12",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short points, fewer of them")
    parser.add_argument(
        "--scenarios",
        default="1,2,3,4,5,6,7,8,9,12",
        help="comma-separated numbers or names (rest, grpc, image, ceilings, peers, overload, "
        "metrics, reload, shm, rollout)",
    )
    parser.add_argument("--duration", type=float, help="seconds per measured point")
    parser.add_argument("--warmup", type=float, help="seconds of discarded load before each")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each scenario, wait up to this long for other work to use < 0.3 cores",
    )
    parser.add_argument(
        "--retry-budget",
        type=float,
        metavar="SECONDS",
        help="time allowed for re-measuring points that other work disturbed "
        "(default 180, shared equally by the scenarios; 20 with --quick; 0 turns it off)",
    )
    parser.add_argument("--out", type=Path, default=_HERE / "results", help="output directory")
    parser.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="copy RESULTS.md and plots to benchmarks/ (default: on for a full run of all)",
    )
    return parser


#: A section another harness publishes into RESULTS.md between its own markers (placement,
#: gateway, fleet, isolation): kept as it is when this runner rewrites the file.
_KEPT = re.compile(
    r"<!-- (\w+(?: \w+)*) benchmarks: (?:begin|start)\b.*?<!-- \1 benchmarks: end -->\n?", re.S
)


def _kept_sections(old: str) -> str:
    return "\n".join(match.group(0) for match in _KEPT.finditer(old))


def _selected(text: str) -> list[str]:
    keys = []
    for item in (x.strip().lower() for x in text.split(",") if x.strip()):
        key = _ALIASES.get(item, item)
        if key not in SCENARIOS:
            raise SystemExit(f"unknown scenario {item!r}; choose from 1-7 or {', '.join(_ALIASES)}")
        keys.append(key)
    return keys


def _git_revision() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(_HERE.parent), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip()[:100] or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _noise_summary(results: list[ScenarioResult]) -> str:
    others = sorted(p.other_cpu for r in results for p in r.points)
    if not others:
        return ""
    median = others[len(others) // 2]
    noisy = sum(1 for x in others if x > NOISY_CPU)
    return (
        f"**This run:** other work took a median of {median:.2f} of the 2 cores during the "
        f"measured points; {noisy} of {len(others)} points are marked noisy (> {NOISY_CPU} "
        "cores). Where that is high, absolute numbers are well below what a quiet machine "
        "gives, and the p99 columns mostly measure the scheduler.\n"
    )


def _header(ctx: Context, started: datetime, versions: dict[str, str], quick: bool) -> str:
    return (
        "# inferbridge benchmark results\n\n"
        f"Run {started:%Y-%m-%d %H:%M} UTC"
        f"{' (--quick: short points, NOT for comparison)' if quick else ''}"
        f" on {_cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"inferbridge at `{_git_revision()}`. Reproduce with `.venv/bin/python -m "
        "benchmarks.run` (see docs/benchmarks.md).\n\n"
        f"Clients: {versions['wrk']} (1 thread, Lua script `benchmarks/lua/oip.lua`); ghz "
        f"{versions['ghz']}; vegeta {versions['vegeta']}. Each point: {ctx.warmup:g} s of "
        f"discarded warm-up load, then {ctx.duration:g} s measured. CPU columns are cores "
        "(1.00 = one core busy) averaged over the measured seconds: the client from its "
        "rusage, the server from /proc over its whole process group; *other* is everything "
        "else the machine ran meanwhile. The servers compared in a scenario run together "
        "(idle, one costs about 0.001 cores) and take turns point by point, so that drift in "
        "the machine's load hits them alike.\n\n"
        "**Noise.** Client and server share the same 2 cores, and other work on the machine "
        "(the load average is printed per scenario) moves absolute numbers by 10-30 % between "
        "runs. Only the ratios measured side by side in one run, with the same client and "
        "concurrency, are meaningful; ratios near a threshold (≥ 1.0x) are within the noise.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    keys = _selected(options.scenarios)
    quick = bool(options.quick)
    duration = options.duration or (2.0 if quick else 6.0)
    warmup = options.warmup if options.warmup is not None else (0.0 if quick else 1.0)
    if options.retry_budget is None:
        options.retry_budget = 20.0 if quick else 180.0
    publish = options.publish
    if publish is None:
        publish = not quick and sorted(keys) == sorted(SCENARIOS)
    out: Path = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    print(f"bench: scenarios {', '.join(keys)}; {duration:g} s per point; output {out}")
    tools = locate_tools()
    versions = tools.versions()
    print("bench: building the model repositories", flush=True)
    repos = build_repositories(out)
    ctx = Context(
        tools=tools,
        repos=repos,
        work=out,
        duration=duration,
        warmup=warmup,
        concurrencies=[1, 64] if quick else [1, 16, 64],
        quick=quick,
        retry=NoiseRetry(options.retry_budget) if options.retry_budget > 0 else None,
    )
    results: list[ScenarioResult] = []
    for key in keys:
        scenario = SCENARIOS[key]
        print(f"bench: scenario {key}: {(scenario.__doc__ or '').strip()}", flush=True)
        if ctx.retry is not None:
            # Each scenario gets its share, so that the first ones cannot spend it all.
            ctx.retry.budget_s = options.retry_budget / len(keys)
        if options.wait_quiet > 0:
            cores = wait_quiet(options.wait_quiet, window=2.0)
            print(f"bench: other work on the machine: {cores:.2f} cores", flush=True)
        t0 = time.monotonic()
        loadavg = load_average()
        try:
            result = scenario(ctx)
        except Exception as exc:  # one broken scenario must not lose the others
            traceback.print_exc()
            result = ScenarioResult(f"s{key}", f"{key}. (failed) {scenario.__name__}")
            result.error = f"{type(exc).__name__}: {exc}"
        result.load_average = loadavg
        result.seconds = time.monotonic() - t0
        if result.plot is None:  # a scenario may draw its own (12: a timeline)
            result.plot = report.plot(result, out / "plots" / f"scenario{key}.png")
        results.append(result)
        print()
        print(f"== {result.title}")
        if result.points:
            print(report.points_table(result.points))
        if result.ceilings:
            print(report.ceilings_table(result.ceilings))
        if result.targets:
            print(report.targets_table(result.targets))
        for note in result.notes:
            print(f"- {note}")
        print(flush=True)
    header = _header(ctx, started, versions, quick) + "\n" + _noise_summary(results)
    links = {r.key: f"plots/{r.plot.name}" for r in results if r.plot is not None}
    text = report.markdown(results, header, links)
    (out / "RESULTS.md").write_text(text)
    raw = {
        "started": started.isoformat(),
        "duration_s": duration,
        "warmup_s": warmup,
        "tools": versions,
        "scenarios": [
            {
                "key": r.key,
                "title": r.title,
                "points": [p.as_dict() for p in r.points],
                "ceilings": [c.as_dict() for c in r.ceilings],
                "targets": [asdict(t) for t in r.targets],
                "notes": r.notes,
                "error": r.error,
            }
            for r in results
        ],
    }
    (out / "raw.json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"bench: wrote {out / 'RESULTS.md'}")
    if publish:
        (_HERE / "plots").mkdir(exist_ok=True)
        for r in results:
            if r.plot is not None:
                shutil.copyfile(r.plot, _HERE / "plots" / r.plot.name)
        old = _HERE / "RESULTS.md"
        kept = _kept_sections(old.read_text()) if old.exists() else ""
        (_HERE / "RESULTS.md").write_text(text + ("\n" + kept if kept else ""))
        print(f"bench: published {_HERE / 'RESULTS.md'} and {_HERE / 'plots'}")
    print("\n" + report.targets_table(t for r in results for t in r.targets))
    if ctx.retry is not None:
        print(
            f"bench: re-measured {ctx.retry.retried} noisy points "
            f"({ctx.retry.improved} came out quieter)"
        )
    failed = [r for r in results if r.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
