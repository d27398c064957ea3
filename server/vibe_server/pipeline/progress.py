"""Progress, timing and cancellation of a job: the stages, the seconds spent in each, the progress
callback ``progress(stage, fraction, eta_s)`` (fraction of the whole job, 0..1, at most every 0.2 s)
and ``should_cancel()``, checked at every frame and track."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

STAGES = ("decode", "detect", "track", "crop", "backbone", "temporal", "smpl", "write")
STREAM_STAGES = STAGES[:5]  # these run interleaved in the one pass over the video
# Share of a job's progress bar taken by each phase (the streaming pass dominates).
_PHASE_SPAN = {"stream": (0.0, 0.9), "temporal": (0.9, 0.96), "smpl": (0.96, 0.98), "write": (0.98, 1.0)}

ProgressFn = Callable[[str, float, "float | None"], None]


class JobCancelled(Exception):
    """Raised inside ``Engine.run`` when ``should_cancel()`` turned true."""


class StageMonitor:
    """Accumulates seconds per stage, reports progress at most every 0.2 s, checks for cancel."""

    def __init__(self, progress: ProgressFn | None, should_cancel: Callable[[], bool] | None) -> None:
        self.timings_s = {stage: 0.0 for stage in STAGES}
        self._progress, self._should_cancel = progress, should_cancel
        self._t0 = time.perf_counter()
        self._last_report = -1.0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] += time.perf_counter() - t

    def check_cancel(self) -> None:
        if self._should_cancel is not None and self._should_cancel():
            raise JobCancelled()

    def report(self, stage: str, phase: str, phase_fraction: float, *, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if not force and now - self._last_report < 0.2:
            return
        self._last_report = now
        lo, hi = _PHASE_SPAN[phase]
        fraction = min(1.0, max(0.0, lo + (hi - lo) * phase_fraction))
        elapsed = now - self._t0
        eta_s = elapsed * (1 - fraction) / fraction if fraction > 0.01 else None
        self._progress(stage, fraction, eta_s)

    def busiest_stream_stage(self) -> str:
        return max(STREAM_STAGES, key=lambda s: self.timings_s[s])


def phase_fraction(stage: str, fraction: float) -> float:
    """A progress report (``stage``, ``fraction`` of the whole job) -> the fraction of that stage's own
    phase done (the streaming stages share one phase), 0..1: for one bar per phase."""
    lo, hi = _PHASE_SPAN["stream" if stage in STREAM_STAGES else stage]
    return min(1.0, max(0.0, (fraction - lo) / (hi - lo)))


class TimedReader:
    """Wraps a video reader (or a segment of one) so that the time spent decoding counts as 'decode'."""

    def __init__(self, reader: Any, monitor: StageMonitor) -> None:
        self._reader, self._monitor = reader, monitor

    def __iter__(self) -> Iterator:
        iterator = iter(self._reader)
        while True:
            with self._monitor.stage("decode"):
                item = next(iterator, None)
            if item is None:
                return
            yield item

    def __getattr__(self, name):
        return getattr(self._reader, name)


class TimedDetector:
    """Wraps a detector so that its calls count as 'detect'."""

    def __init__(self, detector: Any, monitor: StageMonitor) -> None:
        self._detector, self._monitor = detector, monitor

    def detect(self, frames: list) -> Any:
        with self._monitor.stage("detect"):
            return self._detector.detect(frames)

    def __getattr__(self, name):
        return getattr(self._detector, name)
