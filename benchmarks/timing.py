"""Timing helper shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""

import time


def best_of(fn, repeats: int = 1) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn()`` (the least disturbed by other work)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
