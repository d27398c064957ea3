"""Box maths for the detectors: IoU and non-maximum suppression, in torch (no torchvision).

Boxes are (N, 4) [x1, y1, x2, y2] pixels.
"""
from __future__ import annotations

import torch


def box_iou_plus_one(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """box (4,), boxes (N, 4) -> (N,) IoU with the +1-pixel convention of VIBE's YOLOv3 code.

    Widths and heights count pixels inclusively (x2 - x1 + 1); 1e-16 guards the division.
    """
    inter_w = (torch.minimum(box[2], boxes[:, 2]) - torch.maximum(box[0], boxes[:, 0]) + 1).clamp(min=0)
    inter_h = (torch.minimum(box[3], boxes[:, 3]) - torch.maximum(box[1], boxes[:, 1]) + 1).clamp(min=0)
    inter = inter_w * inter_h
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    return inter / (area + areas - inter + 1e-16)


def box_iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """box (4,), boxes (N, 4) -> (N,) plain IoU (continuous coordinates)."""
    inter_w = (torch.minimum(box[2], boxes[:, 2]) - torch.maximum(box[0], boxes[:, 0])).clamp(min=0)
    inter_h = (torch.minimum(box[3], boxes[:, 3]) - torch.maximum(box[1], boxes[:, 1])).clamp(min=0)
    inter = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter).clamp(min=1e-12)


def merge_nms(boxes: torch.Tensor, weights: torch.Tensor, iou_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """VIBE's YOLOv3 NMS for one class ("merge NMS").

    boxes (N, 4) sorted by descending score, weights (N,) objectness -> (kept boxes (K, 4),
    kept indices (K,)). Greedy: the top box and every remaining box with IoU (+1 convention)
    > iou_threshold (itself included) are removed together, and the kept box becomes their
    objectness-weighted mean. The kept row's scores stay those of the top box.
    """
    kept_boxes, kept_indices = [], []
    indices = torch.arange(len(boxes), device=boxes.device)
    while len(boxes):
        overlapping = box_iou_plus_one(boxes[0], boxes) > iou_threshold
        overlapping[0] = True  # a degenerate top box must still leave the loop
        w = weights[overlapping, None]
        kept_boxes.append((w * boxes[overlapping]).sum(0) / w.sum())
        kept_indices.append(indices[0])
        boxes, weights, indices = boxes[~overlapping], weights[~overlapping], indices[~overlapping]
    if not kept_boxes:
        return boxes.new_zeros((0, 4)), indices.new_zeros((0,))
    return torch.stack(kept_boxes), torch.stack(kept_indices)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Plain greedy NMS: boxes (N, 4), scores (N,) -> kept indices (K,), by descending score."""
    order = torch.argsort(scores, descending=True)
    kept = []
    while len(order):
        top = order[0]
        kept.append(top)
        order = order[1:][box_iou(boxes[top], boxes[order[1:]]) <= iou_threshold]
    return torch.stack(kept) if kept else torch.zeros(0, dtype=torch.long, device=boxes.device)
