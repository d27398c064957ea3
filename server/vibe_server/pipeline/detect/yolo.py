"""VIBE's person detector: YOLOv3-416 with the official pre- and post-processing, batched on a device.

Pre-processing (per frame): RGB in [0, 1], pad to a square with 0 (black; top/left get half the
difference, bottom/right the rest), resize to 416 with torch ``nearest`` (not cv2's nearest, which
picks different pixels). Post-processing: ``yolo_postprocess.py`` frame by frame, or on a GPU
``batched/detections.py`` for the whole batch (selection and overlaps on the device, the merge on the host).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vibe_blender.core.errors import VibeError

from ..batched.detections import person_detections_batched
from ..batched.transfers import stacked_to_device
from ..compiled import CompiledRunner
from ..precision import PRECISIONS, autocast
from .darknet_weights import load_darknet_weights
from .yolo_postprocess import INPUT_SIZE_PX, SCORE_THRESHOLD, person_detections, rescale_boxes
from .yolov3 import YOLOv3, decode_heads

__all__ = [
    "INPUT_SIZE_PX",
    "YoloDetector",
    "batches_postprocessing",
    "person_detections",
    "preprocess_frames",
    "rescale_boxes",
]


def preprocess_frames(frames_rgb: torch.Tensor, input_size_px: int = INPUT_SIZE_PX) -> torch.Tensor:
    """frames (B, H, W, 3) uint8 RGB (any device) -> network input (B, 3, S, S) float32 in [0, 1].

    Padding and nearest resize on uint8 pick the same pixels as the official float path.
    """
    batch, height, width, _ = frames_rgb.shape
    side = max(height, width)
    images = frames_rgb.permute(0, 3, 1, 2)
    padded = images.new_zeros((batch, 3, side, side))
    top, left = (side - height) // 2, (side - width) // 2
    padded[:, :, top : top + height, left : left + width] = images
    resized = F.interpolate(padded, size=(input_size_px, input_size_px), mode="nearest")
    return resized.float().div_(255.0)


def batches_postprocessing(device: str | torch.device) -> bool:
    """Whether YOLO on ``device`` post-processes a batch at once by default: on a GPU the boxes of
    all frames of a batch are filtered and sorted there and merged on the host after one copy, with
    two waits for the device (``batched.detections``); on a CPU the per-frame loop is as fast, and
    it is the official code (which an ``--official`` run asks for on a GPU too)."""
    return torch.device(device).type == "cuda"


class YoloDetector:
    """Persons with VIBE's YOLOv3-416: ``detect(frames_rgb) -> [(K, 5) float32 x1, y1, x2, y2, score]``.

    weights_path: the official Darknet ``yolov3.weights``.
    device: torch device for the network and the pre-processing.
    batch_size: frames per forward pass.
    precision: "fp32" (official numerics), "bf16" (CPU with AMX or CUDA) or "fp16" (CUDA) autocast.
        Reduced precision moves the logits (by about 0.02: an estimate, unmeasured), which can flip
        detections close to the thresholds.
    channels_last: NHWC memory format (pays off with bf16 on CPU and with fp16/bf16 on CUDA).
    compiled: run the network through ``torch.compile`` (see :mod:`..compiled`), every call padded
        to ``batch_size`` frames; a failure to compile falls back to eager with the reason logged.
    """

    def __init__(
        self,
        weights_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        precision: str = "fp32",
        channels_last: bool | None = None,
        input_size_px: int = INPUT_SIZE_PX,
        score_threshold: float = SCORE_THRESHOLD,
        batched_postprocess: bool | None = None,
        compiled: bool = False,
        on_compile_fallback: Callable[[str], None] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise VibeError(f"Unknown detector precision '{precision}'; use one of {', '.join(PRECISIONS)}.")
        if input_size_px % 32:
            raise VibeError(f"The YOLOv3 input size must be a multiple of 32, got {input_size_px}.")
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise VibeError("fp16 detection needs a CUDA device; use precision 'bf16' or 'fp32' on the CPU.")
        self.batch_size = int(batch_size)
        self.precision = precision
        self.channels_last = (precision != "fp32") if channels_last is None else channels_last
        self.input_size_px = input_size_px
        self.score_threshold = score_threshold
        self.batched_postprocess = (
            batches_postprocessing(self.device) if batched_postprocess is None else batched_postprocess
        )
        self.model = YOLOv3().eval()
        self.header = load_darknet_weights(self.model, Path(weights_path))
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.compiled = bool(compiled)
        self.runner = CompiledRunner(self.model, name="detector network", on_fallback=on_compile_fallback)

    @property
    def spot_batch_size(self) -> int:
        """Frames an on-the-spot detection may carry for about the cost of one (see
        ``DetectionSchedule``): a batch on a GPU, where a small call costs mostly its launches and
        its waits for the boxes; a batch when compiled, as every call is padded to one; else one frame."""
        compiled = self.compiled and self.runner.fallback_reason is None
        return self.batch_size if self.device.type == "cuda" or compiled else 1

    @torch.inference_mode()
    def network_rows(self, frames_rgb: list[np.ndarray]) -> torch.Tensor:
        """B same-size frames (H, W, 3) uint8 -> decoded rows (B, 10647, 85) float32 on the device."""
        frames = stacked_to_device(frames_rgb, self.device)  # to a GPU from pinned memory, without waiting
        images = preprocess_frames(frames, self.input_size_px)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device.type):
            heads = self.runner(images, compiled=self.compiled, batch_size=self.batch_size)
        return decode_heads(heads, self.input_size_px)

    def detect(self, frames_rgb: list[np.ndarray]) -> list[np.ndarray]:
        """frames (H, W, 3) uint8 RGB -> one (K, 5) float32 [x1, y1, x2, y2, score] per frame (persons)."""
        results: list[np.ndarray] = []
        for start in range(0, len(frames_rgb), self.batch_size):
            chunk = frames_rgb[start : start + self.batch_size]
            for group in _same_size_runs(chunk):
                rows = self.network_rows(group)
                height, width = group[0].shape[:2]
                if self.batched_postprocess:
                    results += person_detections_batched(
                        rows, height, width, input_size_px=self.input_size_px, score_threshold=self.score_threshold
                    )
                    continue
                for image_rows in rows:
                    results.append(
                        person_detections(
                            image_rows,
                            height,
                            width,
                            input_size_px=self.input_size_px,
                            score_threshold=self.score_threshold,
                        )
                    )
        return results


def _same_size_runs(frames: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Split a list into consecutive runs of equal-shape frames (a video has one run)."""
    runs: list[list[np.ndarray]] = []
    for frame in frames:
        if runs and runs[-1][0].shape == frame.shape:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs
