"""Timing helpers: warm-up, then the median of repeated runs (perf_counter), as the benchmark issue asks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1, budget_s: float = 20.0) -> float:
    """Median wall time of `fn()`; stops repeating early once `budget_s` is spent (at least 1 timed run)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], *, repeats: int = 5, warmup: int = 1,
                        budget_s: float = 60.0) -> dict[str, float]:
    """Median wall time of each function, timed in turns (a, b, c, a, b, c, ...) rather than one after another.

    A ratio between two functions is the figure that matters here; taking turns spreads a burst of other work
    on the machine over all of them instead of landing on whichever happened to run at the time.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for round_ in range(repeats):
        if round_ and time.perf_counter() - start > budget_s:
            break
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


def matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    """This machine's fp32 matmul throughput right now, to express model speed as a fraction of it."""
    import torch as t

    a, b = t.randn(size, size), t.randn(size, size)
    seconds = median_seconds(lambda: a @ b, repeats=repeats, warmup=2)
    return 2 * size**3 / seconds / 1e9
