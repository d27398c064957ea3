"""People in a video: decode -> detect (batched) -> SORT, in one decoding pass.

    tracklets = find_people(open_video(path), make_detector("yolo"))   # {track_id: Tracklet}

or, to crop while tracking so the video is decoded only once::

    people = stream_people(reader, detector)
    for frame_index, frame_rgb, boxes in people:          # boxes: [(track_id, bbox_cxcywh (4,))]
        ...crop each box now...
    tracklets = people.tracklets(min_track_frames=25)     # drop the crops of shorter tracks

With ``detection_stride = N`` detection runs on frames 0, N, 2N, ... and the tracker carries the
boxes over the frames in between with its Kalman prediction (N = 1 is the official behaviour).
With ``adaptive_detection`` it also detects, on the spot, at any frame in between where the
tracker's state says its boxes may be wrong (see :mod:`.adaptive_detection`).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import numpy as np

from vibe_blender.core.errors import VibeError

from .adaptive_detection import DetectionTriggers
from .detect import Detector
from .track import MIN_TRACK_FRAMES, Sort, TrackletCollector, Tracklets, reported_boxes

# Frames a run of the stream holds at most: a run ends at ``detector.batch_size`` scheduled frames
# or at this many frames, whichever comes first, so a long detection stride does not make it hold
# stride x batch frames. The default stride (8) with YOLO's batch (8) fills it exactly.
RUN_FRAMES_MAX = 64
# Bytes of decoded frames the runs alive at once hold at most (the staged front end keeps
# ``queue_runs + 2`` alive): large frames make shorter runs (4K, 24.9 MB a frame: 10 frames a run
# there), but never shorter than RUN_FRAMES_MIN frames, which the budget may then exceed (8K).
RUNS_BYTES_MAX = 1 << 30
RUN_FRAMES_MIN = 4


class FramePeople(NamedTuple):
    """One decoded frame and the tracks reported at it."""

    frame_index: int
    frame_rgb: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: list[tuple[int, np.ndarray]]  # [(track_id, bbox (4,) float64 [cx, cy, w, h], w = h)]


class DetectionSchedule:
    """The tracker, frame by frame: detect on every Nth frame (and, adaptive, wherever the tracker's
    own state says its boxes may be wrong, see :mod:`.adaptive_detection`), else carry the boxes with
    the Kalman prediction. Shared by the offline stream (which detects the scheduled frames in
    batches) and live capture (which detects as the frames come)."""

    def __init__(self, detector: Detector, detection_stride: int = 1, *, adaptive_detection: bool = False):
        self.detector, self.detection_stride = detector, int(detection_stride)
        self.sort = Sort()
        self.triggers = DetectionTriggers() if adaptive_detection and self.detection_stride > 1 else None
        self.extra_detections: Counter[str] = Counter()
        self.frames_detected = 0
        self.tracking_s = 0.0  # seconds in step() not spent detecting: the tracker's own time
        self._detected_ahead: dict[int, np.ndarray] = {}  # frame index -> boxes detected with an earlier trigger
        self.spot_calls = 0  # detector calls made on the spot
        self.spot_frames_sent = 0  # frames those calls carried: the triggered ones and those ahead
        self.spot_s = 0.0  # seconds those calls took

    @property
    def spot_batch_size(self) -> int:
        """How many frames an on-the-spot detection may carry for about the cost of one. The detector
        says, at each call (a compiled one that fell back to eager says 1 from then on)."""
        return max(1, int(getattr(self.detector, "spot_batch_size", 1)))

    def frames_to_hold_ahead(self) -> int:
        """How many frames after a triggered one hold ``spot_batch_size - 1`` unscheduled frames
        (every Nth is scheduled), for a caller that reads frames one by one."""
        wanted = self.spot_batch_size - 1
        return wanted + -(-wanted // max(1, self.detection_stride - 1))

    def scheduled(self, frame_index: int) -> bool:
        """A fixed detection frame (every Nth)."""
        return frame_index % self.detection_stride == 0

    def step(
        self,
        frame_index: int,
        frame_rgb: np.ndarray,
        dets: np.ndarray | None = None,
        upcoming: Iterable[tuple[int, np.ndarray]] = (),
    ) -> np.ndarray:
        """One frame -> the tracks reported there, (M, 5) [x1, y1, x2, y2, track_id]. dets: the
        detections of a scheduled frame when the caller ran them already (batched); else a scheduled
        or triggered frame is detected here. upcoming: the frames that will follow, in order, as
        far as the caller holds them (see :meth:`_detect_on_the_spot`)."""
        t_start, detect_s = time.perf_counter(), 0.0
        if dets is None:
            if self.scheduled(frame_index):
                (dets,), detect_s = self._detect([frame_rgb])
            elif self.triggers is not None:
                reason = self.triggers.reason(frame_index, frame_rgb, self.sort)
                if reason is not None:
                    self.extra_detections[reason] += 1
                    dets, detect_s = self._detect_on_the_spot(frame_index, frame_rgb, upcoming)
        if dets is None:
            reported = self.sort.coast()
        else:
            self.frames_detected += 1
            reported = self.sort.update(dets) if len(dets) else self.sort.skip()
            if self.triggers is not None:
                self.triggers.reference(frame_index, frame_rgb, self.sort)
        self.tracking_s += time.perf_counter() - t_start - detect_s
        return reported

    def _detect_on_the_spot(
        self, frame_index: int, frame_rgb: np.ndarray, upcoming: Iterable[tuple[int, np.ndarray]]
    ) -> tuple[np.ndarray, float]:
        """A triggered frame's detections and the seconds they took now.

        With ``spot_batch_size`` > 1 the call also carries the next unscheduled frames of
        ``upcoming``, and their boxes wait for a trigger there (triggers come in runs: a new track
        needs three matches in a row). A frame's boxes do not depend on the other frames of its
        batch (up to float rounding where a batch of another size takes another kernel), so the
        tracks are those of detecting each triggered frame alone, in fewer calls; boxes found ahead
        for a frame whose trigger does not fire are dropped.
        """
        if frame_index in self._detected_ahead:
            return self._detected_ahead.pop(frame_index), 0.0
        unscheduled = ((index, frame) for index, frame in upcoming if not self.scheduled(index))
        ahead = list(itertools.islice(unscheduled, self.spot_batch_size - 1))
        found, seconds = self._detect([frame_rgb, *(frame for _, frame in ahead)])
        self._detected_ahead = {index: boxes for (index, _), boxes in zip(ahead, found[1:])}  # older ones are past
        self.spot_calls += 1
        self.spot_frames_sent += 1 + len(ahead)
        self.spot_s += seconds
        return found[0], seconds

    def _detect(self, frames_rgb: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """The frames' detections, and the seconds they took."""
        t_start = time.perf_counter()
        found = self.detector.detect(frames_rgb)
        return found, time.perf_counter() - t_start


def with_frames_ahead(frames: Iterable[tuple[int, np.ndarray]], ahead: int) -> Iterator[tuple[int, np.ndarray, tuple]]:
    """``(index, frame)`` pairs -> ``(index, frame, the next `ahead` pairs)``, holding ``ahead + 1``
    frames: the ``upcoming`` of :meth:`DetectionSchedule.step` for frames read one by one."""
    window: deque[tuple[int, np.ndarray]] = deque()
    for pair in frames:
        window.append(pair)
        if len(window) > ahead:
            index, frame = window.popleft()
            yield index, frame, tuple(window)
    while window:
        index, frame = window.popleft()
        yield index, frame, tuple(window)


class PeopleStream:
    """Iterate once over :class:`FramePeople`; afterwards ``tracklets()`` gives the tracks.

    frames: any iterable of ``(frame_index, frame_rgb)`` with consecutive indices from 0
        (a :class:`~vibe_server.pipeline.video.VideoReader`).
    detector: a :class:`~vibe_server.pipeline.detect.Detector`; it gets ``detector.batch_size``
        detection frames per call.
    detection_stride: run detection on every Nth frame only (>= 1).
    adaptive_detection: also detect at frames in between where the tracker may be wrong; the
        extra detections are counted by reason in ``extra_detections``.
    progress: called as ``progress(frames_done, frame_count_or_None)`` after each batch.

    ``keep_tracklets`` (True): record every reported box for ``tracklets()``; a caller that keeps
    its own tracks (the engine) sets it False before iterating, so that memory does not grow with
    the video's length.
    """

    def __init__(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        detector: Detector,
        *,
        detection_stride: int = 1,
        adaptive_detection: bool = False,
        progress: Callable[[int, int | None], None] | None = None,
    ):
        if int(detection_stride) < 1:
            raise VibeError(f"detection_stride must be 1 or more (1 = detect on every frame), got {detection_stride}.")
        self.frames = frames
        self.detector = detector
        self.detection_stride = int(detection_stride)
        self.progress = progress
        self.schedule = DetectionSchedule(detector, self.detection_stride, adaptive_detection=adaptive_detection)
        self.collector = TrackletCollector()
        self.frames_done = 0
        self.runs_alive = 1  # runs of frames held at once (the staged front end holds more)
        self.keep_tracklets = True
        self._finished = False

    # the schedule's figures, under the names callers know
    sort = property(lambda self: self.schedule.sort)
    triggers = property(lambda self: self.schedule.triggers)
    extra_detections = property(lambda self: self.schedule.extra_detections)
    frames_detected = property(lambda self: self.schedule.frames_detected)
    tracking_s = property(lambda self: self.schedule.tracking_s)

    def __iter__(self) -> Iterator[FramePeople]:
        self._start()
        for pending in self._detection_batches():
            yield from self._track(pending, self._detect_scheduled(pending))
            del pending  # the run's frames go before the next run is read
        self._finished = True

    def _start(self) -> None:
        if self.frames_done or self._finished:
            raise RuntimeError("a PeopleStream can be iterated only once")

    def run_frames(self, frame_rgb: np.ndarray) -> int:
        """The most frames a run holds, for frames like ``frame_rgb``: ``RUN_FRAMES_MAX``, fewer where
        the ``runs_alive`` runs would hold more than ``RUNS_BYTES_MAX``, at least ``RUN_FRAMES_MIN``."""
        fitting = RUNS_BYTES_MAX // max(1, self.runs_alive * frame_rgb.nbytes)
        return max(RUN_FRAMES_MIN, min(RUN_FRAMES_MAX, fitting))

    def _detection_batches(self) -> Iterator[list[tuple[int, np.ndarray]]]:
        """The frames in runs that hold ``detector.batch_size`` scheduled detection frames each, or
        ``run_frames`` frames where that comes first (the tracks do not depend on the runs)."""
        batch_size = max(1, int(getattr(self.detector, "batch_size", 1)))
        pending: list[tuple[int, np.ndarray]] = []
        detection_frames = 0
        for frame_index, frame_rgb in self.frames:
            pending.append((frame_index, frame_rgb))
            if frame_index % self.detection_stride == 0:
                detection_frames += 1
            if detection_frames == batch_size or len(pending) >= self.run_frames(frame_rgb):
                yield pending
                pending, detection_frames = [], 0
        if pending:
            yield pending

    def _detect_scheduled(self, pending: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
        """The detections of the run's scheduled frames, in one batch (on the detector's device)."""
        to_detect = [frame for index, frame in pending if self.schedule.scheduled(index)]
        return self.detector.detect(to_detect) if to_detect else []

    def _track(self, pending: list[tuple[int, np.ndarray]], detections: list[np.ndarray]) -> Iterator[FramePeople]:
        """Step the tracker frame by frame, in order, with the scheduled frames' detections."""
        scheduled = iter(detections)
        for position, (frame_index, frame_rgb) in enumerate(pending):
            dets = next(scheduled) if self.schedule.scheduled(frame_index) else None
            upcoming = itertools.islice(pending, position + 1, None)  # read only by an on-the-spot detection
            reported = self.schedule.step(frame_index, frame_rgb, dets, upcoming)
            t_start = time.perf_counter()
            boxes = self.collector.add(frame_index, reported) if self.keep_tracklets else reported_boxes(reported)
            self.schedule.tracking_s += time.perf_counter() - t_start  # the tracks' bookkeeping counts too
            yield FramePeople(frame_index, frame_rgb, boxes)
        self.frames_done += len(pending)
        if self.progress is not None:
            info = getattr(self.frames, "info", None)
            self.progress(self.frames_done, getattr(info, "frame_count", None))

    def tracklets(self, min_track_frames: int = MIN_TRACK_FRAMES) -> Tracklets:
        """{track_id: Tracklet(frames (N,), bboxes (N, 4) cxcywh)} of tracks with >= min_track_frames frames."""
        if not self.keep_tracklets:
            raise RuntimeError("this PeopleStream kept no tracklets (keep_tracklets was False)")
        return self.collector.tracklets(min_track_frames)


def stream_people(
    frames: Iterable,
    detector: Detector,
    *,
    detection_stride: int = 1,
    adaptive_detection: bool = False,
    progress: Callable | None = None,
) -> PeopleStream:
    """frames (H, W, 3) uint8 RGB -> iterator of (frame_index, frame_rgb, [(track_id, bbox (4,) [cx, cy, w, h]),
    ...]): decode, detect and track in one pass.

    See :class:`PeopleStream`; call ``.tracklets(min_track_frames)`` once the iteration is done.
    """
    return PeopleStream(
        frames, detector, detection_stride=detection_stride, adaptive_detection=adaptive_detection, progress=progress
    )


def find_people(
    reader: Iterable,
    detector: Detector,
    *,
    detection_stride: int = 1,
    adaptive_detection: bool = False,
    min_track_frames: int = MIN_TRACK_FRAMES,
    progress: Callable | None = None,
) -> Tracklets:
    """reader (frames), detector -> {track_id: Tracklet(frames (N,) int64, bboxes (N, 4) [cx, cy, w, h])}.

    One decoding pass; tracks shorter than ``min_track_frames`` (official: 25) are dropped.
    """
    people = stream_people(
        reader, detector, detection_stride=detection_stride, adaptive_detection=adaptive_detection, progress=progress
    )
    for _ in people:
        pass
    return people.tracklets(min_track_frames)
