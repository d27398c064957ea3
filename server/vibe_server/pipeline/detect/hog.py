"""OpenCV's HOG + linear-SVM people detector: needs no model data, so it runs anywhere OpenCV 4 does.

Quality is far below YOLOv3 (upright full bodies only, false positives on clutter); use it for
smoke tests and demos without the model data. OpenCV 5 wheels (except contrib) removed HOG.
"""

from __future__ import annotations

import cv2
import numpy as np

from vibe_blender.core.errors import VibeError

from .boxes import nms

# The default people detector's 64 x 128 window holds the person with a margin of about 1/8 of the
# window on each side; shrinking the box by this factor makes it hug the person like YOLO's boxes.
WINDOW_TO_PERSON = 0.8


class HogDetector:
    """Persons with OpenCV's default HOG people detector: ``detect(frames_rgb) -> [(K, 5) float32]``.

    score_threshold: minimum SVM margin (the detector's "weight") of a kept box.
    max_side_px: larger frames are downscaled to this longest side first (speed; boxes are mapped back).
    win_stride_px / scale: the sliding-window step and the image-pyramid factor.
    """

    batch_size = 1

    def __init__(
        self,
        *,
        score_threshold: float = 0.5,
        max_side_px: int = 800,
        win_stride_px: int = 8,
        scale: float = 1.05,
        nms_iou_threshold: float = 0.4,
    ):
        if not hasattr(cv2, "HOGDescriptor"):
            raise VibeError(
                f"The installed OpenCV {cv2.__version__} has no HOG people detector (OpenCV 5 "
                "removed it). Install opencv-python-headless>=4.10,<5, or use the 'yolo' detector."
            )
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.score_threshold = score_threshold
        self.max_side_px = max_side_px
        self.win_stride_px = win_stride_px
        self.scale = scale
        self.nms_iou_threshold = nms_iou_threshold

    def detect_one(self, frame_rgb: np.ndarray) -> np.ndarray:
        """frame (H, W, 3) uint8 RGB -> (K, 5) float32 [x1, y1, x2, y2, score], frame pixels."""
        resize = min(1.0, self.max_side_px / max(frame_rgb.shape[:2]))
        image = (
            frame_rgb
            if resize == 1.0
            else cv2.resize(frame_rgb, None, fx=resize, fy=resize, interpolation=cv2.INTER_AREA)
        )
        stride = (self.win_stride_px, self.win_stride_px)
        rects, weights = self.hog.detectMultiScale(image, winStride=stride, padding=stride, scale=self.scale)
        if len(rects) == 0:
            return np.zeros((0, 5), dtype=np.float32)
        rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4) / resize
        scores = np.asarray(weights, dtype=np.float32).reshape(-1)
        centre = rects[:, :2] + rects[:, 2:] / 2
        half = rects[:, 2:] * (WINDOW_TO_PERSON / 2)
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keep = scores > self.score_threshold
        boxes, scores = boxes[keep], scores[keep]
        kept = nms(boxes, scores, self.nms_iou_threshold)
        return np.concatenate([boxes[kept], scores[kept, None]], axis=1).astype(np.float32)

    def detect(self, frames_rgb: list[np.ndarray]) -> list[np.ndarray]:
        """frames (H, W, 3) uint8 RGB -> one (K, 5) float32 [x1, y1, x2, y2, score] per frame."""
        return [self.detect_one(frame) for frame in frames_rgb]
