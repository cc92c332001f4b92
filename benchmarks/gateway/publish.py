"""The gateway section of RESULTS.md: written under benchmarks/results/gateway/ on every run,
and, for a full run, put into benchmarks/RESULTS.md between its markers (replacing the
previous one, or appended at the end) with its plots copied to benchmarks/plots/."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.report import targets_table

__all__ = [
    "BEGIN",
    "END",
    "into_results",
    "keep_section",
    "markdown",
    "merge_published",
    "section_text",
]

BEGIN = "<!-- gateway benchmarks: begin (python -m benchmarks.gateway) -->"
END = "<!-- gateway benchmarks: end -->"


def section_text(section: Any) -> str:
    parts = [f"### {section.title}\n"]
    load = section.extra.get("load_average")
    if load is not None:
        ran = section.extra.get("ran", "")
        parts.append(
            (f"Run {ran} UTC; l" if ran else "L")
            + f"oad average before: {load:.2f} (1 min); took {section.seconds:.0f} s.\n"
        )
    if section.error:
        parts.append(f"**The scenario failed:** `{section.error}`\n")
    parts += section.tables
    if section.targets:
        parts.append(targets_table(section.targets))
    parts += [f"- {note}" for note in section.notes]
    if section.plot is not None:
        parts.append(f"\n![{section.title}](plots/{section.plot.name})\n")
    return "\n".join(parts) + "\n"


def _revision(root: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()[:100] or "unknown"


def markdown(
    sections: Sequence[Any],
    started: datetime,
    notes: list[str],
    bench: Any,
    texts: Sequence[str] | None = None,
) -> str:
    """The gateway block; `texts` (from merge_published) replaces the sections' own."""
    root = Path(__file__).resolve().parents[2]
    every = [t for s in sections for t in s.targets]
    head = [
        BEGIN,
        "## Gateway: the inferbridge gateway beside nginx and HAProxy (issue #12)\n",
        f"Published {started:%Y-%m-%d %H:%M} UTC{' (--quick)' if bench.quick else ''} on "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, inferbridge at "
        f"`{_revision(root)}`; {subprocess.getoutput('nginx -v 2>&1').strip()}, "
        f"{subprocess.getoutput('haproxy -v 2>&1').splitlines()[0][:40]}. Reproduce with "
        "`.venv/bin/python -m benchmarks.gateway` (benchmarks/gateway/README.md).\n",
        "3 upstream `inferbridge serve` processes (5 for scenario 3's Linkerd shape; iris_onnx "
        "and the sklearn iris, batching on, the Go front end) share the machine's 2 cores with "
        "the front under test and the load generator (ibload, GOMAXPROCS=1, the same for "
        "every front). Absolute numbers are noise on this shared machine; compare fronts "
        "within one table. CPU columns are cores averaged over the measured seconds "
        "(*other*: everything else on the machine meanwhile).\n",
    ]
    head += [f"- {n}" for n in notes]
    if texts is not None:
        rows = [row for text in texts for row in _target_rows(text)]
        if rows:
            table = targets_table([]).rstrip("\n") + "\n" + "\n".join(rows) + "\n"
            head.append("\n#### Targets\n\n" + table)
    elif every:
        head.append("\n#### Targets\n\n" + targets_table(every))
    body = list(texts) if texts is not None else [section_text(s) for s in sections]
    return "\n".join(head) + "\n" + "\n".join(body) + END + "\n"


def keep_section(old: str) -> str:
    """The gateway section of an existing RESULTS.md ('' when it has none)."""
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", old, re.S)
    return match.group(0) if match else ""


def _chunks(block: str) -> dict[str, str]:
    """The per-scenario texts of a published gateway block, by key (g1, g2, ...)."""
    body = block.split("\n### ", 1)
    if len(body) < 2:
        return {}
    texts = re.split(r"(?m)^(?=### G\d)", "### " + body[1].replace(END, "").rstrip() + "\n")
    out = {}
    for text in texts:
        match = re.match(r"### G(\d+)\.", text)
        if match:
            out[f"g{match.group(1)}"] = text.rstrip() + "\n"
    return out


def _target_rows(text: str) -> list[str]:
    """The rows of the targets tables in a section's text."""
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith("| target | goal | measured | verdict |"):
            inside = True
            continue
        if inside and line.startswith("|---"):
            continue
        if inside and line.startswith("| "):
            rows.append(line)
        else:
            inside = False
    return rows


def merge_published(sections: Sequence[Any], old_results: str) -> list[str]:
    """Section texts for RESULTS.md: these sections', and for the scenarios not run now,
    what was last published for them (so that one scenario can be re-run and published);
    a scenario that failed keeps its last published text."""
    texts = _chunks(keep_section(old_results))
    for s in sections:
        if s.error and s.key in texts:
            continue  # a scenario that failed this time keeps what was published for it
        texts[s.key] = section_text(s)
    return [texts[k] for k in sorted(texts, key=lambda k: int(k[1:]))]


def into_results(text: str, sections: Sequence[Any], benchmarks_dir: Path) -> None:
    results = benchmarks_dir / "RESULTS.md"
    old = results.read_text() if results.exists() else ""
    current = keep_section(old)
    new = old.replace(current, text) if current else old.rstrip("\n") + "\n\n" + text
    results.write_text(new)
    (benchmarks_dir / "plots").mkdir(exist_ok=True)
    for s in sections:
        if s.plot is not None:
            shutil.copyfile(s.plot, benchmarks_dir / "plots" / s.plot.name)
