"""Person detectors behind one small interface.

    detector = make_detector("yolo", data_dir=..., device="cuda", precision="bf16")
    boxes = detector.detect(frames_rgb)     # per frame (K, 5) float32 [x1, y1, x2, y2, score], pixels

- ``yolo``: VIBE's detector, YOLOv3-416 from the official Darknet ``yolov3.weights`` (model data).
- ``hog``: OpenCV's HOG people detector; no model data, low quality (smoke tests, demos).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vibe_blender.core.errors import VibeError
from vibe_server.data.loading import YOLO_WEIGHTS, resolve_data_dir

DETECTOR_NAMES = ("yolo", "hog")


@runtime_checkable
class Detector(Protocol):
    """Finds persons. ``batch_size`` is how many frames it likes per ``detect`` call. It may also
    say ``spot_batch_size``: how many frames a single on-the-spot detection may carry for about the
    cost of one (default 1; see ``pipeline.people.DetectionSchedule``)."""

    batch_size: int

    def detect(self, frames_rgb: list[np.ndarray]) -> list[np.ndarray]:
        """frames (H, W, 3) uint8 RGB -> one (K, 5) float32 [x1, y1, x2, y2, score] per frame,
        persons only, frame pixels (boxes may reach outside the frame)."""
        ...


def make_detector(
    name: str = "yolo",
    *,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    weights_path: str | Path | None = None,
    **options: Any,
) -> Detector:
    """Build a detector by name.

    name: "yolo" (alias "yolov3") or "hog".
    data_dir: model-data folder holding ``yolov3.weights`` (None: the configured default folder).
    weights_path: the weights file itself (overrides data_dir).
    device: torch device for YOLO (HOG always runs on the CPU).
    options: passed to :class:`~.yolo.YoloDetector` (batch_size, precision, channels_last,
        input_size_px, score_threshold) or :class:`~.hog.HogDetector` (score_threshold, max_side_px...).
    """
    key = name.lower()
    if key in ("yolo", "yolov3"):
        from .yolo import YoloDetector  # start-up: only the detector in use loads (torch / OpenCV)

        if weights_path is None:
            weights_path = Path(data_dir if data_dir is not None else resolve_data_dir(None)) / YOLO_WEIGHTS
        return YoloDetector(weights_path, device=device, **options)
    if key == "hog":
        from .hog import HogDetector  # start-up: only the detector in use loads (torch / OpenCV)

        return HogDetector(**options)
    raise VibeError(f"Unknown person detector '{name}'; choose one of: {', '.join(DETECTOR_NAMES)}.")
