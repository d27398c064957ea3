"""VIBE's YOLOv3 post-processing for a whole batch of frames at once: selection, sort and overlaps on the
network's device, the greedy merge on the host.

``person_detections_batched`` gives, frame by frame, the boxes of ``detect.yolo_postprocess.person_detections``
(objectness >= 0.8, person class, merge-NMS at IoU > 0.4 with the +1-pixel convention, boxes mapped
back to the frame, score > 0.7) with the selection, the sort and the overlaps on the device and no
Python loop over candidates per frame: the greedy merge-NMS then walks the K candidate columns
once for every frame together, in numpy on the host. The host waits for the device twice: for the
widest frame's number of candidates (the batch's width) and for the one copy of the candidates'
boxes, weights, scores and overlaps; mapping the few kept ones back to frame pixels is
``detect.yolo_postprocess.rescale_boxes``.

Equality with the per-frame reference: the candidates, their order (stable sort by descending
score, NaN last), the IoU tests and the kept set are identical; the merged boxes are weighted means summed in
another order, so they agree to float32 rounding (~1e-5 px).
"""

from __future__ import annotations

import numpy as np
import torch

from ..detect.yolo_postprocess import (
    INPUT_SIZE_PX,
    NMS_IOU_THRESHOLD,
    OBJECTNESS_THRESHOLD,
    SCORE_THRESHOLD,
    rescale_boxes,
)
from ..detect.yolov3 import PERSON_CLASS


def box_iou_plus_one_matrix(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """boxes (B, K, 4) -> (B, K, K) IoU between every pair, with the +1-pixel convention of
    ``detect.boxes.box_iou_plus_one`` (same float32 operations, so the same values)."""
    a, b = boxes_xyxy[:, :, None, :], boxes_xyxy[:, None, :, :]
    inter_w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0]) + 1).clamp(min=0)
    inter_h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1]) + 1).clamp(min=0)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter + 1e-16)


def merge_nms_batched(
    boxes_xyxy: np.ndarray, weights: np.ndarray, valid: np.ndarray, overlaps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy merge-NMS of ``detect.boxes.merge_nms`` for B frames at once, on the host.

    boxes (B, K, 4) sorted by descending score per frame, weights (B, K) objectness, valid (B, K)
    bool (padding columns False), overlaps (B, K, K) bool (IoU above the threshold) -> (merged
    boxes (B, K, 4), kept (B, K) bool). Column i is kept when it is still unclaimed on reaching it,
    which is exactly when the reference loop finds it at the top of the remaining boxes; its merged
    box is the weighted mean of the unclaimed boxes that overlap it (itself included), and those
    are claimed. Walked in numpy: on a GPU each of the K steps' few operations would be a kernel
    launch of its own.
    """
    remaining = valid.copy()
    kept = np.zeros_like(valid)
    merged = np.zeros_like(boxes_xyxy)
    for i in range(boxes_xyxy.shape[1]):
        is_top = remaining[:, i]  # (B,)
        group = remaining & overlaps[:, i, :]  # (B, K)
        group[:, i] = is_top  # a degenerate top box still claims itself
        w = weights * group  # (B, K)
        total = w.sum(axis=1, keepdims=True)  # (B, 1)
        merged[:, i] = (w[..., None] * boxes_xyxy).sum(axis=1) / np.where(total > 0, total, 1)
        kept[:, i] = is_top
        remaining &= ~(group & is_top[:, None])
    return merged, kept


def reference_order(score: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """score, candidate (B, N) -> (B, N) column order: candidates first, by descending score as
    the reference's stable ``np.argsort(-score)``, so a NaN score comes after every real one (a
    descending torch sort would put it first, where its box would claim the real ones)."""
    nan = torch.isnan(score)
    by_score = torch.sort(torch.where(nan, -torch.inf, score), dim=1, descending=True, stable=True).indices
    tier = torch.where(candidate, nan.to(torch.uint8), 2)  # real scores, then NaN, then non-candidates
    by_tier = torch.sort(torch.gather(tier, 1, by_score), dim=1, stable=True).indices
    return torch.gather(by_score, 1, by_tier)


def person_detections_batched(
    decoded: torch.Tensor,
    frame_height: int,
    frame_width: int,
    *,
    input_size_px: int = INPUT_SIZE_PX,
    objectness_threshold: float = OBJECTNESS_THRESHOLD,
    nms_iou_threshold: float = NMS_IOU_THRESHOLD,
    score_threshold: float = SCORE_THRESHOLD,
) -> list[np.ndarray]:
    """decoded (B, N, 85) rows of B same-size frames (``decode_heads``) -> B arrays (K_b, 5) float32
    [x1, y1, x2, y2, score], frame pixels, by descending score: ``person_detections`` per frame."""
    rows = decoded.float()
    class_prob, class_index = rows[..., 5:].max(dim=-1)  # (B, N)
    candidate = (rows[..., 4] >= objectness_threshold) & (class_index == PERSON_CLASS)
    score = rows[..., 4] * class_prob
    order = reference_order(score, candidate)
    k = max(int(candidate.sum(dim=1).max()), 1)  # the first of two host syncs: the widest frame
    order = order[:, :k]
    valid = torch.gather(candidate, 1, order)
    picked = torch.gather(rows[..., :5], 1, order[..., None].expand(-1, -1, 5))  # (B, k, 5)
    score = torch.gather(score, 1, order)
    half_wh = picked[..., 2:4] / 2
    boxes = torch.cat([picked[..., :2] - half_wh, picked[..., :2] + half_wh], dim=-1)
    overlaps = box_iou_plus_one_matrix(boxes) > nms_iou_threshold  # (B, k, k)
    # the second sync: boxes, weights, scores, what is valid and the overlaps cross in one copy (a
    # bool is exact as a float); the greedy merge then runs on the host
    flags = torch.cat([valid[..., None], overlaps], dim=-1).to(boxes.dtype)
    packed = torch.cat([boxes, picked[..., 4:5], score[..., None], flags], dim=-1).cpu().numpy()
    boxes, weights, score, valid, overlaps = (
        packed[..., :4], packed[..., 4], packed[..., 5], packed[..., 6] > 0, packed[..., 7:] > 0
    )  # fmt: skip
    merged, kept = merge_nms_batched(boxes, weights, valid, overlaps)
    keep = kept & (score > score_threshold)
    detections = []
    for b in range(len(merged)):  # network pixels -> frame pixels, on the few kept boxes
        boxes = rescale_boxes(merged[b][keep[b]], input_size_px, frame_height, frame_width)
        detections.append(np.concatenate([boxes, score[b][keep[b], None]], axis=1).astype(np.float32))
    return detections
