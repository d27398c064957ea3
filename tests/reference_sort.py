"""The SORT tracker written as the official code is: one ``KalmanBoxTracker`` object per person with
filterpy's matrix maths, a Python loop over the tracks. The pipeline's :class:`~vibe_server.pipeline.track.Sort`
keeps every track's filter in arrays, steps them together and matches them with one IoU matrix; the
tests hold it to this one, which shares none of that code (only SORT's three settings)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from vibe_server.pipeline.track import IOU_THRESHOLD, MAX_AGE, MIN_HITS


def iou(bb_test: np.ndarray, bb_gt: np.ndarray) -> float:
    """IoU of two boxes [x1, y1, x2, y2, ...] in continuous coordinates, as SORT's ``iou``."""
    xx1, yy1 = np.maximum(bb_test[0], bb_gt[0]), np.maximum(bb_test[1], bb_gt[1])
    xx2, yy2 = np.minimum(bb_test[2], bb_gt[2]), np.minimum(bb_test[3], bb_gt[3])
    wh = np.maximum(0.0, xx2 - xx1) * np.maximum(0.0, yy2 - yy1)
    area_test = (bb_test[2] - bb_test[0]) * (bb_test[3] - bb_test[1])
    area_gt = (bb_gt[2] - bb_gt[0]) * (bb_gt[3] - bb_gt[1])
    return wh / (area_test + area_gt - wh)


def associate_detections_to_trackers(
    detections: np.ndarray, trackers: np.ndarray, iou_threshold: float
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """SORT's ``associate_detections_to_trackers``, pair by pair: (matches [(det, track)], unmatched
    dets, unmatched tracks); an assigned pair below the threshold is unmatched on both sides."""
    if len(trackers) == 0:
        return [], list(range(len(detections))), []
    iou_matrix = np.zeros((len(detections), len(trackers)), dtype=np.float32)
    for d, det in enumerate(detections):
        for t, trk in enumerate(trackers):
            iou_matrix[d, t] = iou(det, trk)
    matched_indices = np.stack(linear_sum_assignment(-iou_matrix), axis=1)
    unmatched_detections = [d for d in range(len(detections)) if d not in matched_indices[:, 0]]
    unmatched_trackers = [t for t in range(len(trackers)) if t not in matched_indices[:, 1]]
    matches = []
    for d, t in matched_indices:
        if iou_matrix[d, t] < iou_threshold:
            unmatched_detections.append(int(d))
            unmatched_trackers.append(int(t))
        else:
            matches.append((int(d), int(t)))
    return matches, unmatched_detections, unmatched_trackers


def bbox_to_z(bbox_xyxy: np.ndarray) -> np.ndarray:
    """bbox (4+,) [x1, y1, x2, y2] -> z (4, 1) float64 [cx, cy, area, ratio w/h], as the official
    code under numpy 1.x: w, h and the area in the box's dtype, centre and ratio in float64."""
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


class ReferenceSort:
    """SORT with VIBE's settings, one Kalman filter object per track.

    ``update(dets (D, 5) [x1, y1, x2, y2, score])`` once per frame that has detections -> (M, 5)
    float64 [x1, y1, x2, y2, track_id] of the tracks reported there.

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
        matches, unmatched_dets, _ = associate_detections_to_trackers(dets, predicted, self.iou_threshold)
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
