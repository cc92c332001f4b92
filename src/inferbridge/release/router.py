"""Which version an unversioned request goes to while a rollout runs.

A `Route` is immutable: the controller builds a new one at every step change and swaps it
into the dataplane's route table in one assignment, so the hot path reads one dict entry and
takes no lock. A request that names a version (`/versions/{v}`) never consults a route.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferbridge.protocol.types import InferenceRequest
    from inferbridge.release.shadow import Shadow

__all__ = ["BUCKETS", "Route", "key_bucket"]

#: Weights are resolved to 1/10,000: a weight of 0.01 % still routes.
BUCKETS = 10_000
#: Routing keys whose bucket a route remembers.
KEY_CACHE = 100_000


def key_bucket(salt: str, key: str) -> int:
    """A stable bucket in [0, BUCKETS) for a routing key: the same key and salt give the same
    bucket in every process and after every restart (blake2b, not Python's salted hash)."""
    digest = hashlib.blake2b(f"{salt}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class Route:
    """Baseline and candidate of one model, the candidate's share, and the shadow (if any).

    With a routing key the choice is `key_bucket(salt, key) < threshold`: raising the weight
    only moves keys from the baseline to the candidate, never back, so a user does not flip
    between versions as the rollout advances. The salt is the model and candidate, so each
    rollout picks its own users."""

    baseline: int
    candidate: int
    threshold: int  # candidate's buckets out of BUCKETS
    salt: str
    header: str | None = None
    parameter: str | None = None
    shadow: Shadow | None = None
    rng: Callable[[], float] = random.random
    #: Buckets of the keys seen (a key's bucket never changes within a route): hashing is
    #: most of a sticky pick's cost. Cleared when it grows past KEY_CACHE entries.
    buckets: dict[str, int] = field(default_factory=dict, compare=False)

    @classmethod
    def of(
        cls,
        model: str,
        baseline: int,
        candidate: int,
        weight: float,
        *,
        header: str | None = None,
        parameter: str | None = None,
        shadow: Shadow | None = None,
    ) -> Route:
        threshold = max(0, min(BUCKETS, round(weight * BUCKETS / 100)))
        return cls(
            baseline,
            candidate,
            threshold,
            f"{model}:{candidate}",
            header,
            parameter,
            shadow,
        )

    @property
    def weight(self) -> float:
        return self.threshold * 100 / BUCKETS

    def pick(self, request: InferenceRequest) -> int:
        """The version number this request goes to."""
        if self.threshold == 0:
            return self.baseline
        if self.threshold >= BUCKETS:
            return self.candidate
        key = self.key_of(request)
        if key is None:
            chosen = self.rng() * BUCKETS < self.threshold
        else:
            bucket = self.buckets.get(key)
            if bucket is None:
                if len(self.buckets) >= KEY_CACHE:
                    self.buckets.clear()
                bucket = self.buckets[key] = key_bucket(self.salt, key)
            chosen = bucket < self.threshold
        return self.candidate if chosen else self.baseline

    def key_of(self, request: InferenceRequest) -> str | None:
        """The request's routing key, or None (then the choice is random, by weight)."""
        if self.parameter is not None:
            value = request.parameters.get(self.parameter)
            return None if value is None else str(value)
        if self.header is not None and request.header is not None:
            return request.header(self.header)
        return None
