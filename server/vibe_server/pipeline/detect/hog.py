"""OpenCV's HOG + linear-SVM people detector: needs no model data, so it runs anywhere OpenCV 4 does.

Quality is far below YOLOv3 (upright full bodies only, false positives on clutter); use it for
smoke tests and demos without the model data. OpenCV 5 wheels (except contrib) removed HOG.
"""

from __future__ import annotations

import math

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

    def min_image_size(self) -> tuple[int, int]:
        """(width, height) of the smallest image OpenCV's detectMultiScale reads within bounds.

        It always scans the unscaled image, padded by ``padding`` (our stride) on each side, with
        ``(padded - window) // stride + 1`` window positions per axis, rounded toward zero. An image
        whose padded size is under the window still gets one position that reads past the image:
        OpenCV 4 then corrupts memory (a segfault, an abort or a cv2.error), e.g. on 64 x 48 frames.
        """
        window_width, window_height = self.hog.winSize
        padding = 2 * self.win_stride_px
        return max(1, window_width - padding), max(1, window_height - padding)

    def detect_one(self, frame_rgb: np.ndarray) -> np.ndarray:
        """frame (H, W, 3) uint8 RGB -> (K, 5) float32 [x1, y1, x2, y2, score], frame pixels.

        A frame that would be scanned under ``min_image_size`` is first padded at its right and
        bottom (its edge pixels repeated) to that size; its boxes are then clipped to the frame and
        those wholly in the padding dropped. Larger frames are scanned as they are.
        """
        frame_height, frame_width = frame_rgb.shape[:2]
        resize = min(1.0, self.max_side_px / max(frame_height, frame_width))
        min_width, min_height = (math.ceil(side / resize) for side in self.min_image_size())
        padded = frame_width < min_width or frame_height < min_height
        if padded:  # (the padding never makes the longest side longer: the resize stays the same)
            bottom, right = max(0, min_height - frame_height), max(0, min_width - frame_width)
            frame_rgb = cv2.copyMakeBorder(frame_rgb, 0, bottom, 0, right, cv2.BORDER_REPLICATE)
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
        if padded:
            boxes = np.clip(boxes, 0, np.array([frame_width, frame_height] * 2, dtype=np.float32))
            inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores = boxes[inside], scores[inside]
        keep = scores > self.score_threshold
        boxes, scores = boxes[keep], scores[keep]
        kept = nms(boxes, scores, self.nms_iou_threshold)
        return np.concatenate([boxes[kept], scores[kept, None]], axis=1).astype(np.float32)

    def detect(self, frames_rgb: list[np.ndarray]) -> list[np.ndarray]:
        """frames (H, W, 3) uint8 RGB -> one (K, 5) float32 [x1, y1, x2, y2, score] per frame."""
        return [self.detect_one(frame) for frame in frames_rgb]
