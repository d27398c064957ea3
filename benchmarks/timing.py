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


def decode_rates(video, workers=(1, 2, 4), repeats: int = 2) -> dict[int, float]:
    """{decoding threads: frames/s} for decoding the whole ``video`` to RGB (best of ``repeats``);
    1 is one decoder, more are keyframe-aligned chunks decoded at once (pipeline/parallel_decode)."""
    from vibe_server.pipeline.video import open_video

    rates = {}
    for count in workers:
        reader = open_video(video, decode_workers=count)
        rates[count] = reader.info.frame_count / best_of(lambda r=reader: sum(1 for _ in r), repeats)
    return rates
