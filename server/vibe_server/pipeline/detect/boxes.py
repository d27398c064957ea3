"""Box maths for the detectors: IoU and non-maximum suppression, in numpy (no torchvision).

Boxes are (N, 4) [x1, y1, x2, y2] pixels. The greedy loops run on the CPU on the few boxes left
after thresholding; numpy keeps each step at microseconds even for thousands of boxes.
"""

from __future__ import annotations

import numpy as np


def box_iou_plus_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """box (4,), boxes (N, 4) -> (N,) IoU with the +1-pixel convention of VIBE's YOLOv3 code.

    Widths and heights count pixels inclusively (x2 - x1 + 1); 1e-16 guards the division.
    """
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + 1, 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + 1, 0, None)
    inter = inter_w * inter_h
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    return inter / (area + areas - inter + box.dtype.type(1e-16))


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """box (4,), boxes (N, 4) -> (N,) plain IoU (continuous coordinates)."""
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def merge_nms(boxes: np.ndarray, weights: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """VIBE's YOLOv3 NMS for one class ("merge NMS").

    boxes (N, 4) sorted by descending score, weights (N,) objectness -> (kept boxes (K, 4),
    kept indices (K,) int64). Greedy: the top box and every remaining box with IoU (+1
    convention) > iou_threshold (itself included) are removed together, and the kept box becomes
    their objectness-weighted mean. The kept row's scores stay those of the top box.
    """
    kept_boxes, kept_indices = [], []
    indices = np.arange(len(boxes))
    while len(boxes):
        overlapping = box_iou_plus_one(boxes[0], boxes) > iou_threshold
        overlapping[0] = True  # a degenerate top box must still leave the loop
        w = weights[overlapping, None]
        kept_boxes.append((w * boxes[overlapping]).sum(0) / w.sum())
        kept_indices.append(indices[0])
        boxes, weights, indices = boxes[~overlapping], weights[~overlapping], indices[~overlapping]
    if not kept_boxes:
        return np.zeros((0, 4), dtype=boxes.dtype), np.zeros(0, dtype=np.int64)
    return np.stack(kept_boxes), np.asarray(kept_indices, dtype=np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Plain greedy NMS: boxes (N, 4), scores (N,) -> kept indices (K,) int64, by descending score."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    while len(order):
        top = order[0]
        kept.append(top)
        order = order[1:][box_iou(boxes[top], boxes[order[1:]]) <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)
