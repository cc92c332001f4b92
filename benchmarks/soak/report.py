"""The soak's figures: growth per process after warm-up, every answer class, the reloads;
printed, written as markdown (the RESULTS.md block between the soak markers) and plotted."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.soak.load import RampPoint, StreamResult
from benchmarks.soak.probes import Prober
from benchmarks.soak.reloads import Reload
from benchmarks.soak.sample import GO, ROLES, WORKER, Sample

__all__ = [
    "BEGIN",
    "END",
    "Growth",
    "growth",
    "into_results",
    "log_problems",
    "plot_answers",
    "plot_processes",
]

BEGIN = "<!-- soak benchmarks: begin (python -m benchmarks.soak) -->"
END = "<!-- soak benchmarks: end -->"
_MIB = 1024 * 1024
#: What reads as "no growth" between the first and the last sample after warm-up (and for
#: the least-squares slope times the window): RSS within max(4 MiB, 2 %), fds within 4
#: (client connections open and close between samples), threads within 2.
_METRICS = (("RSS MiB", "rss_bytes", _MIB), ("open fds", "fds", 1), ("threads", "threads", 1))
#: The Go front end holds one fd per client connection, and ibload's open loop keeps every
#: connection it ever needed (a pool that grows when latency spikes): what it holds beside
#: them (its fds less the sockets that are neither listeners nor Unix sockets) is what a
#: leak would move.
_GO_OWN_FDS = "fds less client connections"


def _value(sample: Sample, role: str, metric: str) -> float:
    if metric == _GO_OWN_FDS:
        return sample.total(GO, "fds") - sample.total(GO, "client_sockets")
    _, field_name, scale = next(m for m in _METRICS if m[0] == metric)
    return sample.total(role, field_name) / scale


def _tolerance(metric: str, first: float) -> float:
    if metric == "RSS MiB":
        return max(4.0, 0.02 * first)
    return 2.0 if metric == "threads" else 4.0


@dataclass(frozen=True)
class Growth:
    role: str
    metric: str
    processes: int  # most processes of the role seen at once
    start: float  # the first sample of the run
    first: float  # the first sample after warm-up
    last: float  # the last sample under load
    peak: float
    slope_per_min: float  # least squares over the samples after warm-up
    after: float | None  # once the load stopped
    window_min: float
    usual: int = 1  # the number of isolation workers in the samples the growth is over
    left_out: int = 0  # samples after warm-up with another number (a reload's overlap)

    @property
    def delta(self) -> float:
        return self.last - self.first

    @property
    def judged(self) -> bool:
        """False for the Go front end's raw fds: they follow the client connections."""
        return not (self.role == GO and self.metric == "open fds")

    @property
    def flat(self) -> bool:
        tolerance = _tolerance(self.metric, self.first)
        return (
            abs(self.delta) <= tolerance and abs(self.slope_per_min * self.window_min) <= tolerance
        )


def growth(samples: Sequence[Sample], warmup_s: float) -> list[Growth]:
    load = [s for s in samples if s.phase == "load"]
    steady = [s for s in load if s.t >= warmup_s] or load[-2:]
    after = next((s for s in samples if s.phase == "after"), None)
    out = []
    for role in ROLES:
        if not any(s.count(role) for s in samples):
            continue
        metrics = [m[0] for m in _METRICS] + ([_GO_OWN_FDS] if role == GO else [])
        # A reload starts the isolated model's new worker beside the old one, which exits
        # once drained: a sample in that overlap sees two workers (and the Python process
        # the fds of both channels), which is not growth.
        usual = Counter(s.count(WORKER) for s in steady).most_common(1)[0][0]
        same = [s for s in steady if s.count(WORKER) == usual]
        for metric in metrics:
            values = np.array([_value(s, role, metric) for s in same])
            minutes = np.array([s.t / 60 for s in same])
            slope = float(np.polyfit(minutes, values, 1)[0]) if len(values) >= 2 else 0.0
            out.append(
                Growth(
                    role=role,
                    metric=metric,
                    processes=max(s.count(role) for s in samples),
                    start=_value(load[0], role, metric) if load else 0.0,
                    first=float(values[0]),
                    last=float(values[-1]),
                    peak=float(max(_value(s, role, metric) for s in load)),
                    slope_per_min=slope,
                    after=_value(after, role, metric) if after else None,
                    window_min=float(minutes[-1] - minutes[0]) if len(minutes) else 0.0,
                    usual=usual,
                    left_out=len(steady) - len(same),
                )
            )
    return out


def growth_table(rows: Sequence[Growth]) -> str:
    head = (
        "| process | metric | at start | after warm-up | last | peak | last - first "
        "| slope /min | after the load | ≈ 0? |\n|---|---|--:|--:|--:|--:|--:|--:|--:|---|\n"
    )
    lines = []
    for g in rows:
        who = g.role + (f" ({g.processes} at most)" if g.processes > 1 else "")
        digits = 1 if g.metric == "RSS MiB" else 0
        after = f"{g.after:,.{digits}f}" if g.after is not None else "-"
        lines.append(
            f"| {who} | {g.metric} | {g.start:,.{digits}f} | {g.first:,.{digits}f} "
            f"| {g.last:,.{digits}f} | {g.peak:,.{digits}f} | {g.delta:+,.{digits}f} "
            f"| {g.slope_per_min:+,.2f} | {after} | {_verdict(g)} |"
        )
    return head + "\n".join(lines) + "\n"


def _verdict(g: Growth) -> str:
    if not g.judged:
        return "(client connections)"
    return "yes" if g.flat else "**no**"


def ramp_table(points: Sequence[RampPoint]) -> str:
    names = list(points[0].per_stream) if points else []
    head = (
        "| concurrency (per stream) | mix req/s | all streams req/s | "
        + " | ".join(names)
        + " | REST JSON p99 ms | other answers |\n|---|--:|--:|"
        + "--:|" * len(names)
        + "--:|---|\n"
    )
    lines = [
        f"| {sum(p.concurrency.values())} ({'/'.join(str(p.concurrency[n]) for n in names)}) "
        f"| **{p.mix_rps:,.0f}** | {p.total_rps:,.0f} | "
        + " | ".join(f"{p.per_stream[n]:,.0f}" for n in names)
        + f" | {p.p99_ms:.2f} | "
        + (", ".join(f"{k}: {v:,}" for k, v in sorted(p.errors.items())) or "none")
        + " |"
        for p in points
    ]
    note = (
        "\nPer stream: answers of the expected class per second. *mix req/s*: "
        "min(rate / share) over the streams, the rate at which the whole mix was served in "
        "its shares at once; the soak's capacity is the best of them. Each level shares its "
        "concurrency by share x the latency the level before measured.\n"
    )
    return head + "\n".join(lines) + "\n" + note


def _answers_text(answers: Counter[str], expected: frozenset[str]) -> str:
    parts = []
    for answer, n in sorted(answers.items(), key=lambda kv: (-kv[1], kv[0])):
        mark = "" if answer in expected else " **(unexpected)**"
        parts.append(f"{answer}: {n:,}{mark}")
    return ", ".join(parts) or "none"


def streams_table(results: Sequence[StreamResult]) -> str:
    head = (
        "| ibload stream (open loop) | req/s asked | requests | answers by class "
        "| p50 / p99 ms |\n|---|--:|--:|---|--:|\n"
    )
    lines = []
    for r in results:
        every = r.report.get("latency_all_ms") or r.report["latency_ms"]
        lines.append(
            f"| {r.stream.name} | {r.rate:,.1f} | {int(r.report['requests']):,} "
            f"| {_answers_text(r.answers, r.stream.expected)} "
            f"| {every['p50']:.2f} / {every['p99']:.2f} |"
        )
    return head + "\n".join(lines) + "\n"


def probes_table(prober: Prober) -> str:
    from benchmarks.soak.probes import CASES

    head = "| probe (one connection each) | answers by class | example |\n|---|---|---|\n"
    lines = []
    for case in CASES:
        answers = Counter({a: n for (c, a), n in prober.counts.items() if c == case.name})
        example = next(
            (
                prober.examples[(case.name, a)]
                for a in answers
                if (case.name, a) in prober.examples and not a.startswith(("HTTP 200", "OK"))
            ),
            "",
        )
        lines.append(
            f"| {case.name} | {_answers_text(answers, case.expected)} | {cell(example, 110)} |"
        )
    return head + "\n".join(lines) + "\n"


def cell(text: str, limit: int) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    text = text.replace("`", "'").replace("|", "/")
    return f"`{text}`" if text else ""


#: What the answer classes that are never right mean (ibload's kinds, gRPC codes).
_MEANING = {
    "DROPPED": "ibload sent nothing: every one of the stream's connections was waiting for an "
    "answer (the server fell behind the offered rate)",
    "CLIENT_TIMEOUT": "no full answer within the client's 10 s",
    "CONNECTION_CLOSED": "the server closed or reset the connection before a full answer",
    "CONNECT_ERROR": "the TCP connection could not be opened",
    "BAD_RESPONSE": "not an HTTP answer ibload can read",
    "HTTP 429": "refused by admission: the model's queue or the in-flight bound was full",
    "RESOURCE_EXHAUSTED": "refused by admission: the model's queue was full",
    "DEADLINE_EXCEEDED": "no answer within the client's 10 s deadline",
}


def unexpected_text(results: Sequence[StreamResult], prober: Prober) -> str:
    """Every answer of a class its request should not get, with what the class means and,
    for the probes, the first one's time and body."""
    lines = [
        f"- ibload {r.stream.name}: {', '.join(f'{k}: {v:,}' for k, v in r.unexpected.items())}"
        for r in results
        if r.unexpected
    ]
    lines += [
        f"- probe {case}: {answer} ({prober.counts[(case, answer)]:,}), first at {t:.0f} s: "
        f"{cell(detail, 200) or '(no body)'}"
        for (case, answer), (t, detail) in sorted(prober.unexpected.items())
    ]
    if not lines:
        return "None: every answer was of an expected class.\n"
    seen = {k for r in results for k in r.unexpected} | {a for _, a in prober.unexpected}
    meanings = [f"  - {kind}: {_MEANING[kind]}" for kind in sorted(seen) if kind in _MEANING]
    meanings += [
        f"  - {kind}: a server error" for kind in sorted(seen) if kind.startswith("HTTP 5")
    ]
    return (
        "\n".join(lines)
        + ("\n- what they mean:\n" + "\n".join(meanings) if meanings else "")
        + "\n"
    )


def reloads_text(reloads: Sequence[Reload]) -> str:
    if not reloads:
        return "No reload ran (the soak was shorter than the reload period).\n"
    failed = [r for r in reloads if not r.ok]
    by_model = Counter(r.model for r in reloads)
    timed = sorted(r.seconds for r in reloads if r.how == "load API")
    text = (
        f"{len(reloads)} reloads ({', '.join(f'{m}: {n}' for m, n in by_model.items())}; "
        f"{reloads[0].how}), {len(failed)} failed"
    )
    if timed:
        text += f"; each took {np.median(timed):.2f} s (median), {timed[-1]:.2f} s at most"
    text += ".\n"
    for r in failed[:5]:
        text += f"- at {r.t:.0f} s, {r.model}: {r.answer} {cell(r.detail, 200)}\n"
    return text


_PROBLEM = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|\bpanic\b|Exception", re.I)


def log_problems(log_path: Path) -> tuple[int, list[str]]:
    """Lines of the server's log that report a failure, and the first few of them."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return 0, []
    found = [line for line in lines if _PROBLEM.search(line)]
    return len(found), found[:5]


def machine_text(samples: Sequence[Sample], client_cpu: float, server_cpu: float) -> str:
    load = [s for s in samples if s.phase == "load"]
    loads = [s.load_1min for s in load]
    seconds = load[-1].t - load[0].t if len(load) > 1 else 0.0
    busy = (load[-1].machine_busy_s - load[0].machine_busy_s) / seconds if seconds else 0.0
    other = max(0.0, busy - client_cpu - server_cpu)
    return (
        f"The machine is shared (2 cores, other engineers' builds and tests ran meanwhile): "
        f"load average (1 min) {np.mean(loads):.2f} on average during the run, "
        f"{min(loads):.2f}-{max(loads):.2f}; the cores were busy {busy:.2f} of 2 on average: "
        f"the server {server_cpu:.2f}, the load generators and this harness {client_cpu:.2f}, "
        f"other work {other:.2f}.\n"
    )


def server_cpu(samples: Sequence[Sample]) -> float:
    """Cores the server's processes used between the first and the last sample under load
    (a worker replaced meanwhile counts from when it was first seen)."""
    load = [s for s in samples if s.phase == "load"]
    if len(load) < 2:
        return 0.0
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for s in load:
        for p in s.processes:
            first.setdefault(p.pid, p.cpu_s if s is load[0] else 0.0)
            last[p.pid] = p.cpu_s
    used = sum(last[pid] - first[pid] for pid in last)
    return used / (load[-1].t - load[0].t)


def plot_processes(
    samples: Sequence[Sample], reloads: Sequence[Reload], warmup_s: float, path: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    roles = [r for r in ROLES if any(s.count(r) for s in samples)]
    ts = [s.t for s in samples]
    for ax, (metric, field_name, scale) in zip(axes, _METRICS, strict=False):
        for role in roles:
            ax.plot(
                ts, [s.total(role, field_name) / scale for s in samples], marker=".", label=role
            )
        ax.set_ylabel(metric)
    axes[1].plot(
        ts,
        [s.connections for s in samples],
        linestyle="--",
        color="grey",
        label="client connections (ESTABLISHED)",
    )
    axes[3].plot(ts, [s.load_1min for s in samples], color="black", label="load average (1 min)")
    axes[3].set_ylabel("load average")
    axes[3].set_xlabel("seconds into the soak")
    for ax in axes:
        ax.axvspan(min(ts), warmup_s, color="grey", alpha=0.12, lw=0)
        for r in reloads:
            ax.axvline(r.t, color="tab:red", alpha=0.15, lw=0.8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0].set_title(
        "Soak: the server's processes (shaded: warm-up; red lines: model reloads)", fontsize=10
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_answers(results: Sequence[StreamResult], path: Path) -> Path | None:
    """Per timeline slice: answers as expected and not, per second; p99 of the valid streams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices: dict[float, list[float]] = {}
    width = 0.0
    for r in results:
        timeline = r.report.get("timeline") or []
        if len(timeline) >= 2:
            width = timeline[1]["start_s"] - timeline[0]["start_s"]
        for s in timeline:
            row = slices.setdefault(float(s["start_s"]), [0.0, 0.0])
            answers = Counter(s.get("errors") or {})
            if s.get("ok"):
                answers["OK" if r.stream.protocol == "grpc" else "HTTP 200"] += s["ok"]
            for answer, n in answers.items():
                row[0 if answer in r.stream.expected else 1] += n
    if not slices or width <= 0:
        return None
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    starts = sorted(slices)
    top.plot(starts, [slices[t][0] / width for t in starts], label="as expected")
    top.plot(starts, [slices[t][1] / width for t in starts], color="tab:red", label="unexpected")
    top.set_ylabel("answers/s (ibload streams)")
    top.legend(fontsize=7)
    for r in results:
        if r.stream.body in (None, "valid") and r.stream.model != "no_such_model":
            timeline = r.report.get("timeline") or []
            bottom.plot(
                [s["start_s"] for s in timeline],
                [s["p99_ms"] for s in timeline],
                label=r.stream.name,
            )
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 ms per slice")
    bottom.set_xlabel("seconds into the soak")
    bottom.legend(fontsize=7)
    for ax in (top, bottom):
        ax.grid(True, which="both", alpha=0.3)
    top.set_title(f"Soak: answers and latency per {width:g} s slice", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def go_connections_note(samples: Sequence[Sample]) -> str:
    load = [s for s in samples if s.phase == "load"]
    after = next((s for s in samples if s.phase == "after"), None)
    if not load:
        return ""
    go_fds = [_value(s, GO, _GO_OWN_FDS) for s in load]
    connections = [s.connections for s in load]
    text = (
        "The Go front end's fds include one per client connection: "
        f"{min(connections)}-{max(connections)} were open at the samples; its fds less those "
        f"connections ran {min(go_fds):.0f}-{max(go_fds):.0f}. CLOSE_WAIT sockets on the "
        f"server's ports (a client gone, the server's end not closed): at most "
        f"{max(s.close_wait for s in samples)}"
    )
    if after is not None:
        text += (
            f"; once the load stopped: {after.connections} connections, "
            f"{after.close_wait} CLOSE_WAIT"
        )
    return text + "."


def into_results(block: str, plots: Sequence[Path], benchmarks_dir: Path) -> None:
    """Put `block` between the soak markers of benchmarks/RESULTS.md (or append it)."""
    results = benchmarks_dir / "RESULTS.md"
    old = results.read_text() if results.exists() else ""
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", old, re.S)
    if match:
        new = old[: match.start()] + block + old[match.end() :]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    results.write_text(new)
    (benchmarks_dir / "plots").mkdir(exist_ok=True)
    for plot in plots:
        shutil.copyfile(plot, benchmarks_dir / "plots" / plot.name)


def raw(
    samples: Sequence[Sample],
    ramp: Sequence[RampPoint],
    results: Sequence[StreamResult],
    prober: Prober,
    reloads: Sequence[Reload],
    settings: dict[str, Any],
) -> dict[str, Any]:
    return {
        "settings": settings,
        "ramp": [{**p.__dict__, "mix_rps": p.mix_rps} for p in ramp],
        "samples": [s.as_dict() for s in samples],
        "streams": [
            {"name": r.stream.name, "rate": r.rate, "answers": dict(r.answers), "report": r.report}
            for r in results
        ],
        "probes": [
            {"case": c, "answer": a, "count": n} for (c, a), n in sorted(prober.counts.items())
        ],
        "probe_examples": [
            {"case": c, "answer": a, "example": e} for (c, a), e in prober.examples.items()
        ],
        "reloads": [r.__dict__ for r in reloads],
    }
