"""The control plane's garbage-collector policy (fleet.gcpolicy): parsed from the command
line with clear errors, and applied to the process (thresholds, freezes, the controlled full
collection that still collects cycles among frozen objects)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferbridge.fleet.cli import register
from inferbridge.fleet.gcpolicy import GcController, GcPolicy, GcPolicyError
from tests.fleet.procs import start_control_plane


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _serve_options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["fleet", "serve", *argv])


def test_the_command_line_defaults_and_values() -> None:
    options = _serve_options()
    default = GcPolicy.parse(options.gc, options.gc_thresholds, options.gc_full_every)
    assert default == GcPolicy()
    options = _serve_options(
        "--gc", "python", "--gc-thresholds", "20000, 10,100", "--gc-full-every", "0"
    )
    policy = GcPolicy.parse(options.gc, options.gc_thresholds, options.gc_full_every)
    assert policy == GcPolicy(mode="python", thresholds=(20000, 10, 100), full_every_s=0)
    assert GcPolicy.parse("freeze", "python", "600").thresholds is None


@pytest.mark.parametrize(
    ("freeze", "thresholds", "every", "expected"),
    [
        ("sometimes", "", "600", r"--gc 'sometimes': expected one of python, freeze, "),
        ("scheduled", "", "0", r"--gc scheduled --gc-full-every 0: scheduled needs seconds"),
        ("freeze", "700,10", "600", r"--gc-thresholds '700,10': expected three integers"),
        ("freeze", "a,b,c", "600", r"--gc-thresholds 'a,b,c': expected three integers"),
        ("freeze", "700,-1,10", "600", r"--gc-thresholds \(700, -1, 10\): expected three"),
        ("freeze", "", "soon", r"--gc-full-every 'soon': expected seconds >= 0"),
        ("freeze", "", "-5", r"--gc-full-every -5.0: expected seconds >= 0"),
        ("freeze", "", "nan", r"--gc-full-every nan: expected seconds >= 0"),
    ],
)
def test_bad_settings_are_refused_by_name(
    freeze: str, thresholds: str, every: str, expected: str
) -> None:
    with pytest.raises(GcPolicyError, match=expected):
        GcPolicy.parse(freeze, thresholds, every)


def test_fleet_serve_refuses_a_bad_setting_before_starting(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "inferbridge", "fleet", "serve", "--port", "0"),
            *("--store", f"sqlite:{tmp_path / 'fleet.db'}", "--gc-thresholds", "1,2"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "--gc-thresholds '1,2': expected three integers G0,G1,G2" in result.stderr
    assert not (tmp_path / "fleet.db").exists()


def test_thresholds_are_set_and_restored() -> None:
    before = gc.get_threshold()
    collector = GcController(GcPolicy(mode="python", thresholds=(12345, 6, 7)))
    collector.apply()
    assert gc.get_threshold() == (12345, 6, 7)
    collector.started()
    assert gc.get_freeze_count() == 0  # never: nothing frozen
    collector.close()
    assert gc.get_threshold() == before


async def test_start_freezes_what_is_alive_once() -> None:
    collector = GcController(GcPolicy(mode="freeze"))
    collector.apply()
    collector.started()
    assert gc.get_freeze_count() > 0 and collector.freezes == 1
    gc.collect()
    await asyncio.sleep(0)
    assert collector.freezes == 1  # no freeze after a full collection
    collector.close()


async def test_each_full_freezes_after_every_full_collection() -> None:
    collector = GcController(GcPolicy(mode="freeze-each-full", full_every_s=0))
    collector.started()
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    gc.collect(1)  # not a full collection: nothing scheduled
    await asyncio.sleep(0)
    assert gc.get_freeze_count() == 0
    gc.collect()
    await asyncio.sleep(0)  # the freeze runs on the loop, after the collection
    assert gc.get_freeze_count() > 0 and collector.freezes == 2
    collector.close()
    gc.unfreeze()
    gc.collect()
    await asyncio.sleep(0)
    assert gc.get_freeze_count() == 0  # closed: the callback is gone


class _Cyclic:
    def __init__(self) -> None:
        self.me = self


async def test_the_controlled_collection_collects_cycles_among_frozen_objects() -> None:
    collector = GcController(GcPolicy(mode="freeze-each-full", full_every_s=0.05))
    collector.apply()
    cycles = [_Cyclic() for _ in range(100)]
    collector.started()  # the cycles are alive: frozen
    del cycles
    gc.collect()
    assert sum(isinstance(o, _Cyclic) for o in gc.get_objects()) == 0  # not seen...
    task = asyncio.create_task(collector.run())
    while not collector.controlled:
        await asyncio.sleep(0.01)
    task.cancel()
    collector.close()
    held, found = collector.controlled[0]
    assert found >= 100 and held > 0  # ...until the controlled collection
    summary = collector.summary()
    assert summary["policy"] == "freeze-each-full" and summary["controlled"][0]["found"] == found
    assert summary["frozen_objects"] == gc.get_freeze_count() > 0
    full = summary["full"]  # every full collection timed: start-up's, ours, the callback's
    assert full["count"] >= 3 and full["cpu_ms_p50_max"][1] <= full["wall_ms_p50_max"][1] + 1
    assert gc.callbacks.count(collector._time_full) == 0  # closed


def test_fleet_serve_applies_the_policy_and_reports_it(tmp_path: Path) -> None:
    plane = start_control_plane(
        tmp_path / "fleet.db",
        extra=["--gc", "freeze-each-full", "--gc-thresholds", "5000,11,12"],
    )
    plane.get("/v1/fleet/health")
    plane.stop()
    line = next(x for x in plane.proc.lines if x.startswith("inferbridge: fleet gc: "))
    summary = json.loads(line.removeprefix("inferbridge: fleet gc: "))
    assert summary["policy"] == "freeze-each-full" and summary["thresholds"] == [5000, 11, 12]
    assert summary["freezes"] >= 1 and summary["frozen_objects"] > 0


async def test_scheduled_turns_automatic_full_collections_off_and_runs_its_own() -> None:
    before = gc.get_threshold()
    collector = GcController(GcPolicy(mode="scheduled", full_every_s=0.05))
    collector.apply()
    assert gc.get_threshold() == (before[0], before[1], 2**31 - 1)
    cycles = [_Cyclic() for _ in range(50)]
    collector.started()
    assert gc.get_freeze_count() > 0
    del cycles
    task = asyncio.create_task(collector.run())
    while not collector.controlled:
        await asyncio.sleep(0.01)
    task.cancel()
    collector.close()
    assert collector.controlled[0][1] >= 50  # the frozen cycles are collected on schedule
    assert gc.get_threshold() == before


def test_the_default_is_scheduled_every_five_minutes() -> None:
    options = _serve_options()
    assert (options.gc, options.gc_full_every) == ("scheduled", "300")
