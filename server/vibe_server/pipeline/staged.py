"""The front end in stages that overlap, for a GPU: decoding, detecting and tracking run at once.

    decode thread     the reader decodes ahead (the engine sets its ``prefetch``)  -> bounded queue
    detect thread     each run of frames holding ``detector.batch_size`` scheduled detection frames
                      (``PeopleStream.run_frames`` at most) is detected in one batch (on the GPU: on
                      a CUDA stream of its own, letterbox, YOLOv3 and NMS on the device, the boxes
                      copied back)                                                -> bounded queue
    caller's thread   SORT frame by frame (an adaptive detection runs there, on the spot, carrying
                      the run's next unscheduled frames for later triggers), then the caller crops
                      and runs the backbone

While the tracker steps through one run, the next run is being detected and the ones after it
decoded. The queues bound the memory: at most ``queue_runs`` detected runs wait, so ``queue_runs
+ 2`` runs are alive (with the tracker's and the one being filled), whose frames together hold at
most ``people.RUNS_BYTES_MAX`` (runs are shorter for large frames); the reader's prefetch holds its
own few frames, whatever the video's length and the detection stride.

It yields exactly what :class:`~vibe_server.pipeline.people.PeopleStream` yields for the same
frames and detector (the same runs, the same scheduled frames, the same tracker), only sooner; the
tests hold the two equal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from .background import ahead_in_thread
from .detect import Detector
from .people import FramePeople, PeopleStream

QUEUE_RUNS = 2  # detected runs waiting for the tracker (each run: batch_size detection frames, <= run_frames)


class StagedPeopleStream(PeopleStream):
    """:class:`PeopleStream` with detection in a background thread, ``queue_runs`` runs ahead."""

    def __init__(self, frames: Iterable, detector: Detector, *, queue_runs: int = QUEUE_RUNS, **kwargs):
        super().__init__(frames, detector, **kwargs)
        self.queue_runs = max(1, int(queue_runs))
        self.runs_alive = self.queue_runs + 2  # waiting, the tracker's, and the one being decoded and detected

    def __iter__(self) -> Iterator[FramePeople]:
        self._start()
        stream = detection_stream(self.detector)
        runs = ((pending, self._detect_on(stream, pending)) for pending in self._detection_batches())
        for pending, detections in ahead_in_thread(runs, max_ahead=self.queue_runs, name="detect"):
            yield from self._track(pending, detections)
            del pending, detections  # the run's frames go before the next run is taken
        self._finished = True

    def _detect_on(self, stream: torch.cuda.Stream | None, pending: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
        """The scheduled frames' detections, their GPU work queued on ``stream`` (None: the current one)."""
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            return self._detect_scheduled(pending)  # ends with the boxes on the host: the stream is done


def detection_stream(detector: Detector) -> torch.cuda.Stream | None:
    """A CUDA stream of its own for a detector on a GPU, so that YOLOv3 runs beside the backbone's
    work on the default stream; None on a CPU."""
    device = getattr(detector, "device", None)
    if device is None or torch.device(device).type != "cuda":
        return None
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))  # the detector's weights, made ready on the default one
    return stream


def stream_people_staged(
    frames: Iterable,
    detector: Detector,
    *,
    detection_stride: int = 1,
    adaptive_detection: bool = False,
    progress: Callable | None = None,
) -> StagedPeopleStream:
    """:func:`~vibe_server.pipeline.people.stream_people` with the stages overlapping."""
    return StagedPeopleStream(
        frames, detector, detection_stride=detection_stride, adaptive_detection=adaptive_detection, progress=progress
    )
