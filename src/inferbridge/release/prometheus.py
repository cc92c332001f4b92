"""The optional external check: one PromQL instant query against a Prometheus server."""

from __future__ import annotations

import math

from inferbridge.release.analysis import FAIL, PASS, SKIP, CheckResult
from inferbridge.release.spec import PrometheusSpec

__all__ = ["query_check"]


async def query_check(spec: PrometheusSpec) -> CheckResult:
    """Fails when the query's value is outside [min, max], and when the query cannot be
    answered (Prometheus down, a bad query): a check that cannot see must not pass. An empty
    result (no such series yet) gives no verdict."""
    import httpx

    url = spec.url.rstrip("/") + "/api/v1/query"
    try:
        async with httpx.AsyncClient(timeout=spec.timeout) as client:
            response = await client.get(url, params={"query": spec.query})
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return CheckResult("prometheus", FAIL, f"query failed: {type(exc).__name__}: {exc}")
    if document.get("status") != "success":
        why = document.get("error", f"HTTP {response.status_code}")
        return CheckResult("prometheus", FAIL, f"query failed: {why}")
    value = _first_value(document.get("data", {}))
    figures = {"query": spec.query, "value": value}
    if value is None or math.isnan(value):
        # No series yet (a version loaded a moment ago is not scraped yet): no verdict.
        return CheckResult("prometheus", SKIP, "the query returned no sample", figures)
    if spec.max is not None and value > spec.max:
        return CheckResult("prometheus", FAIL, f"{value:.6g} above max {spec.max}", figures)
    if spec.min is not None and value < spec.min:
        return CheckResult("prometheus", FAIL, f"{value:.6g} below min {spec.min}", figures)
    return CheckResult("prometheus", PASS, f"{value:.6g}", figures)


def _first_value(data: dict[str, object]) -> float | None:
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar" and isinstance(result, list):
            return float(result[1])
        if kind == "vector" and isinstance(result, list) and result:
            first = result[0]
            if isinstance(first, dict):
                return float(first["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None
