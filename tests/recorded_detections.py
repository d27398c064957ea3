"""OpenCV HOG's detections recorded on every frame of the real clips (``testdata.HOG_DETECTIONS``,
written by tests/data/fixtures/make_hog_detections.py): a real detector's flickering boxes, misses
and false positives, for the tests and the benchmarks."""

import numpy as np
from testdata import HOG_DETECTIONS


def recorded_hog_detections() -> dict[str, list[np.ndarray]]:
    """{clip file name: one (K, 5) float32 [x1, y1, x2, y2, score] array per frame, in decode order}."""
    with np.load(HOG_DETECTIONS) as recorded:
        clips = sorted({key.split("/")[0] for key in recorded.files})
        return {clip: np.split(recorded[f"{clip}/boxes"], np.cumsum(recorded[f"{clip}/counts"])[:-1]) for clip in clips}
