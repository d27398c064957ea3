"""The online pipeline: one frame in, the people in it out, as the frames arrive.

    session = LiveSession(engine, LiveOptions(), width=W, height=H)
    for frame in source:                                    # pipeline.live_source.LiveSource
        people = session.process(frame.index, frame.rgb, frame.time_s)     # [LivePerson, ...]

Per frame: detect (every ``detection_stride`` processed frames, and with adaptive detection
wherever the tracker's boxes may be wrong, as offline: ``people.DetectionSchedule``) or carry the
boxes with the tracker's prediction, crop each tracked person, ResNet-50 on the crops together, then
one step of the temporal GRU per person with that person's state carried from their previous frame,
the regressor, and the cameras and root translation of the offline result file. VIBE's GRU is unidirectional, so with no
frame dropped and no smoothing this gives exactly the offline pipeline's "carry" results; smoothing
here is causal (``smooth.CausalRotationFilter``). Every person is reported from their first tracked
frame (the offline pipeline drops tracks shorter than ``min_track_frames`` afterwards).

``LiveRecording`` keeps what was sent, frame by frame, and turns it into the standard result file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from vibe_blender.core.errors import VibeError
from vibe_blender.core.keyed_rows import KeyedRows
from vibe_blender.core.live_client import MAX_RECORDED_FRAMES
from vibe_blender.core.result_file import (
    FPS_RANGE,
    MAX_FRAME_ID,
    MAX_TRACKS,
    WARNINGS_META_KEY,
    MocapResult,
    VideoInfo,
    longest_track_ids,
)

from . import postprocess
from .crop import crop_people
from .live_options import LiveOptions
from .people import DetectionSchedule
from .smooth import CausalRotationFilter
from .track import xyxy_to_square_cxcywh

if TYPE_CHECKING:
    from .engine import Engine
    from .live_source import LiveFrame, LiveSource

FORGET_AFTER_FRAMES = 30  # a person unseen this long starts a fresh GRU state if seen again


@dataclass(frozen=True)
class LivePerson:
    """One person at one frame, as streamed to the client."""

    track_id: int
    frame_index: int
    frame_time_s: float  # when the frame arrived (source clock, seconds)
    latency_s: float  # arrival -> result
    pose: np.ndarray  # (72,) axis-angle, SMPL joint order
    betas: np.ndarray  # (10,)
    trans_cam_m: np.ndarray  # (3,) root translation, camera frame (x right, y down, z forward)
    orig_cam: np.ndarray  # (4,) [sx, sy, tx, ty]
    pred_cam: np.ndarray  # (3,) crop camera
    bbox: np.ndarray  # (4,) [cx, cy, w, h] pixels
    joints3d: np.ndarray  # (49, 3)

    def to_json(self) -> dict:
        return {
            "track_id": self.track_id,
            "frame_index": self.frame_index,
            "frame_time_s": self.frame_time_s,
            "latency_s": round(self.latency_s, 5),
            "pose": _floats(self.pose),
            "betas": _floats(self.betas),
            "trans_cam_m": _floats(self.trans_cam_m),
            "orig_cam": _floats(self.orig_cam),
            "bbox": _floats(self.bbox),
        }


def _floats(array: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in np.asarray(array).ravel()]


@dataclass
class _PersonState:
    gru_state: object  # (2, 1, 1024) torch tensor of this person's GRU
    last_frame: int
    smoother: CausalRotationFilter | None


class LiveSession:
    """The online pipeline for one source (not thread-safe: one consumer thread calls ``process``)."""

    def __init__(self, engine: Engine, options: LiveOptions, *, width: int, height: int) -> None:
        options.validate()
        self.engine, self.options = engine, options
        self.width, self.height = int(width), int(height)
        self.focal_px = options.focal_px or postprocess.default_focal_length_px(width, height)
        self.schedule = DetectionSchedule(
            engine.detector(options.detector, precision=engine.default_precision),
            options.detection_stride,
            adaptive_detection=options.adaptive_detection,
        )
        self.detector_name = engine.resolve_detector_name(options.detector)
        # what the user should know of the session (printed, sent to clients, kept in a recording)
        self.warnings = engine.detector_warnings(options.detector, self.detector_name)
        self.frames_processed = 0
        self.people_left_out = 0  # person-frames whose values a result file cannot hold (_leave_out)
        self._people: dict[int, _PersonState] = {}

    def process(self, frame_index: int, frame_rgb: np.ndarray, frame_time_s: float) -> list[LivePerson]:
        """frame (H, W, 3) uint8 RGB -> the people tracked in it."""
        boxes = self._track(frame_rgb)
        self.frames_processed += 1
        self._forget_old(frame_index)  # before any return: a long stretch with nobody tracked counts too
        if not boxes:
            return []
        track_ids = [track_id for track_id, _ in boxes]
        bboxes = np.stack([bbox for _, bbox in boxes])
        # eager in the engine's default precision, whatever the job beside it chose for its run
        features = self.engine.extract_features(crop_people(frame_rgb, bboxes), run_settings=False)  # (K, 2048)
        theta, joints3d = self._temporal_step(track_ids, features, frame_index)
        orig_cam = postprocess.crop_cam_to_orig_cam(theta[:, :3], bboxes, self.width, self.height)
        trans = postprocess.trans_cam_from_orig_cam(orig_cam, self.width, self.focal_px)
        done_s = time.monotonic()
        people = []
        for k, track_id in enumerate(track_ids):
            pose = theta[k, 3:75]
            smoother = self._people[track_id].smoother
            if smoother is not None:
                pose = smoother(frame_time_s, pose)
            people.append(
                LivePerson(
                    track_id,
                    int(frame_index),
                    float(frame_time_s),
                    done_s - frame_time_s,
                    pose,
                    theta[k, 75:85],
                    trans[k].astype(np.float32),
                    orig_cam[k].astype(np.float32),
                    theta[k, :3],
                    bboxes[k].astype(np.float32),
                    joints3d[k],
                )
            )
        refused = _refused(people)
        return self._leave_out(people, refused, frame_index) if refused.any() else people

    def _leave_out(self, people: list[LivePerson], refused: np.ndarray, frame_index: int) -> list[LivePerson]:
        """``people`` without the ``refused`` ones: a client refuses a whole frame with such a person in
        it, and a recording holding one would not open. Counted (``people_left_out``), with one warning.
        A person whose values were not finite starts afresh at their next frame: their GRU state and
        smoother hold the NaN."""
        if not self.people_left_out:
            self.warnings.append(
                f"People with {postprocess.REFUSED_VALUES} are left out of the frames they have them in, in the "
                f"stream and in a recording (the first at frame {frame_index}); the stats count them "
                "(people_left_out)."
            )
        self.people_left_out += int(refused.sum())
        for person in (p for p, is_refused in zip(people, refused, strict=True) if is_refused):
            values = (person.pose, person.betas, person.pred_cam, person.joints3d)
            if not all(np.isfinite(v).all() for v in values):
                del self._people[person.track_id]
        return [p for p, is_refused in zip(people, refused, strict=True) if not is_refused]

    def _track(self, frame_rgb: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Detect or carry; -> [(track_id, square bbox (4,) cxcywh)] of at most max_people people.
        The schedule counts processed frames (dropped ones never reach the tracker)."""
        reported = self.schedule.step(self.frames_processed, frame_rgb)
        if len(reported) == 0:
            return []
        squares = xyxy_to_square_cxcywh(reported)
        order = np.argsort(-squares[:, 2], kind="stable")[: self.options.max_people]  # largest first
        return sorted((int(reported[i, 4]), squares[i]) for i in order)

    def _temporal_step(self, track_ids: list[int], features: np.ndarray, frame_index: int):
        """features (K, 2048) of K people -> theta (K, 85), joints3d (K, 49, 3): one GRU step each,
        from the state each person had at their previous frame (all K in one batch)."""
        engine = self.engine
        hidden = engine.model.encoder.gru.hidden_size
        layers = engine.model.encoder.gru.num_layers
        zero = torch.zeros(layers, 1, hidden, device=engine.device)
        h0 = torch.cat([self._people[t].gru_state if t in self._people else zero for t in track_ids], dim=1)
        x = torch.as_tensor(features, dtype=torch.float32, device=engine.device)[:, None]  # (K, 1, 2048)
        with torch.inference_mode():
            out = engine.model.forward_features(x, h0=h0)
        for k, track_id in enumerate(track_ids):
            state = self._people.get(track_id)
            if state is None:
                smoother = CausalRotationFilter(self.options.smoothing) if self.options.smoothing > 0 else None
                state = self._people[track_id] = _PersonState(None, frame_index, smoother)
            state.gru_state = out["gru_state"][:, k : k + 1].clone()
            state.last_frame = frame_index
        return out["theta"][:, 0].float().cpu().numpy(), out["kp_3d"][:, 0].float().cpu().numpy()

    def _forget_old(self, frame_index: int) -> None:
        for track_id in [t for t, s in self._people.items() if frame_index - s.last_frame > FORGET_AFTER_FRAMES]:
            del self._people[track_id]


def _refused(people: list[LivePerson]) -> np.ndarray:
    """(K,) bool: the people holding a value a result file cannot hold (postprocess.refused_rows)."""

    def stacked(name: str) -> np.ndarray:
        return np.stack([getattr(person, name) for person in people])

    return postprocess.refused_rows(
        np.zeros(len(people), np.int64),  # (the frame index is the recording's to bound: LiveRecording.full)
        stacked("betas"),
        pose=stacked("pose"),
        pred_cam=stacked("pred_cam"),
        orig_cam=stacked("orig_cam"),
        bboxes=stacked("bbox"),
        joints3d=stacked("joints3d"),
        trans_cam_m=stacked("trans_cam_m"),
    )


# A recording is saved at the rate its frames came at, measured over the recording, where that is more
# than RATE_TOLERANCE off the rate the source states (a camera stating 30 frames/s that sends 15 in low
# light; a stream stating none): at the stated rate it would play at the wrong speed. Over less than
# RATE_MEASURED_OVER_S a few frames' jitter could outweigh the difference: the stated rate is kept.
RATE_TOLERANCE = 0.02
RATE_MEASURED_OVER_S = 2.0

# A recorded row, one person at one frame: theta [pred_cam (3) | pose (72) | betas (10)] | bbox (4) | joints3d (49, 3)
_THETA, _BBOX, _JOINTS = slice(0, 85), slice(85, 89), slice(89, 89 + 49 * 3)
ROW_WIDTH = _JOINTS.stop


@dataclass
class LiveRecording:
    """What a live session sent, kept to write the standard result file when recording stops: per
    person and frame only what the file needs (944 bytes of float32), in chunks shared by all people;
    the file's frame ids are the source's, at the rate the frames came at (:attr:`frame_rate`).
    At most ``MAX_RECORDED_FRAMES`` rows (person-frames, as the add-on's recordings), and frames of the
    source up to ``MAX_FRAME_ID`` (a result file's frame ids): then ``full`` and ``add`` keeps what it
    has."""

    name: str
    fps: float
    width: int
    height: int
    focal_px: float
    model_name: str
    full: bool = False
    _rows: KeyedRows = field(default_factory=lambda: KeyedRows(ROW_WIDTH))
    # (frame index, frame time) of the first and the last frame recorded: the rate the frames came at
    _first_frame: tuple[int, float] | None = None
    _last_frame: tuple[int, float] | None = None

    def add(self, people: list[LivePerson]) -> bool:
        """Record one frame's people; False (and ``full``) once a frame no longer fits."""
        if self.rows + len(people) > MAX_RECORDED_FRAMES or any(p.frame_index > MAX_FRAME_ID for p in people):
            self.full = True
            return False
        for person in people:
            values = self._rows.add(person.track_id, person.frame_index)
            values[0:3], values[3:75], values[75:85] = person.pred_cam, person.pose, person.betas
            values[_BBOX], values[_JOINTS] = person.bbox, np.asarray(person.joints3d).ravel()
        if people:
            self._first_frame = self._first_frame or (people[0].frame_index, people[0].frame_time_s)
            self._last_frame = (people[0].frame_index, people[0].frame_time_s)
        return True

    @property
    def frame_rate(self) -> float:
        """The recording's frames/s: the rate its frames came at (source frames, dropped ones too, over
        the time between the first and the last frame recorded) where it is more than RATE_TOLERANCE off
        the stated ``fps``; the stated one otherwise, and for a recording too short to measure it."""
        if self._first_frame is None:
            return self.fps
        (first_index, first_time), (last_index, last_time) = self._first_frame, self._last_frame
        if last_time - first_time < RATE_MEASURED_OVER_S:
            return self.fps
        measured = (last_index - first_index) / (last_time - first_time)
        if abs(measured - self.fps) <= RATE_TOLERANCE * self.fps or not FPS_RANGE[0] <= measured <= FPS_RANGE[1]:
            return self.fps
        return round(measured, 3)

    @property
    def rows(self) -> int:
        """Person-frames recorded."""
        return self._rows.count

    def _recorded_keys(self) -> np.ndarray:
        return self._rows.keys()

    @property
    def frames_recorded(self) -> int:
        return len(np.unique(self._recorded_keys()[:, 1]))

    def result(self, *, frames_seen: int, dropped: int, warnings: list[str] = ()) -> MocapResult:
        """The result file's content: one track per person, one row per frame they were streamed in;
        ``warnings``: what the user should know of it, as a video's result keeps them."""
        keys = self._recorded_keys()
        tracks = []
        rows_of = self._rows.by_track().rows_of()  # each track's rows in the order recorded: frame order
        kept, too_many = longest_track_ids({track_id: len(rows) for track_id, rows in rows_of.items()}, MAX_TRACKS)
        warnings = [*warnings, *too_many]
        refused = 0  # rows a result file cannot hold (the session left out all but a rounding's worth)
        for track_id in kept:
            rows = rows_of[track_id]
            values = self._rows.values_at(rows)
            track = postprocess.build_track(
                track_id,
                keys[rows, 1],
                values[:, _THETA],
                values[:, _JOINTS].reshape(-1, 49, 3),
                values[:, _BBOX],
                width=self.width,
                height=self.height,
                focal_px=self.focal_px,
            )
            refused += len(rows) - (track.num_frames if track is not None else 0)
            if track is not None:
                tracks.append(track)
        if refused:
            warnings.append(postprocess.refused_rows_warning(refused))
        return MocapResult(
            video=VideoInfo(
                name=self.name,
                fps=float(self.frame_rate),  # so that it plays at real speed
                width=self.width,
                height=self.height,
                frame_count=int(frames_seen),
            ),
            tracks=tracks,
            model_name=self.model_name,
            focal_length_px=float(self.focal_px),
            meta={
                "source": "live",
                "frames_dropped": str(int(dropped)),
                **({WARNINGS_META_KEY: "\n".join(warnings)} if warnings else {}),
            },
        )


@dataclass
class LiveStats:
    """Figures of a running session: frames/s over the last second, latency percentiles, drops."""

    frames_processed: int = 0
    frames_arrived: int = 0
    frames_dropped: int = 0
    people_left_out: int = 0  # person-frames whose values a result file cannot hold
    fps: float = 0.0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    _latencies: list[float] = field(default_factory=list)
    _recent: list[float] = field(default_factory=list)

    def add(self, arrived_s: float, done_s: float) -> None:
        self.frames_processed += 1
        self._latencies.append(done_s - arrived_s)
        self._latencies = self._latencies[-2000:]  # bounded: the last 2000 frames
        self._recent = [t for t in self._recent if done_s - t < 1.0] + [done_s]
        self.fps = float(len(self._recent))
        self.latency_p50_s, self.latency_p95_s = (float(v) for v in np.percentile(self._latencies, [50, 95]))

    def to_json(self) -> dict:
        return {
            "frames_processed": self.frames_processed,
            "frames_arrived": self.frames_arrived,
            "frames_dropped": self.frames_dropped,
            "people_left_out": self.people_left_out,
            "fps": round(self.fps, 2),
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
        }


def run_live(
    source: LiveSource,
    session: LiveSession,
    *,
    on_frame: Callable[[LiveFrame, list[LivePerson], LiveStats], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    recording: LiveRecording | None = None,
    max_frames: int | None = None,
) -> LiveStats:
    """Take frames from ``source`` (a started ``LiveSource``) until it ends, ``should_stop()`` or
    ``max_frames`` frames were processed:
    process each, call ``on_frame(frame, people, stats)``, record when asked. The source drops what the
    session cannot keep up with; the stats count it."""
    stats = LiveStats()
    while not (should_stop is not None and should_stop()) and stats.frames_processed != max_frames:
        frame = source.next_frame(timeout_s=0.5)
        if frame is None:
            if source.ended:
                break
            continue
        people = session.process(frame.index, frame.rgb, frame.time_s)
        stats.add(frame.time_s, time.monotonic())
        stats.frames_arrived, stats.frames_dropped = source.arrived, source.dropped
        stats.people_left_out = session.people_left_out
        if recording is not None:
            recording.add(people)
        if on_frame is not None:
            on_frame(frame, people, stats)
    stats.frames_arrived, stats.frames_dropped = source.arrived, source.dropped
    # what the source said once read (a file that breaks off): the session's, so a recording's too
    session.warnings.extend(w for w in source.warnings if w not in session.warnings)
    if source.error:
        raise VibeError(source.error)
    return stats
