"""python -m benchmarks.fleet_nodes [--publish] [--concurrency 8] [--duration 240]

Runs the real-nodes timeline once (benchmarks/fleet_nodes/README.md), prints its tables,
writes the PNG timeline and, with --publish, the block of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from pathlib import Path

from benchmarks.fleet_nodes.report import markdown, plot, publish
from benchmarks.fleet_nodes.scenario import Settings, run
from benchmarks.tools import _build_ibload

_HERE = Path(__file__).resolve().parents[1]
PLOT = "fleet-nodes-timeline.png"


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=Settings.concurrency)
    parser.add_argument(
        "--duration",
        type=_positive,
        default=Settings.duration_s,
        help="seconds of load: must outlast every step (default %(default)s)",
    )
    parser.add_argument(
        "--settle",
        type=_positive,
        default=Settings.settle_s,
        help="seconds of quiet load before each step",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="write the block of benchmarks/RESULTS.md and the plot there",
    )
    parser.add_argument("--out", type=Path, default=_HERE / "results" / "fleet_nodes")
    options = parser.parse_args()
    if options.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    ibload = _build_ibload()
    if not ibload:
        raise SystemExit("ibload could not be built (is Go installed?)")
    settings = Settings(
        concurrency=options.concurrency, duration_s=options.duration, settle_s=options.settle
    )
    began = datetime.datetime.now(datetime.UTC)
    outcome = run(settings, ibload)
    ended = datetime.datetime.now(datetime.UTC)
    when = f"{began:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC"
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "fleet_nodes.json").write_text(
        json.dumps(
            {
                "settings": dataclasses.asdict(settings),
                "pre_load": [dataclasses.asdict(e) for e in outcome.pre_load],
                "events": [dataclasses.asdict(e) for e in outcome.events],
                "timeline": outcome.run.timeline if outcome.run else [],
            },
            indent=1,
        )
    )
    plot_dir = _HERE / "plots" if options.publish else options.out
    drawn = plot(outcome, plot_dir / PLOT)
    block = markdown(outcome, when, PLOT)
    print(block)
    if drawn is not None:
        print(f"plot: {drawn}")
    if options.publish:
        publish(_HERE / "RESULTS.md", block)
        print("published into benchmarks/RESULTS.md")
    return 0 if all(not e.note.startswith("failed") for e in outcome.events) else 1


if __name__ == "__main__":
    raise SystemExit(main())
