"""The real-nodes run as text (a timeline and a table), a PNG timeline and RESULTS.md's
block."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.fleet_nodes.scenario import Outcome

__all__ = ["markdown", "plot", "publish"]

BEGIN = "<!-- fleet nodes benchmarks: begin -->"
END = "<!-- fleet nodes benchmarks: end -->"
#: The block goes right after the fleet block when it is not in RESULTS.md yet.
AFTER = "<!-- fleet benchmarks: end -->"
#: A part of the block written by hand from benchmarks/fleet_agent_rss.py (the agent's
#: memory, change by change): kept when this benchmark rewrites the block.
MEMORY = re.compile(
    r"<!-- fleet agent memory: begin -->.*?<!-- fleet agent memory: end -->\n?", re.S
)


def _seconds(value: float) -> str:
    return f"{value:.1f}"


def markdown(outcome: Outcome, when: str, plot_name: str) -> str:
    s = outcome.settings
    lines = [
        BEGIN,
        "## Fleet: real nodes (three agents, three servers, MinIO, the control plane, the gateway)",
        "",
        f"Measured {when} on this 2-core machine, shared with other work. Reproduce with",
        "`.venv/bin/python -m benchmarks.fleet_nodes` (benchmarks/fleet_nodes/README.md).",
        "",
        "Three nodes (an `inferbridge serve` in explicit mode and its agent each, 1 s",
        f"heartbeats, NotReady after {s.missed_heartbeats} missed), MinIO, `fleet serve` on"
        " SQLite, and `inferbridge gateway --config` over the three servers (discovery and",
        "health checks every second), all on loopback. iris_onnx is deployed with"
        f" {s.replicas} replicas; ibload sends REST infer requests through the gateway"
        f" (closed loop, {s.concurrency} clients) for the whole timeline. Times are seconds"
        " from the step's action; failed requests are those whose one-second slice of the"
        " load overlaps the step.",
        "",
        "| step | what was done | figure | seconds |",
        "|---|---|---|--:|",
    ]
    for event in outcome.pre_load:
        for i, (name, value) in enumerate(event.figures.items()):
            lines.append(
                f"| {event.name if i == 0 else ''} | {event.action if i == 0 else ''} "
                f"| {name} | {_seconds(value)} |"
            )
    for event in outcome.events:
        figures = list(event.figures.items()) or [("(no figure)", float("nan"))]
        for i, (name, value) in enumerate(figures):
            action = event.action + (f" ({event.note})" if event.note else "")
            lines.append(
                f"| {event.name if i == 0 else ''} | {action if i == 0 else ''} "
                f"| {name} | {_seconds(value)} |"
            )
    lines += [
        "",
        "| step | on the load's clock, s | requests through the gateway | failed | failed %"
        " | seconds with failures |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for event in outcome.events:
        requests, failed = event.requests or 0, event.failed or 0
        share = 100.0 * failed / requests if requests else 0.0
        lines.append(
            f"| {event.name} | {event.start_s:.0f}-{event.end_s:.0f} | {requests:,} "
            f"| {failed:,} | {share:.2f} | {event.failing_s or 0} |"
        )
    run = outcome.run
    if run is not None:
        lines += [
            "",
            f"Whole run: {run.requests:,} requests, {run.failed:,} failed"
            f" ({run.errors_text()}), {run.rps:,.0f} requests/s on average.",
        ]
    lines += [
        "",
        "What the figures mean:",
        "- *ready* figures are what the control plane reports from the agents' heartbeats:"
        " the assignment came over the long poll, the artefact was downloaded from MinIO,"
        " verified, unpacked, the server loaded it, and a heartbeat (every second) said so.",
        "- *re-placed* is detection (missed heartbeats) plus placement plus the other node's"
        " time to ready; *NotReady* alone is the detection.",
        "- *failed* counts what a client of the gateway saw: the gateway retries a refused"
        " connection on another upstream, so a dead server costs latency, not errors, while"
        " one replica is left; a dead agent or an absent control plane leaves the servers"
        " serving (offline autonomy); with everything restarted, every request fails (503"
        " while no upstream answers, 404 while the servers are up but have not loaded the"
        " model) until a server is back with the model.",
        "- The control plane's and the servers' start-up times are Python processes starting"
        " on a loaded 2-core machine; they dominate the restart figures.",
        "",
        f"![Fleet real nodes: the gateway's requests/s and failures](plots/{plot_name})",
    ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def plot(outcome: Outcome, path: Path) -> Path | None:
    """Requests/s and failures/s through the gateway, second by second, steps shaded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    run = outcome.run
    if run is None or not run.timeline:
        return None
    end = outcome.steps_end_s or max(float(s["start_s"]) for s in run.timeline) + 1
    kept = [s for s in run.timeline if float(s["start_s"]) < end]
    t = [float(s["start_s"]) for s in kept]
    ok = [int(s["ok"]) for s in kept]
    failed = [int(s["requests"]) - int(s["ok"]) for s in kept]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(12, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    top.plot(t, ok, color="tab:blue", drawstyle="steps-post", label="succeeded requests/s")
    bottom.bar(t, failed, width=1.0, align="edge", color="tab:red", label="failed requests/s")
    colours = ["#e0ecf8", "#fde9d9", "#e5f5e0", "#f2e5f5", "#fff5cc"]
    peak = max([*ok, 1]) * 1.3
    for i, event in enumerate(outcome.events):
        for axis in (top, bottom):
            axis.axvspan(event.start_s, event.end_s, color=colours[i % len(colours)], zorder=0)
        # Staggered: short steps sit side by side.
        top.text(event.start_s, peak * (0.97 - 0.08 * (i % 2)), event.name, fontsize=8, va="top")
    top.set_ylim(0, peak)
    top.set_ylabel("succeeded / s")
    top.set_title(
        "Three real nodes behind the gateway: a rollout, a dead server, a dead agent, "
        "the control plane away, everything restarted"
    )
    bottom.set_ylabel("failed / s")
    bottom.set_xlabel("seconds (the load's clock; push and deploy ran before it)")
    bottom.set_xlim(0, end)
    top.legend(loc="lower right", fontsize=8)
    bottom.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def publish(results: Path, block: str) -> None:
    """Replace this benchmark's block in RESULTS.md, or put it right after the fleet block
    (at the end when that block is missing)."""
    text = results.read_text() if results.exists() else ""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    if (old := pattern.search(text)) is not None:
        if (memory := MEMORY.search(old.group(0))) is not None:
            block = block.replace(END, "\n" + memory.group(0) + END)
        text = pattern.sub(lambda _: block, text, count=1)
    elif AFTER in text:
        head, _, tail = text.partition(AFTER)
        rest = tail.lstrip("\n")
        text = head + AFTER + "\n\n" + block + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    results.write_text(text)
