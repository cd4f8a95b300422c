"""Benchmarks, one module per part (``dw bench PART``)."""

from __future__ import annotations

import time


def reference_ms(runs: int = 40) -> float | None:
    """p50 in ms of a fixed arithmetic workload (a 256x1024 by 1024x1024 float32 product in torch,
    on its threads) just before a benchmark: how fast this machine is right now. On a shared box
    whose speed drifts by the hour, latencies are compared alongside it. None without torch."""
    try:
        import torch
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(256, 1024, generator=g), torch.rand(1024, 1024, generator=g)
    ts = []
    with torch.inference_mode():
        for i in range(runs + 5):
            t0 = time.perf_counter_ns()
            torch.mm(a, b)
            if i >= 5:
                ts.append(time.perf_counter_ns() - t0)
    ts.sort()
    return round(ts[len(ts) // 2] / 1e6, 3)
