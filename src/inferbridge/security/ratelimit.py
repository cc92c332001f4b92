"""Token buckets: a bucket holds up to `burst` tokens and gains `per_second` a second; a
request takes one or is told how long until one is there.

Time comes from a monotonic clock, injectable so tests step it by hand.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from inferbridge.security.scopes import glob_match

__all__ = [
    "Clock",
    "ModelRate",
    "Rate",
    "RateBuckets",
    "RateError",
    "TokenBucket",
    "parse_model_rate",
    "parse_rate",
]

Clock = Callable[[], float]

#: Buckets kept before the full ones are dropped (a full bucket is the same as a new one,
#: so dropping it changes nothing but memory; callers can name arbitrary models).
_PRUNE_AT = 10_000

_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?::\s*([0-9]+)\s*)?$")


class RateError(ValueError):
    """A rate that is not `RPS[:BURST]` with RPS > 0 and BURST >= 1."""


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)):
            raise RateError(f"per_second must be a number > 0, got {self.per_second!r}")
        if self.burst < 1:
            raise RateError(f"burst must be an integer >= 1, got {self.burst!r}")

    @classmethod
    def of(cls, per_second: float, burst: int | None = None) -> Rate:
        """`burst` defaults to per_second (at least 1)."""
        return cls(per_second, burst if burst is not None else max(1, math.ceil(per_second)))

    def __str__(self) -> str:
        return f"{self.per_second:g}:{self.burst}"


@dataclass(frozen=True, slots=True)
class ModelRate:
    """A per-model rule of --rate-limit: the models matching `glob` get one bucket each."""

    glob: str
    rate: Rate


def parse_rate(text: str) -> Rate:
    """`RPS[:BURST]`, e.g. `100:200` or `2.5`; RateError says what was expected."""
    match = _RATE.match(text)
    if match is None:
        raise RateError(
            f"rate {text!r} is not RPS[:BURST] (requests a second, then optionally the "
            "burst, a whole number: e.g. 100:200)"
        )
    burst = match.group(2)
    return Rate.of(float(match.group(1)), int(burst) if burst is not None else None)


def parse_model_rate(text: str) -> ModelRate:
    """`GLOB=RPS[:BURST]`, e.g. `fraud-*=100:200`."""
    glob, sep, rate = text.partition("=")
    glob = glob.strip()
    if not sep or not glob:
        raise RateError(
            f"model rate limit {text!r} is not GLOB=RPS[:BURST] (e.g. 'fraud-*=100:200')"
        )
    return ModelRate(glob, parse_rate(rate))


class TokenBucket:
    """Up to `rate.burst` tokens, refilled at `rate.per_second`; starts full."""

    __slots__ = ("_clock", "_stamp", "_tokens", "rate")

    def __init__(self, rate: Rate, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = float(rate.burst)
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(
                float(self.rate.burst), self._tokens + elapsed * self.rate.per_second
            )
        self._stamp = now
        return self._tokens

    def take(self) -> float:
        """Take a token: 0.0 when taken, else the seconds until one is there."""
        tokens = self._refill()
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        return (1.0 - tokens) / self.rate.per_second

    def give_back(self) -> None:
        """Return a token taken for a request that another check then refused."""
        self._tokens = min(float(self.rate.burst), self._tokens + 1.0)

    def full(self) -> bool:
        return self._refill() >= self.rate.burst


class RateBuckets:
    """Buckets by key, created on first use. A key's bucket stays while its rate is the
    same (a keys-file reload keeps it); a new rate starts a new, full bucket."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[Hashable, TokenBucket] = {}

    def bucket(self, key: Hashable, rate: Rate) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            if len(self._buckets) >= _PRUNE_AT:
                self._prune()
            bucket = TokenBucket(rate, self._clock)
            self._buckets[key] = bucket
        return bucket

    def keep_only(self, keep: Callable[[Hashable, Rate], bool]) -> None:
        """Drop the buckets for which keep(key, rate) is false."""
        for key in [k for k, b in self._buckets.items() if not keep(k, b.rate)]:
            del self._buckets[key]

    def _prune(self) -> None:
        for key in [k for k, b in self._buckets.items() if b.full()]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def model_rate(rules: tuple[ModelRate, ...], model: str) -> Rate | None:
    """The rate of the first rule whose glob matches `model`, else None."""
    for rule in rules:
        if glob_match(rule.glob, model):
            return rule.rate
    return None


def retry_after_seconds(wait_s: float) -> int:
    """Retry-After: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))
