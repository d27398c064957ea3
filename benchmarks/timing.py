"""Timing helper shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""

import statistics
import time


def median_seconds(fn, repeats: int = 3) -> float:
    """Seconds of the median of ``repeats`` calls of ``fn()``."""
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds)


def decode_rates(video, workers=(1, 2, 4), repeats: int = 3) -> dict[int, float]:
    """{decoding threads: frames/s} for decoding the whole ``video`` to RGB (median of ``repeats``);
    1 is one decoder, more are keyframe-aligned chunks decoded at once (pipeline/parallel_decode)."""
    from vibe_server.pipeline.video import open_video

    rates = {}
    for count in workers:
        reader = open_video(video, decode_workers=count)
        rates[count] = reader.info.frame_count / median_seconds(lambda r=reader: sum(1 for _ in r), repeats)
    return rates
