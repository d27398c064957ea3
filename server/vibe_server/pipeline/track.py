"""SORT multi-person tracking, as VIBE's tracker runs it, and the tracklets it produces.

SORT (Bewley et al. 2016): one constant-velocity Kalman filter per person over
z = [cx, cy, area, ratio] (state [cx, cy, area, ratio, vx, vy, va]), detections assigned to the
predicted boxes by the Hungarian method on IoU (``scipy.optimize.linear_sum_assignment``).
The filters of all tracks live in arrays (states (N, 7), covariances (N, 7, 7)) and step together,
with the official code's maths (filterpy's, Joseph-form update); ``tests/reference_sort.py``
is the official per-track structure the tests hold this one to.
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
def boxes_to_z(boxes_xyxy: np.ndarray) -> np.ndarray:
    """boxes (N, 4+) [x1, y1, x2, y2] -> z (N, 4) float64 [cx, cy, area, ratio w/h].

    Arithmetic as the official code under numpy 1.x: w, h and the area in the boxes' dtype
    (float32 from the detector), centre and ratio in float64.
    """
    boxes = np.asarray(boxes_xyxy)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    area = w * h
    w64, h64 = w.astype(np.float64), h.astype(np.float64)
    return np.stack([boxes[:, 0] + w64 / 2.0, boxes[:, 1] + h64 / 2.0, area.astype(np.float64), w64 / h64], axis=1)


def states_to_boxes(x: np.ndarray) -> np.ndarray:
    """Kalman states (N, 7+) -> (N, 4) float64 [x1, y1, x2, y2]."""
    w = np.sqrt(x[:, 2] * x[:, 3])
    half = np.empty((len(x), 2))
    half[:, 0], half[:, 1] = w / 2.0, x[:, 2] / w / 2.0
    return np.concatenate([x[:, :2] - half, x[:, :2] + half], axis=1)


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
    inter_w = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_h = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inter / (area_a + area_b - inter)).astype(np.float32)


# -- Kalman filters, all tracks at once ---------------------------------------------------------
F = np.eye(7)  # constant velocity: [cx, cy, area] += [vx, vy, va]
F[0, 4] = F[1, 5] = F[2, 6] = 1.0
R = np.diag([1.0, 1.0, 10.0, 10.0])  # measurement noise (SORT's)
Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])  # process noise (SORT's)
P0 = np.diag([10.0, 10.0, 10.0, 10.0, 10000.0, 10000.0, 10000.0])  # initial velocities are unobserved
_I7 = np.eye(7)


def predict_states(x: np.ndarray) -> np.ndarray:
    """States (N, 7) one frame ahead, x' = F x (an area shrinking below zero stops)."""
    x = x.copy()
    x[x[:, 6] + x[:, 2] <= 0, 6] *= 0.0
    x[:, :3] += x[:, 4:]
    return x


def kalman_predict(x: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """States (N, 7), covariances (N, 7, 7) one frame ahead: x' = F x, P' = F P F^T + Q, with F's
    products written out as the additions they are."""
    x = predict_states(x)
    FP = P.copy()
    FP[:, :3, :] += P[:, 4:, :]
    FPF = FP.copy()
    FPF[:, :, :3] += FP[:, :, 4:]
    return x, FPF + Q


def kalman_update(x: np.ndarray, P: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """States (M, 7), covariances (M, 7, 7) corrected by measurements z (M, 4) (H = [I 0])."""
    PHT = P[:, :, :4]
    S = P[:, :4, :4] + R
    K = PHT @ np.linalg.inv(S)  # (M, 7, 4)
    x = x + (K @ (z - x[:, :4])[:, :, None])[:, :, 0]
    I_KH = np.broadcast_to(_I7, P.shape).copy()
    I_KH[:, :, :4] -= K
    P = I_KH @ P @ I_KH.transpose(0, 2, 1) + K @ R @ K.transpose(0, 2, 1)
    return x, P


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
    good = iou[det_rows, track_cols] >= iou_threshold
    det_matched = np.zeros(num_dets, bool)
    det_matched[det_rows[good]] = True
    track_matched = np.zeros(num_tracks, bool)
    track_matched[track_cols[good]] = True
    # unmatched in SORT's order: never assigned first, then assigned below the threshold
    assigned_dets, assigned_tracks = np.zeros(num_dets, bool), np.zeros(num_tracks, bool)
    assigned_dets[det_rows], assigned_tracks[track_cols] = True, True
    unmatched_dets = np.flatnonzero(~assigned_dets).tolist() + det_rows[~good].tolist()
    unmatched_tracks = np.flatnonzero(~assigned_tracks).tolist() + track_cols[~good].tolist()
    matches = np.stack([det_rows[good], track_cols[good]], axis=1).astype(int)
    return matches, unmatched_dets, unmatched_tracks


class Sort:
    """SORT with VIBE's settings. ``update(dets (D, 5) [x1, y1, x2, y2, score])`` once per frame
    that has detections -> (M, 5) float64 [x1, y1, x2, y2, track_id] of the tracks reported there.

    ``coast()`` is for frames on which detection did not run (detection every Nth frame): every
    track moves by its Kalman prediction, and the tracks reported at the last update are reported
    again at their predicted boxes. Matching ages and streaks only change in ``update``.

    Track i (oldest first) is row i of every array: ``x`` (N, 7) states, ``P`` (N, 7, 7)
    covariances, ``ids``, ``time_since_update``, ``hit_streak``.
    """

    def __init__(self, max_age: int = MAX_AGE, min_hits: int = MIN_HITS, iou_threshold: float = IOU_THRESHOLD):
        self.max_age = max_age
        self.min_hits = min_hits
        self.iou_threshold = iou_threshold
        self.x = np.zeros((0, 7))
        self.P = np.zeros((0, 7, 7))
        self.ids = np.zeros(0, dtype=np.int64)
        self.time_since_update = np.zeros(0, dtype=np.int64)
        self.hit_streak = np.zeros(0, dtype=np.int64)
        self.frame_count = 0
        self._next_id = 1
        self._reported = np.zeros(0, dtype=bool)  # per track: reported at the last update
        self._last_found_nobody = False

    def __len__(self) -> int:
        return len(self.ids)

    def update(self, dets: np.ndarray) -> np.ndarray:
        """dets (K, 5) [x1, y1, x2, y2, score] -> reported tracks (R, 5) [x1, y1, x2, y2, track_id]."""
        self.frame_count += 1
        # 1. predict every track; drop those whose prediction broke down
        self.x, self.P = kalman_predict(self.x, self.P)
        self.hit_streak[self.time_since_update > 0] = 0
        self.time_since_update += 1
        predicted = states_to_boxes(self.x)
        valid = ~np.isnan(predicted).any(axis=1)
        self._keep(valid)
        predicted = predicted[valid]
        # 2. assign detections to predictions, correct matched tracks, start new ones
        matches, unmatched_dets, _ = associate(dets, predicted, self.iou_threshold)
        d, t = matches[:, 0], matches[:, 1]
        self.x[t], self.P[t] = kalman_update(self.x[t], self.P[t], boxes_to_z(dets[d]))
        self.time_since_update[t] = 0
        self.hit_streak[t] += 1
        self._start(dets[unmatched_dets])
        # 3. report confirmed, just-matched tracks; forget tracks unmatched for over max_age updates
        self._reported = (self.time_since_update < 1) & (
            (self.hit_streak >= self.min_hits) | (self.frame_count <= self.min_hits)
        )
        reported = self._boxes_of(self.x, self._reported)[::-1]  # newest track first, as SORT
        self._keep(self.time_since_update <= self.max_age)
        self._last_found_nobody = False
        return reported

    def coast(self) -> np.ndarray:
        """A frame without detection -> (R, 5) [x1, y1, x2, y2, track_id]: the last reported tracks,
        carried by their Kalman prediction."""
        self.x, self.P = kalman_predict(self.x, self.P)
        reported = self._boxes_of(self.x, self._reported)[::-1]
        return reported[~np.isnan(reported).any(axis=1)]

    def skip(self) -> np.ndarray:
        """A detection frame with nothing detected: no tracker update, nothing reported, nothing carried."""
        self._reported[:] = False
        self._last_found_nobody = True
        return np.empty((0, 5))

    def _start(self, dets: np.ndarray) -> None:
        """One new track per detection row, with the next ids."""
        n = len(dets)
        if n == 0:
            return
        x = np.zeros((n, 7))
        x[:, :4] = boxes_to_z(dets)
        self.x = np.concatenate([self.x, x])
        self.P = np.concatenate([self.P, np.broadcast_to(P0, (n, 7, 7))])
        self.ids = np.concatenate([self.ids, np.arange(self._next_id, self._next_id + n)])
        self.time_since_update = np.concatenate([self.time_since_update, np.zeros(n, dtype=np.int64)])
        self.hit_streak = np.concatenate([self.hit_streak, np.zeros(n, dtype=np.int64)])
        self._reported = np.concatenate([self._reported, np.zeros(n, dtype=bool)])
        self._next_id += n

    def _keep(self, keep: np.ndarray) -> None:
        """Keep only the tracks where ``keep`` is True."""
        if keep.all():
            return
        self.x, self.P, self.ids = self.x[keep], self.P[keep], self.ids[keep]
        self.time_since_update, self.hit_streak = self.time_since_update[keep], self.hit_streak[keep]
        self._reported = self._reported[keep]

    def _boxes_of(self, states: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(M, 5) float64 [x1, y1, x2, y2, id] of the tracks in ``rows``, oldest first."""
        return np.concatenate([states_to_boxes(states[rows]), self.ids[rows, None].astype(np.float64)], axis=1)

    # -- the state, for deciding when to detect again (adaptive_detection.py) -------------------
    def reported_boxes(self) -> np.ndarray:
        """(M, 5) [x1, y1, x2, y2, id]: the current boxes of the tracks reported last."""
        boxes = self._boxes_of(self.x, self._reported)
        return boxes[~np.isnan(boxes).any(axis=1)]

    def predicted_boxes(self) -> np.ndarray:
        """(M, 5) [x1, y1, x2, y2, id]: where the reported tracks will be one frame ahead (no change)."""
        boxes = self._boxes_of(predict_states(self.x), self._reported)
        return boxes[~np.isnan(boxes).any(axis=1)]

    def unsettled(self) -> bool:
        """True when the last detection frame missed a confirmed track (matched min_hits times in
        a row), or found nobody while there is one, or started or matched a track that is not
        confirmed yet. An unconfirmed track that was missed is left alone (a false positive, most
        likely: it ends at the next detection frame)."""
        confirmed = self.hit_streak >= self.min_hits
        if self._last_found_nobody:
            return bool(confirmed.any())
        just_matched = self.time_since_update == 0
        return bool((confirmed & ~just_matched).any() or (just_matched & ~confirmed).any())


# -- tracklets ----------------------------------------------------------------------------------
class Tracklet(NamedTuple):
    """One person's track: frames (N,) int64 (increasing, may have gaps), bboxes (N, 4) float64
    [cx, cy, w, h] pixels with w = h = max(w, h)."""

    frames: np.ndarray
    bboxes: np.ndarray


Tracklets = dict[int, Tracklet]


def reported_boxes(reported: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """reported (M, 5) [x1, y1, x2, y2, id] at one frame -> [(track_id, bbox (4,) cxcywh, square)]."""
    if len(reported) == 0:
        return []
    squares = xyxy_to_square_cxcywh(reported)
    return [(int(track_id), bbox) for track_id, bbox in zip(reported[:, 4].astype(int), squares)]


class TrackletCollector:
    """Gathers the per-frame tracker reports into :data:`Tracklets`."""

    def __init__(self):
        self._frames: dict[int, list[int]] = {}
        self._bboxes: dict[int, list[np.ndarray]] = {}

    def add(self, frame_index: int, reported: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """reported (M, 5) [x1, y1, x2, y2, id] at one frame -> :func:`reported_boxes`, as stored."""
        boxes = reported_boxes(reported)
        for track_id, bbox in boxes:
            self._frames.setdefault(track_id, []).append(int(frame_index))
            self._bboxes.setdefault(track_id, []).append(bbox)
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
