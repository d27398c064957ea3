"""VIBE's YOLOv3 post-processing of one frame, as the official code: objectness >= 0.8, best class by
max class probability, person class only, merge-NMS at IoU > 0.4 in network pixels, boxes mapped
back to the frame (no clipping), score = objectness x class probability, kept when > 0.7 (the
tracker's threshold in the official code). ``batched/detections.py`` does the same for a batch
(selection and overlaps on the device, the merge on the host).
"""

from __future__ import annotations

import numpy as np
import torch

from .boxes import merge_nms
from .yolov3 import PERSON_CLASS

INPUT_SIZE_PX = 416
OBJECTNESS_THRESHOLD = 0.8
NMS_IOU_THRESHOLD = 0.4
SCORE_THRESHOLD = 0.7


def rescale_boxes(boxes_xyxy: np.ndarray, input_size_px: int, frame_height: int, frame_width: int) -> np.ndarray:
    """boxes (K, 4) in network pixels -> frame pixels, undoing the pad-to-square (no clipping)."""
    side = max(frame_height, frame_width)
    pad_x = max(frame_height - frame_width, 0) * (input_size_px / side)
    pad_y = max(frame_width - frame_height, 0) * (input_size_px / side)
    unpad_w, unpad_h = input_size_px - pad_x, input_size_px - pad_y
    out = np.array(boxes_xyxy, dtype=np.float32)
    out[:, 0::2] = (out[:, 0::2] - np.float32(pad_x // 2)) / np.float32(unpad_w) * np.float32(frame_width)
    out[:, 1::2] = (out[:, 1::2] - np.float32(pad_y // 2)) / np.float32(unpad_h) * np.float32(frame_height)
    return out


def person_detections(
    decoded: torch.Tensor,
    frame_height: int,
    frame_width: int,
    *,
    input_size_px: int = INPUT_SIZE_PX,
    objectness_threshold: float = OBJECTNESS_THRESHOLD,
    nms_iou_threshold: float = NMS_IOU_THRESHOLD,
    score_threshold: float = SCORE_THRESHOLD,
) -> np.ndarray:
    """decoded (N, 85) rows of one image (see ``decode_heads``) -> (K, 5) float32 [x1, y1, x2, y2, score].

    Frame pixels, sorted by descending score. NMS per class then keeping persons equals keeping
    rows whose best class is person before NMS, which is what runs here.
    """
    rows = decoded[decoded[:, 4] >= objectness_threshold]
    class_prob, class_index = rows[:, 5:].max(dim=1)
    is_person = class_index == PERSON_CLASS
    rows = rows[is_person, :5].float().cpu().numpy()
    class_prob = class_prob[is_person].float().cpu().numpy()
    objectness = rows[:, 4]
    score = objectness * class_prob
    order = np.argsort(-score, kind="stable")
    rows, objectness, score = rows[order], objectness[order], score[order]
    half_wh = rows[:, 2:4] / np.float32(2)
    boxes = np.concatenate([rows[:, :2] - half_wh, rows[:, :2] + half_wh], axis=1)
    boxes, kept = merge_nms(boxes, objectness, nms_iou_threshold)
    boxes = rescale_boxes(boxes, input_size_px, frame_height, frame_width)
    detections = np.concatenate([boxes, score[kept, None]], axis=1).astype(np.float32)
    return detections[detections[:, 4] > score_threshold]
