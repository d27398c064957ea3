"""When detecting only every Nth frame, detect at once where the carried boxes may be wrong.

Between detection frames the tracker moves every box by its Kalman prediction. That is right while
people keep walking as they did, and wrong in a few situations the tracker itself can see:

- ``unsettled``: the last detection missed a confirmed track, or found nobody while there is one,
  or started or matched a track not confirmed yet (SORT reports a track only after 3 matches in a
  row). Detecting on the next frames keeps or confirms them as quickly as detecting on every frame
  would. An unconfirmed track that was missed is not retried: a detector's one-frame false
  positive costs one extra detection, not two.
- ``moved``: a predicted box has moved far from where the last detection put it (IoU below
  MOVED_IOU): a walking person is detected more often than a standing one, before a change of
  pace or direction makes the constant-velocity prediction drift.
- ``leaving``: a predicted box moves out of the frame (its share inside the frame fell since the
  last detection): the person is leaving, or turning at the edge.
- ``overlap``: two predicted boxes overlap more (or less) than at the last detection: people cross,
  and SORT's IoU matching needs fresh boxes to keep the identities apart.
- ``edge``: someone could be entering: the image changed in a strip along the frame's edges, away
  from the tracked boxes, since the last detection (grey levels on a grid of every 8th pixel).

The fixed every-Nth-frame detection stays; these only add detection frames.
"""

from __future__ import annotations

import numpy as np

from .track import Sort, iou_matrix

MOVED_IOU = 0.75  # trigger when a box overlaps its last detected position less than this
LEAVE_MARGIN = 0.1  # trigger when a box's share inside the frame fell by this much
OVERLAP_CHANGE = 0.1  # ... when a pair's IoU changed by this much
EDGE_STRIP = 1 / 8  # edge strips: this share of the width (left/right) and height (top/bottom)
EDGE_GREY_CHANGE = 30  # a grid pixel changed when its grey level moved by more than this
EDGE_CHANGED_SHARE = 0.03  # ... and the strip changed when this share of its pixels did
# After an edge trigger the edge is not checked again for this many frames. 8 saved a third of the
# edge detections at the same recall on the test clips (benchmarks/fidelity.py), but found a person
# walking in several frames later, which live capture shows: 4 stays.
EDGE_COOLDOWN_FRAMES = 4
GRID_STEP = 8  # the edge check looks at every 8th pixel in both directions


def inside_share(boxes_xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """boxes (M, 4+) [x1, y1, x2, y2] -> (M,) share of each box's area inside the frame (0..1)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64)[:, :4]
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    inside = np.clip(np.minimum(b[:, 2], width) - np.maximum(b[:, 0], 0), 0, None) * np.clip(
        np.minimum(b[:, 3], height) - np.maximum(b[:, 1], 0), 0, None
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, inside / area, 0.0)


def _grey_grid(frame_rgb: np.ndarray) -> np.ndarray:
    """frame (H, W, 3) uint8 -> (ceil(H/8), ceil(W/8)) int16 grey levels of every 8th pixel."""
    grid = frame_rgb[::GRID_STEP, ::GRID_STEP].astype(np.int16)
    return (grid[..., 0] + 2 * grid[..., 1] + grid[..., 2]) // 4


def _edge_strips(shape: tuple[int, int]) -> tuple:
    """(h, w) grid -> the index slices of its left, right, top and bottom strips."""
    h, w = shape
    dx, dy = max(1, round(w * EDGE_STRIP)), max(1, round(h * EDGE_STRIP))
    return np.s_[:, :dx], np.s_[:, -dx:], np.s_[:dy, :], np.s_[-dy:, :]


class DetectionTriggers:
    """``reason(frame_index, frame_rgb, sort)`` at a frame where detection is not scheduled -> the
    name of the first trigger that fires, or None; ``reference(frame_index, frame_rgb, sort)`` after
    each detection frame (the state the triggers compare with)."""

    def __init__(self):
        self._inside: dict[int, float] = {}
        self._detected_at: dict[int, np.ndarray] = {}
        self._pair_iou: dict[tuple[int, int], float] = {}
        self._grey: np.ndarray | None = None
        self._edge_quiet_until = -1

    def reference(self, frame_index: int, frame_rgb: np.ndarray, sort: Sort) -> None:
        boxes = sort.reported_boxes()
        height, width = frame_rgb.shape[:2]
        ids = boxes[:, 4].astype(int)
        self._inside = dict(zip(ids.tolist(), inside_share(boxes, width, height).tolist()))
        self._detected_at = dict(zip(ids.tolist(), boxes))
        self._pair_iou = _pair_ious(boxes)
        self._grey = _grey_grid(frame_rgb)

    def reason(self, frame_index: int, frame_rgb: np.ndarray, sort: Sort) -> str | None:
        if sort.unsettled():
            return "unsettled"
        boxes = sort.predicted_boxes()
        height, width = frame_rgb.shape[:2]
        shares = inside_share(boxes, width, height)
        for box, track_id, share in zip(boxes, boxes[:, 4].astype(int).tolist(), shares.tolist()):
            if share < self._inside.get(track_id, 1.0) - LEAVE_MARGIN:
                return "leaving"
            detected_at = self._detected_at.get(track_id)
            if detected_at is not None and iou_matrix(box[None], detected_at[None])[0, 0] < MOVED_IOU:
                return "moved"
        for pair, iou in _pair_ious(boxes).items():
            if abs(iou - self._pair_iou.get(pair, 0.0)) >= OVERLAP_CHANGE:
                return "overlap"
        if frame_index >= self._edge_quiet_until and self._edge_changed(frame_rgb, boxes):
            self._edge_quiet_until = frame_index + EDGE_COOLDOWN_FRAMES
            return "edge"
        return None

    def _edge_changed(self, frame_rgb: np.ndarray, boxes: np.ndarray) -> bool:
        grey = _grey_grid(frame_rgb)
        if self._grey is None or self._grey.shape != grey.shape:
            return False
        away_from_people = np.ones(grey.shape, bool)  # tracked people are not newcomers
        for x1, y1, x2, y2 in (boxes[:, :4] / GRID_STEP).tolist():
            away_from_people[
                max(0, int(y1)) : max(0, int(np.ceil(y2)) + 1), max(0, int(x1)) : max(0, int(np.ceil(x2)) + 1)
            ] = False
        changed = np.abs(grey - self._grey) > EDGE_GREY_CHANGE
        for strip in _edge_strips(grey.shape):
            cells = away_from_people[strip]
            if cells.any() and changed[strip][cells].mean() >= EDGE_CHANGED_SHARE:
                return True
        return False


def _pair_ious(boxes: np.ndarray) -> dict[tuple[int, int], float]:
    """boxes (M, 5) [x1, y1, x2, y2, id] -> {(id_a, id_b): IoU} for every pair, id_a < id_b."""
    if len(boxes) < 2:
        return {}
    iou = iou_matrix(boxes, boxes)
    ids = boxes[:, 4].astype(int).tolist()
    return {
        (min(ids[i], ids[j]), max(ids[i], ids[j])): float(iou[i, j])
        for i in range(len(ids))
        for j in range(i + 1, len(ids))
    }
