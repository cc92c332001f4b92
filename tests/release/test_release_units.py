"""The rollout layers on their own: spec validation, routing, comparisons, analysis, store."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from inferbridge.errors import InvalidInput
from inferbridge.observability.stats import VersionStats
from inferbridge.protocol.types import InferenceRequest
from inferbridge.release.analysis import Figures, Watch, judge
from inferbridge.release.router import BUCKETS, Route, key_bucket
from inferbridge.release.shadow import ShadowCounts, compare_outputs
from inferbridge.release.spec import parse_duration, parse_rollout
from inferbridge.release.state import RolloutState, traffic_of
from inferbridge.release.store import RolloutStore

STEPS = [{"canary": {"weight": 10, "duration": "1s"}}, {"canary": {"weight": 100, "duration": 1}}]


def spec(**overrides: Any) -> dict[str, Any]:
    return {"candidate": 2, "steps": STEPS, **overrides}


# -- spec -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("10m", 600),
        ("1m30s", 90),
        ("2h", 7200),
        (5, 5.0),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten minutes", "10", "5x", "m5", "1s2", True, None, "-1s"])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("document", "phrase"),
    [
        (spec(steps=[{"canary": {"weight": 150, "duration": "1s"}}]), "less than or equal to 100"),
        (spec(steps=[{"canary": {"weight": -1, "duration": "1s"}}]), "greater than or equal to 0"),
        (spec(steps=[{"canary": {"weight": 50, "duration": "1s"}}]), "never reach weight 100"),
        (spec(steps=[{"shadow": {"duration": "1s"}}]), "never reach weight 100"),
        (spec(steps=[{"canary": {"weight": 100, "duration": "soon"}}]), "cannot parse duration"),
        (spec(steps=[]), "steps"),
        (spec(candidate=0), "candidate"),
        (spec(colour="red"), "colour"),
        (spec(route_key="cookie:x"), "route_key"),
        (spec(analysis={"interval": "10ms"}), "at least 100ms"),
        (spec(analysis={"checks": [{"error_rate": {}}]}), "error_rate needs"),
        (
            spec(steps=[{"approval": {"name": "qa"}}, {"approval": {"name": "qa"}}, *STEPS]),
            "unique",
        ),
        ([1, 2], "must be a JSON/YAML object"),
    ],
)
def test_bad_specs_name_what_is_wrong(document: Any, phrase: str) -> None:
    with pytest.raises(InvalidInput, match=phrase):
        parse_rollout(document)


def test_a_full_spec_parses() -> None:
    parsed = parse_rollout(
        spec(
            route_key="header:X-User-Id",
            steps=[
                {"shadow": {"duration": "10m", "sample": 0.5}},
                {"canary": {"weight": 5, "duration": "5m"}},
                {"approval": {"name": "qa", "approvers": 2, "timeout": "1h"}},
                {"canary": {"weight": 100, "duration": "5m"}},
            ],
            analysis={
                "interval": "10s",
                "min_requests": 50,
                "failure_limit": 2,
                "checks": [
                    {"error_rate": {"max_ratio_to_baseline": 2.0, "max": 0.01}},
                    {"latency_p99": {"max_ratio_to_baseline": 1.5}},
                    {"agreement": {"min": 0.98}},
                    {"prometheus": {"query": "up", "max": 0.5, "url": "http://127.0.0.1:9090"}},
                ],
            },
        )
    )
    assert parsed.route_header == "x-user-id"
    assert [traffic_of(parsed, i) for i in range(5)] == [
        (0.0, 0.5),
        (5.0, None),
        (5.0, None),  # an approval gate holds the traffic of the step before it
        (100.0, None),
        (100.0, None),
    ]


# -- routing ----------------------------------------------------------------------------------


def request(parameters: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
    found = InferenceRequest("m", None, {}, {}, parameters=parameters or {})
    if headers is not None:
        found.header = headers.get
    return found


def test_weighted_split_is_within_binomial_bounds() -> None:
    rng = random.Random(7)
    route = Route.of("m", 1, 2, 20.0)
    route = Route(**{**{f: getattr(route, f) for f in route.__slots__}, "rng": rng.random})
    n = 1000
    candidate = sum(route.pick(request()) == 2 for _ in range(n))
    sigma = math.sqrt(n * 0.2 * 0.8)
    assert abs(candidate - 200) < 4.5 * sigma, candidate


def test_sticky_keys_never_flip_as_the_weight_grows() -> None:
    keys = [f"user-{i}" for i in range(2000)]
    seen: dict[str, int] = {}
    for weight in (1, 5, 25, 50, 99, 100):
        route = Route.of("m", 1, 2, weight, header="x-user-id")
        share = 0
        for key in keys:
            version = route.pick(request(headers={"x-user-id": key}))
            assert route.pick(request(headers={"x-user-id": key})) == version  # stable
            if seen.get(key) == 2:
                assert version == 2, f"{key} flipped back to the baseline at weight {weight}"
            seen[key] = version
            share += version == 2
        assert abs(share / len(keys) - weight / 100) < 0.05


def test_route_keys_are_stable_across_processes() -> None:
    # blake2b, not Python's per-process salted hash: these values hold in every process.
    assert key_bucket("m:2", "user-1") == key_bucket("m:2", "user-1")
    assert 0 <= key_bucket("iris:3", "alice") < BUCKETS
    assert (
        key_bucket("iris:3", "alice")
        == int.from_bytes(
            __import__("hashlib").blake2b(b"iris:3\0alice", digest_size=8).digest(), "big"
        )
        % BUCKETS
    )


def test_parameter_route_keys() -> None:
    route = Route.of("m", 1, 2, 50, parameter="user")
    picks = {route.pick(request({"user": f"u{i}"})) for i in range(50)}
    assert picks == {1, 2}
    assert len({route.pick(request({"user": "u7"})) for _ in range(20)}) == 1


# -- shadow comparisons -------------------------------------------------------------------------


def test_compare_outputs() -> None:
    primary = {
        "label": np.array([1, 2, 3]),
        "prob": np.array([[0.1, 0.9]], dtype=np.float32),
        "name": np.array([b"a"], dtype=object),
    }
    same = compare_outputs(primary, dict(primary), atol=1e-5, rtol=1e-4)
    assert all(agreed for agreed, _, _ in same.values())
    other = {
        "label": np.array([1, 2, 4]),
        "prob": np.array([[0.1, 0.95]], dtype=np.float32),
        "name": np.array([b"a"], dtype=object),
    }
    diff = compare_outputs(primary, other, atol=1e-5, rtol=1e-4)
    assert diff["label"][0] is False
    assert diff["prob"][0] is False and diff["prob"][1] == pytest.approx(0.05, abs=1e-6)
    assert diff["name"][0] is True
    missing = compare_outputs(primary, {"label": np.array([1, 2])}, atol=0, rtol=0)
    assert missing["label"][0] is False and missing["prob"] == (False, math.inf, math.inf)


# -- analysis -------------------------------------------------------------------------------------


def figures(requests: int, backend: int = 0, p99: float | None = 1.0) -> Figures:
    return Figures(requests, {"backend": backend}, p99, p99)


def analysis_spec(**checks: Any) -> Any:
    return parse_rollout(spec(analysis={"min_requests": 10, **checks})).analysis


def test_too_few_requests_is_inconclusive() -> None:
    result = judge(analysis_spec(), 0, figures(100), figures(9), ShadowCounts(), None, {})
    assert result.verdict == "inconclusive" and "9 of min_requests 10" in result.why


def test_error_rate_check() -> None:
    spec_ = analysis_spec(checks=[{"error_rate": {"max": 0.05, "max_ratio_to_baseline": 2}}])
    ok = judge(spec_, 0, figures(100, 1), figures(100, 2), ShadowCounts(), None, {})
    assert ok.verdict == "pass", ok.why
    bad = judge(spec_, 0, figures(100, 1), figures(100, 10), ShadowCounts(), None, {})
    assert bad.verdict == "fail" and "above max 0.05" in bad.why
    ratio = judge(spec_, 0, figures(1000, 1), figures(100, 3), ShadowCounts(), None, {})
    assert ratio.verdict == "fail" and "2.0x the baseline" in ratio.why


def test_latency_check_uses_the_last_baseline_window_with_traffic() -> None:
    spec_ = analysis_spec(checks=[{"latency_p99": {"max_ratio_to_baseline": 1.5}}])
    first = judge(spec_, 0, figures(100, p99=10), figures(100, p99=12), ShadowCounts(), None, {})
    assert first.verdict == "pass"
    # At weight 100 the baseline answers nothing: the ratio uses its last real window.
    later = judge(
        spec_, 1, figures(0, p99=None), figures(100, p99=40), ShadowCounts(), first.reference, {}
    )
    assert later.verdict == "fail" and "1.5x the baseline's 10.00 ms" in later.why


def test_agreement_check() -> None:
    spec_ = analysis_spec(checks=[{"agreement": {"min": 0.9}}])
    shadow = ShadowCounts(sent=20, compared=20, agreed=15)
    result = judge(spec_, 0, figures(20), figures(20), shadow, None, {})
    assert result.verdict == "fail" and "agreement 0.7500 below min 0.9" in result.why


def test_watch_takes_windows_from_version_stats() -> None:
    baseline, candidate = VersionStats(), VersionStats()
    watch = Watch(baseline, candidate, analysis_spec(interval="1s", window="2s"))
    for _ in range(30):
        candidate.request_succeeded(0.002)
    candidate.request_failed(0.001, "backend")
    baseline.request_succeeded(0.001)
    watch.tick(None)
    base, cand, _ = watch.figures()
    assert (base.requests, cand.requests, cand.failures["backend"]) == (1, 31, 1)
    assert cand.p99_ms == pytest.approx(2.0)
    watch.tick(None)
    watch.tick(None)  # the window is two ticks: the first one left it
    assert watch.figures()[1].requests == 0
    watch.close()
    assert candidate.latency_window is None


# -- store --------------------------------------------------------------------------------------


def test_store_round_trip_and_audit(tmp_path: Any) -> None:
    store = RolloutStore(tmp_path / "state" / "rollouts.db")
    assert store.load() == [] and not (tmp_path / "state").exists()  # nothing written yet
    state = RolloutState.new("m", parse_rollout(spec()), 1, "api", "test")
    store.save(state.to_json(), "started", "alice", {"why": "test"})
    state.step = 1
    store.save(state.to_json(), "step", "controller", {})
    reopened = RolloutStore(tmp_path / "state" / "rollouts.db")
    (document,) = reopened.load()
    back = RolloutState.from_json(document)
    assert (back.id, back.step, back.baseline, back.candidate) == (state.id, 1, 1, 2)
    events = [(r.event, r.actor) for r in reopened.audit("m")]
    assert events == [("started", "alice"), ("step", "controller")]
    reopened.remove("m", state.id, "bob", {})
    assert reopened.load() == []
    assert [r.event for r in reopened.audit()][-1] == "cleared"


# -- webhooks ---------------------------------------------------------------------------------


def test_webhooks_reach_each_receiver_in_order_even_when_one_is_slow_or_dead() -> None:
    """The first event is answered slowly; the later ones must still arrive after it, and a
    dead receiver beside it changes nothing."""
    import asyncio
    import json
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from inferbridge.release.webhooks import Webhooks

    received: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            event = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if event["n"] == 0:
                time.sleep(0.3)
            received.append(event["n"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/nobody"
    live = f"http://127.0.0.1:{server.server_address[1]}/hook"

    async def scenario() -> Webhooks:
        hooks = Webhooks(attempts=2, backoff_s=0.01, timeout_s=2.0)
        for n in range(5):
            hooks.send([dead, live], {"event": "step", "n": n})
            await asyncio.sleep(0.01)
        for _ in range(300):
            if len(received) == 5 and hooks.failed == 5:
                break
            await asyncio.sleep(0.01)
        await hooks.close()
        return hooks

    try:
        hooks = asyncio.run(scenario())
    finally:
        server.shutdown()
        server.server_close()
    assert received == [0, 1, 2, 3, 4]
    assert (hooks.delivered, hooks.failed) == (5, 5)


def test_a_webhook_backlog_is_bounded() -> None:
    import asyncio

    from inferbridge.release.webhooks import Webhooks

    async def scenario() -> Webhooks:
        hooks = Webhooks(attempts=1, backlog=3, timeout_s=0.5)
        for n in range(10):  # all queued before the drainer gets to run
            hooks.send(["http://127.0.0.1:9/discard"], {"event": "step", "n": n})
        await hooks.close()
        return hooks

    hooks = asyncio.run(scenario())
    assert hooks.dropped == 7
    assert hooks.delivered + hooks.failed <= 3
