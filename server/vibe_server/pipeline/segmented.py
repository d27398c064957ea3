"""One long video on several devices at once, with the result of a one-device run.

    output = run_across_devices([engine_gpu0, engine_gpu1], "long.mp4", options)

The video is cut into as many consecutive segments as there are engines, one per engine's device.
The heavy work that does not depend on earlier frames runs on all devices at once; the light work
that does runs once, in order:

1. detect (all devices): each decodes its segment and detects its scheduled frames (every Nth);
2. track (in order, on the host): SORT over the whole video with those detections; with adaptive
   detection the video is decoded once more here and a trigger detects on the first device, on
   the spot, exactly as a one-device run would;
3. crop + backbone (all devices): each decodes its segment again and runs ResNet-50 on the crops
   of the kept tracks there;
4. temporal: each track's GRU chunks (the very chunks of a one-device run) run on the device of
   the segment where they start, the GRU state handed over from device to device.

So tracks, frames and boxes equal a one-device run's, and the poses do up to the devices'
arithmetic. Each device decodes only its own segment, jumping straight to its start; the cuts sit
where a jump costs least (just after a keyframe, see ``VideoReader.jump_targets``) where the video
has such frames near the even cuts. A jump is trusted only once checked: the segment before a cut
decodes one frame past it, and both decoders must have seen the same frame there (timestamp and
pixels); a segment whose jump missed is decoded again from the video's first frame, which is always
exact. The second pass over a segment jumps again, and must land on the frame the first did.

While the segments run, the run's own thread waits for them: it reports their frames as progress
and checks for a cancel; the first error (or a cancel, or Ctrl-C) stops every segment at its next
frame (a frame it drops on its way to its start included) and is raised at once, and the segments'
threads are gone before the run returns.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch

from vibe_blender.core.errors import VibeError

from .engine import (
    DeviceStageMonitor,
    Engine,
    RunOutput,
    check_long_enough,
    naming_out_of_memory,
    no_frames_error,
    select_tracks,
)
from .options import RunOptions
from .people import DetectionSchedule, with_frames_ahead
from .progress import STAGES, ProgressFn, StageMonitor, TimedDetector, TimedReader
from .track import TrackletCollector
from .video import VideoSegment

# A cut moves to the nearest cheap jump target when that is at most this share of a segment away.
JUMP_REACH = 0.25


def segment_bounds(frame_count: int, parts: int, jump_targets: Sequence[int] = ()) -> list[tuple[int, int]]:
    """[start, stop) of ``parts`` consecutive segments of near-equal length covering the frames,
    each cut moved onto the nearest of ``jump_targets`` within reach (see JUMP_REACH)."""
    edges = np.linspace(0, frame_count, parts + 1).round().astype(int).tolist()
    reach = JUMP_REACH * frame_count / parts
    for k in range(1, parts):
        nearest = min(jump_targets, key=lambda frame: abs(frame - edges[k]), default=edges[k])
        if abs(nearest - edges[k]) <= reach and edges[k - 1] < nearest < edges[k + 1]:
            edges[k] = nearest
    return list(zip(edges[:-1], edges[1:]))


def run_across_devices(
    engines: Sequence[Engine],
    video_path: str | Path,
    options: RunOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    video_name: str | None = None,
) -> RunOutput:
    """:meth:`Engine.run` with the work divided among ``engines`` (one per device, the same model)."""
    return naming_out_of_memory(
        lambda: _run_across_devices(
            engines, video_path, options, progress=progress, should_cancel=should_cancel, video_name=video_name
        )
    )


def _run_across_devices(
    engines: Sequence[Engine],
    video_path: str | Path,
    options: RunOptions | None,
    *,
    progress: ProgressFn | None,
    should_cancel: Callable[[], bool] | None,
    video_name: str | None,
) -> RunOutput:
    if not engines:
        raise VibeError("Running across devices needs at least one engine.")
    if len(engines) == 1:
        return engines[0].run(
            video_path, options, progress=progress, should_cancel=should_cancel, video_name=video_name
        )
    options = options or RunOptions()
    options.validate()
    options = options.effective()
    lead = engines[0]
    monitor = DeviceStageMonitor(progress, should_cancel)
    t_start = time.perf_counter()
    reader = lead.open_video(video_path)
    info = reader.info
    video_name = video_name or info.name
    check_long_enough(info.frame_count, options, video_name)
    for engine in engines:
        engine.prepare_run(options, expected_crops=int(info.frame_count or 0) // len(engines))
    bounds = segment_bounds(int(info.frame_count), len(engines), reader.jump_targets())
    frame_count = max(1, int(info.frame_count or 0))
    # the segments' threads stop at their next frame once ``stop`` is set: an error in one of
    # them, a cancel or Ctrl-C; the pool is shut down whatever happens, its threads gone
    stop = threading.Event()

    def open_segment(start: int, end: int | None, *, seek: bool = True) -> VideoSegment:
        """A segment whose decode gives up at its next frame once ``stop`` is set."""
        return reader.segment(start, end, seek=seek, stopped=stop.is_set)

    clocks: list[StageMonitor] = []  # the seconds of each segment's job per stage (only counted: no progress)

    def clock() -> StageMonitor:
        clocks.append(StageMonitor(None, None))
        return clocks[-1]

    pool = ThreadPoolExecutor(len(engines), thread_name_prefix="segment")
    segments_at_once = _SegmentRunner(pool, stop, monitor, frame_count)
    try:
        # 1. detect the scheduled frames of every segment, all devices at once; then check the cuts
        # in order (a segment decoded again is what the next cut is checked against)
        monitor.report("detect", "stream", 0.0, force=True)
        with monitor.stage("detect"):
            spans = [*bounds[:-1], (bounds[-1][0], None)]  # the last one to the end, whatever the header says
            segments = [open_segment(*span) for span in spans]  # each decodes with a capture of its own
            jobs = [(engine, segment, options, clock()) for engine, segment in zip(engines, segments)]
            parts = segments_at_once(_detect_segment, jobs, "detect", _PROGRESS["detect"])
            for k in range(1, len(segments)):
                if not segments[k].continues(segments[k - 1]):
                    segments[k] = open_segment(*spans[k], seek=False)
                    job = (engines[k], segments[k], options, clock())
                    parts[k] = segments_at_once(_detect_segment, [job], "detect", _PROGRESS["detect"])[0]
        _share_out(monitor, "detect", clocks)
        scheduled = {index: dets for part in parts for index, dets in part.items()}
        frames_decoded = sum(segment.decoded for segment in segments)
        reader.check_complete(frames_decoded)  # a truncated video: the warning, and the frames that decoded
        if frames_decoded == 0:
            raise no_frames_error(video_name)
        monitor.check_cancel()

        # 2. track over the whole video, in order
        with monitor.stage("track"):
            schedule = DetectionSchedule(
                lead.detector(options.detector, compiled=options.compile_detector, official=options.official),
                options.detection_stride,
                adaptive_detection=options.adaptive_detection,
            )
            collector = TrackletCollector()
            # adaptive triggers look at the frames (and an on-the-spot detection at the frames ahead);
            # fixed-stride tracking needs only the detections
            frames = reader if options.adaptive_detection else ((i, None) for i in range(frames_decoded))
            hold = schedule.frames_to_hold_ahead() if schedule.triggers is not None else 0  # nothing to detect ahead
            lo, hi = _PROGRESS["track"]
            for index, frame_rgb, upcoming in with_frames_ahead(frames, hold):
                monitor.check_cancel()
                dets = scheduled.get(index) if schedule.scheduled(index) else None
                collector.add(index, schedule.step(index, frame_rgb, dets, upcoming))
                monitor.report("track", "stream", lo + (hi - lo) * min(1.0, index / frame_count))
            tracklets = collector.tracklets(min_track_frames=1)
            kept, track_warnings = select_tracks(
                {tid: len(t.frames) for tid, t in tracklets.items()}, options, video_name
            )
        monitor.check_cancel()

        # 3. crops and backbone, all devices at once
        boxes_at: dict[int, list[tuple[int, np.ndarray]]] = {}
        for tid in kept:
            for frame_index, box in zip(tracklets[tid].frames.tolist(), tracklets[tid].bboxes):
                boxes_at.setdefault(frame_index, []).append((tid, box))
        monitor.report("backbone", "stream", _PROGRESS["backbone"][0], force=True)
        with monitor.stage("backbone"):
            features = {}
            again = [open_segment(segment.start, segment.stop, seek=segment.seek) for segment in segments]
            jobs = [(engine, segment, options, boxes_at, clock()) for engine, segment in zip(engines, again)]
            for part in segments_at_once(_features_segment, jobs, "backbone", _PROGRESS["backbone"]):
                features.update(part)
            for k, (first, second) in enumerate(zip(segments, again)):
                if second.head != first.head:  # this jump missed where the first one landed: decode exactly
                    exact = open_segment(first.start, first.stop, seek=False)
                    job = (engines[k], exact, options, boxes_at, clock())
                    features.update(segments_at_once(_features_segment, [job], "backbone", _PROGRESS["backbone"])[0])
        _share_out(monitor, "backbone", clocks)
        monitor.report("backbone", "stream", 1.0, force=True)  # (the last one may be throttled)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)

    # 4. the temporal model, chunk by chunk on the device of the chunk's segment
    starts = [start for start, _ in bounds]
    tracks = [
        (
            tid,
            tracklets[tid].frames.tolist(),
            list(tracklets[tid].bboxes),
            np.stack([features[(tid, f)] for f in tracklets[tid].frames.tolist()]),
        )
        for tid in kept
    ]
    return lead.finish_run(
        tracks,
        info=info,
        options=options,
        video_name=video_name,
        detector_name=lead.resolve_detector_name(options.detector),
        monitor=monitor,
        t_start=t_start,
        frames_decoded=frames_decoded,
        crops=len(features),
        warnings=[*reader.warnings, *track_warnings],
        engine_for_frame=lambda frame: engines[bisect.bisect_right(starts, frame) - 1],
    )


def _share_out(monitor: StageMonitor, step: str, clocks: list[StageMonitor]) -> None:
    """Splits the wall time of a step that the segments ran at once (counted as ``step``) among the stages
    their jobs spent it in (decode, detect, crop, backbone), in proportion to those jobs' seconds added up:
    the stages' times then add up to the wall time, as a one-device run's do. The clocks are emptied."""
    busy = {stage: sum(clock.timings_s[stage] for clock in clocks) for stage in STAGES}
    clocks.clear()
    total = sum(busy.values())
    if total > 0:
        wall, monitor.timings_s[step] = monitor.timings_s[step], 0.0
        for stage, seconds in busy.items():
            monitor.timings_s[stage] += wall * seconds / total


# each heavy step's share of the stream phase's progress bar (the segments' frames done, together)
_PROGRESS = {"detect": (0.0, 0.4), "track": (0.4, 0.5), "backbone": (0.5, 1.0)}
POLL_S = 0.1  # how often the run's thread looks for a cancel and reports progress while segments run


class _SegmentRunner:
    """Runs one step on several segments at once, on the pool's threads, while the run's thread
    waits: it reports the frames done as progress, checks for a cancel, and on the first error (or a
    cancel, or Ctrl-C in the run's thread) sets ``stop``, which every segment's decode asks before
    each frame (then it raises video.DecodeStopped), and raises it at once.

    A step's progress never goes back: a segment decoded again (its jump missed) counts its frames
    from 0 once more, and the bar holds where it stands until they pass it."""

    def __init__(self, pool: ThreadPoolExecutor, stop: threading.Event, monitor: StageMonitor, frame_count: int):
        self.pool, self.stop, self.monitor, self.frame_count = pool, stop, monitor, frame_count
        self.reached: dict[str, float] = {}  # per step: the largest share of its frames reported

    def __call__(self, step: Callable, jobs: list[tuple], stage: str, span: tuple[float, float]) -> list:
        """``step(*job, advance=...)`` for each job at once -> their results in order."""
        frames_done = [0] * len(jobs)

        def run(k: int, job: tuple):
            def advance(frames: int) -> None:
                frames_done[k] += frames  # (each segment its own counter)

            return step(*job, advance=advance)

        futures = [self.pool.submit(run, k, job) for k, job in enumerate(jobs)]
        try:
            error = self._wait(futures, frames_done, stage, span)
        except BaseException:  # a cancel, or Ctrl-C in the run's thread
            self.stop.set()  # the segments end at their next frame
            raise
        if error is not None:
            self.stop.set()
            # The error's traceback holds this frame, which must not hold the error in turn (through
            # the futures): such a cycle keeps the failed step's memory, a GPU's tensors, alive until
            # the garbage collector runs, past the out-of-memory path's handing back of the cache.
            futures = None
            try:
                raise error
            finally:
                error = None
        return [future.result() for future in futures]

    def _wait(self, futures: list, frames_done: list[int], stage: str, span: tuple[float, float]):
        """Waits for the ``futures``, reporting their frames done as progress and checking for a
        cancel -> the first error of one (None once all are done)."""
        lo, hi = span
        running = set(futures)
        while running:
            done, running = wait(running, timeout=POLL_S, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                return failed.exception()
            self.monitor.check_cancel()
            fraction = max(self.reached.get(stage, 0.0), min(1.0, sum(frames_done) / self.frame_count))
            self.reached[stage] = fraction
            self.monitor.report(stage, "stream", lo + (hi - lo) * fraction)
        return None


def _detect_segment(
    engine: Engine,
    segment: VideoSegment,
    options: RunOptions,
    clock: StageMonitor,
    *,
    advance: Callable[[int], None],
) -> dict[int, np.ndarray]:
    """One segment on one engine -> {frame index: detections} of its scheduled frames (``clock``: the
    seconds spent decoding and detecting)."""
    detector = engine.detector(options.detector, compiled=options.compile_detector, official=options.official)
    detector = TimedDetector(detector, clock)
    batch_size = max(1, int(getattr(detector, "batch_size", 1)))
    found: dict[int, np.ndarray] = {}
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        for (index, _), dets in zip(pending, detector.detect([frame for _, frame in pending]), strict=True):
            found[index] = dets
        pending.clear()

    for index, frame_rgb in TimedReader(segment, clock):  # (DecodeStopped once the run stops)
        advance(1)
        if index % options.detection_stride == 0:
            pending.append((index, frame_rgb))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return found


def _features_segment(
    engine: Engine,
    segment: VideoSegment,
    options: RunOptions,
    boxes_at: dict,
    clock: StageMonitor,
    *,
    advance: Callable[[int], None],
) -> dict[tuple[int, int], np.ndarray]:
    """One segment on one engine -> {(track id, frame index): backbone features (2048,)} (``clock``: the
    seconds spent decoding, cropping and in the backbone)."""
    crop_frames, group_frames = engine.crop_function(options)
    features: dict[tuple[int, int], np.ndarray] = {}
    keys: list[tuple[int, int]] = []
    crops: list[torch.Tensor] = []
    frames: list[np.ndarray] = []  # frames waiting to be cropped together, with their boxes
    boxes: list[np.ndarray] = []

    def crop() -> None:
        with clock.stage("crop"):
            crops.append(crop_frames(frames, boxes))
        frames.clear()
        boxes.clear()

    def flush() -> None:
        if frames:
            crop()
        with clock.stage("backbone"):
            extracted = engine.extract_features(torch.cat(crops))
        for key, feature in zip(keys, extracted, strict=True):
            features[key] = feature
        keys.clear()
        crops.clear()

    for index, frame_rgb in TimedReader(segment, clock):  # (DecodeStopped once the run stops)
        advance(1)
        people = boxes_at.get(index)
        if not people:
            continue
        frames.append(frame_rgb)
        boxes.append(np.stack([box for _, box in people]))
        keys.extend((tid, index) for tid, _ in people)
        if len(frames) == group_frames:
            crop()
        if len(keys) >= engine.batch_size:
            flush()
    if keys:
        flush()
    return features
