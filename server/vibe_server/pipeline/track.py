"""SORT multi-person tracking, as VIBE's tracker runs it, and the tracklets it produces.

SORT (Bewley et al. 2016): one constant-velocity Kalman filter per person over
z = [cx, cy, area, ratio] (state [cx, cy, area, ratio, vx, vy, va]), detections assigned to the
predicted boxes by the Hungarian method on IoU (``scipy.optimize.linear_sum_assignment``).
VIBE's settings: max_age 1, min_hits 3, IoU 0.3. A track is reported at a frame when it was
matched there and has been matched ``min_hits`` frames in a row (or the tracker is in its first
``min_hits`` updates); the reported box is the Kalman estimate, not the raw detection. Frames
without any detection are not given to the tracker at all, so tracks do not age over them.

Unlike the official code, track ids count from 1 per :class:`Sort` instance, not per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

MAX_AGE = 1
MIN_HITS = 3
IOU_THRESHOLD = 0.3
MIN_TRACK_FRAMES = 25  # VIBE drops shorter tracklets


# -- box conversions ----------------------------------------------------------------------------
def bbox_to_z(bbox_xyxy: np.ndarray) -> np.ndarray:
    """bbox (4+,) [x1, y1, x2, y2] -> z (4, 1) float64 [cx, cy, area, ratio w/h].

    Arithmetic as the official code under numpy 1.x: w, h and the area in the box's dtype
    (float32 from the detector), centre and ratio in float64.
    """
    w = bbox_xyxy[2] - bbox_xyxy[0]
    h = bbox_xyxy[3] - bbox_xyxy[1]
    area = w * h
    w64, h64 = np.float64(w), np.float64(h)
    return np.array([[bbox_xyxy[0] + w64 / 2.0], [bbox_xyxy[1] + h64 / 2.0], [area], [w64 / h64]], dtype=np.float64)


def state_to_bbox(x: np.ndarray) -> np.ndarray:
    """Kalman state (7, 1) -> (4,) float64 [x1, y1, x2, y2]."""
    w = np.sqrt(x[2, 0] * x[3, 0])
    h = x[2, 0] / w
    return np.array([x[0, 0] - w / 2.0, x[1, 0] - h / 2.0, x[0, 0] + w / 2.0, x[1, 0] + h / 2.0])


def xyxy_to_square_cxcywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """boxes (N, 4+) [x1, y1, x2, y2] -> (N, 4) float64 [cx, cy, s, s] with s = max(w, h) (VIBE's crop box)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.where(w / h > 1, w, h)
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, side, side], axis=1)


def iou_matrix(dets_xyxy: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """dets (D, 4+), boxes (T, 4+) -> (D, T) float32 IoU (continuous coordinates, as SORT)."""
    a = np.asarray(dets_xyxy, dtype=np.float64)[:, None, :4]
    b = np.asarray(boxes_xyxy, dtype=np.float64)[None, :, :4]
    inter = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None) * np.clip(
        np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None
    )
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inter / (area_a + area_b - inter)).astype(np.float32)


# -- Kalman filter ------------------------------------------------------------------------------
class KalmanBoxTracker:
    """One tracked person: a constant-velocity Kalman filter over [cx, cy, area, ratio].

    Matrices and update equations as filterpy's ``KalmanFilter`` (Joseph-form covariance update),
    with SORT's noise settings.
    """

    F = np.eye(7)
    F[0, 4] = F[1, 5] = F[2, 6] = 1.0
    H = np.eye(4, 7)

    def __init__(self, bbox_xyxy: np.ndarray, track_id: int):
        self.x = np.zeros((7, 1))
        self.x[:4] = bbox_to_z(bbox_xyxy)
        self.R = np.eye(4)
        self.R[2:, 2:] *= 10.0
        self.P = np.eye(7)
        self.P[4:, 4:] *= 1000.0  # initial velocities are unobserved
        self.P *= 10.0
        self.Q = np.eye(7)
        self.Q[-1, -1] *= 0.01
        self.Q[4:, 4:] *= 0.01
        self.track_id = track_id
        self.time_since_update = 0
        self.hits = 0
        self.hit_streak = 0
        self.age = 0

    def kalman_predict(self) -> None:
        """Advance the state one frame (area kept from going negative)."""
        if self.x[6, 0] + self.x[2, 0] <= 0:
            self.x[6] *= 0.0
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + self.Q

    def peek(self) -> np.ndarray:
        """The box one frame ahead (4,) [x1, y1, x2, y2], without changing the state."""
        x = self.x.copy()
        if x[6, 0] + x[2, 0] <= 0:
            x[6] = 0.0
        return state_to_bbox(self.F @ x)

    def predict(self) -> np.ndarray:
        """One SORT step without a match yet -> predicted box (4,) [x1, y1, x2, y2]."""
        self.kalman_predict()
        self.age += 1
        if self.time_since_update > 0:
            self.hit_streak = 0
        self.time_since_update += 1
        return state_to_bbox(self.x)

    def update(self, bbox_xyxy: np.ndarray) -> None:
        """Correct the state with a matched detection [x1, y1, x2, y2, ...]."""
        self.time_since_update = 0
        self.hits += 1
        self.hit_streak += 1
        z = bbox_to_z(bbox_xyxy)
        y = z - self.H @ self.x
        PHT = self.P @ self.H.T
        S = self.H @ PHT + self.R
        K = PHT @ np.linalg.inv(S)
        self.x = self.x + K @ y
        I_KH = np.eye(7) - K @ self.H
        self.P = I_KH @ self.P @ I_KH.T + K @ self.R @ K.T

    def bbox(self) -> np.ndarray:
        """Current estimate (4,) float64 [x1, y1, x2, y2]."""
        return state_to_bbox(self.x)


def associate(
    dets_xyxy: np.ndarray, predicted_xyxy: np.ndarray, iou_threshold: float = IOU_THRESHOLD
) -> tuple[np.ndarray, list[int], list[int]]:
    """dets (K, 4+), predicted (P, 4) [x1, y1, x2, y2] -> (matches (M, 2) [det, track], unmatched det
    indices, unmatched track indices), by Hungarian assignment on IoU.

    Assigned pairs with IoU below the threshold count as unmatched on both sides.
    """
    num_dets, num_tracks = len(dets_xyxy), len(predicted_xyxy)
    if num_tracks == 0 or num_dets == 0:
        return np.empty((0, 2), dtype=int), list(range(num_dets)), list(range(num_tracks))
    iou = iou_matrix(dets_xyxy, predicted_xyxy)
    det_rows, track_cols = linear_sum_assignment(-iou)
    unmatched_dets = [d for d in range(num_dets) if d not in det_rows]
    unmatched_tracks = [t for t in range(num_tracks) if t not in track_cols]
    matches = []
    for d, t in zip(det_rows, track_cols):
        if iou[d, t] < iou_threshold:
            unmatched_dets.append(d)
            unmatched_tracks.append(t)
        else:
            matches.append((d, t))
    return np.array(matches, dtype=int).reshape(-1, 2), unmatched_dets, unmatched_tracks


class Sort:
    """SORT with VIBE's settings. ``update(dets (D, 5) [x1, y1, x2, y2, score])`` once per frame
    that has detections -> (M, 5) float64 [x1, y1, x2, y2, track_id] of the tracks reported there.

    ``coast()`` is for frames on which detection did not run (detection every Nth frame): every
    track moves by its Kalman prediction, and the tracks reported at the last update are reported
    again at their predicted boxes. Matching ages and streaks only change in ``update``.
    """

    def __init__(self, max_age: int = MAX_AGE, min_hits: int = MIN_HITS, iou_threshold: float = IOU_THRESHOLD):
        self.max_age = max_age
        self.min_hits = min_hits
        self.iou_threshold = iou_threshold
        self.trackers: list[KalmanBoxTracker] = []
        self.frame_count = 0
        self._next_id = 1
        self._reported_ids: set[int] = set()
        self._last_found_nobody = False

    def update(self, dets: np.ndarray) -> np.ndarray:
        """dets (K, 5) [x1, y1, x2, y2, score] -> reported tracks (R, 5) [x1, y1, x2, y2, track_id]."""
        self.frame_count += 1
        # 1. predict every track; drop those whose prediction broke down
        predicted = np.array([t.predict() for t in self.trackers]).reshape(-1, 4)
        valid = ~np.isnan(predicted).any(axis=1)
        self.trackers = [t for t, ok in zip(self.trackers, valid) if ok]
        predicted = predicted[valid]
        # 2. assign detections to predictions, correct matched tracks, start new ones
        matches, unmatched_dets, _ = associate(dets, predicted, self.iou_threshold)
        for d, t in matches:
            self.trackers[t].update(dets[d])
        for d in unmatched_dets:
            self.trackers.append(KalmanBoxTracker(dets[d], self._next_id))
            self._next_id += 1
        # 3. report confirmed, just-matched tracks; forget tracks unmatched for over max_age updates
        reported = []
        for tracker in reversed(self.trackers):
            if tracker.time_since_update < 1 and (
                tracker.hit_streak >= self.min_hits or self.frame_count <= self.min_hits
            ):
                reported.append(np.append(tracker.bbox(), tracker.track_id))
        self.trackers = [t for t in self.trackers if t.time_since_update <= self.max_age]
        self._reported_ids = {int(r[4]) for r in reported}
        self._last_found_nobody = False
        return np.array(reported, dtype=np.float64).reshape(-1, 5)

    def coast(self) -> np.ndarray:
        """A frame without detection -> (R, 5) [x1, y1, x2, y2, track_id]: the last reported tracks,
        carried by their Kalman prediction."""
        reported = []
        for tracker in reversed(self.trackers):
            tracker.kalman_predict()
            if tracker.track_id in self._reported_ids:
                reported.append(np.append(tracker.bbox(), tracker.track_id))
        reported = np.array(reported, dtype=np.float64).reshape(-1, 5)
        return reported[~np.isnan(reported).any(axis=1)]

    def skip(self) -> np.ndarray:
        """A detection frame with nothing detected: no tracker update, nothing reported, nothing carried."""
        self._reported_ids = set()
        self._last_found_nobody = True
        return np.empty((0, 5))

    # -- the state, for deciding when to detect again (adaptive_detection.py) -------------------
    def reported_boxes(self) -> np.ndarray:
        """(M, 5) [x1, y1, x2, y2, id]: the current boxes of the tracks reported last."""
        boxes = [np.append(t.bbox(), t.track_id) for t in self.trackers if t.track_id in self._reported_ids]
        boxes = np.array(boxes, dtype=np.float64).reshape(-1, 5)
        return boxes[~np.isnan(boxes).any(axis=1)]

    def predicted_boxes(self) -> np.ndarray:
        """(M, 5) [x1, y1, x2, y2, id]: where the reported tracks will be one frame ahead (no change)."""
        boxes = [np.append(t.peek(), t.track_id) for t in self.trackers if t.track_id in self._reported_ids]
        boxes = np.array(boxes, dtype=np.float64).reshape(-1, 5)
        return boxes[~np.isnan(boxes).any(axis=1)]

    def unsettled(self) -> bool:
        """True when the last detection frame missed a confirmed track (matched min_hits times in
        a row), or found nobody while there is one, or started or matched a track that is not
        confirmed yet. An unconfirmed track that was missed is left alone (a false positive, most
        likely: it ends at the next detection frame)."""
        confirmed = [t for t in self.trackers if t.hit_streak >= self.min_hits]
        if self._last_found_nobody:
            return bool(confirmed)
        return any(t.time_since_update > 0 for t in confirmed) or any(
            t.time_since_update == 0 and t.hit_streak < self.min_hits for t in self.trackers
        )


# -- tracklets ----------------------------------------------------------------------------------
class Tracklet(NamedTuple):
    """One person's track: frames (N,) int64 (increasing, may have gaps), bboxes (N, 4) float64
    [cx, cy, w, h] pixels with w = h = max(w, h)."""

    frames: np.ndarray
    bboxes: np.ndarray


Tracklets = dict[int, Tracklet]


class TrackletCollector:
    """Gathers the per-frame tracker reports into :data:`Tracklets`."""

    def __init__(self):
        self._frames: dict[int, list[int]] = {}
        self._bboxes: dict[int, list[np.ndarray]] = {}

    def add(self, frame_index: int, reported: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """reported (M, 5) [x1, y1, x2, y2, id] at one frame -> [(track_id, bbox (4,) cxcywh)] as stored."""
        if len(reported) == 0:
            return []
        squares = xyxy_to_square_cxcywh(reported)
        boxes = []
        for track_id, bbox in zip(reported[:, 4].astype(int), squares):
            self._frames.setdefault(int(track_id), []).append(int(frame_index))
            self._bboxes.setdefault(int(track_id), []).append(bbox)
            boxes.append((int(track_id), bbox))
        return boxes

    def tracklets(self, min_track_frames: int = MIN_TRACK_FRAMES) -> Tracklets:
        """Tracklets with at least ``min_track_frames`` frames, by track id."""
        return {
            track_id: Tracklet(np.asarray(frames, dtype=np.int64), np.asarray(self._bboxes[track_id]))
            for track_id, frames in sorted(self._frames.items())
            if len(frames) >= min_track_frames
        }


def track_detections(
    detections_per_frame: Sequence[np.ndarray],
    *,
    min_track_frames: int = MIN_TRACK_FRAMES,
    detected: Sequence[bool] | None = None,
) -> Tracklets:
    """detections_per_frame: (K_t, 5) [x1, y1, x2, y2, score] per frame -> tracklets, by SORT over the
    whole video.

    detected: optional sequence of bools, False where detection did not run (the tracker coasts).
    """
    sort, collector = Sort(), TrackletCollector()
    for frame_index, dets in enumerate(detections_per_frame):
        if detected is not None and not detected[frame_index]:
            reported = sort.coast()
        elif len(dets):
            reported = sort.update(np.asarray(dets))
        else:
            reported = sort.skip()
        collector.add(frame_index, reported)
    return collector.tracklets(min_track_frames)
