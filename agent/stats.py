"""Latency summaries shared by the loop and the benchmarks: nearest-rank quantiles, p50/p95 in ms.

Kept apart from :mod:`agent.loop` so that a benchmark that only times a policy (``dw bench
policies``) imports no session or video code: it then runs where PyAV is not installed."""

from __future__ import annotations


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 <= q <= 1) of ``values``; 0.0 for none."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def percentiles(values_ns: list[int]) -> dict[str, float]:
    """p50/p95/mean in milliseconds of durations in nanoseconds."""
    if not values_ns:
        return {"n": 0, "p50_ms": 0.0, "p95_ms": 0.0, "mean_ms": 0.0}
    return {
        "n": len(values_ns),
        "p50_ms": round(quantile(values_ns, 0.50) / 1e6, 3),
        "p95_ms": round(quantile(values_ns, 0.95) / 1e6, 3),
        "mean_ms": round(sum(values_ns) / len(values_ns) / 1e6, 3),
    }
