"""The official person crop: 224 x 224 pixels around a box scaled by 1.1, then ImageNet normalisation.

Bit-exact with the official demo: the affine is built from three float32 point pairs with
``cv2.getAffineTransform`` and applied with ``cv2.warpAffine`` (fixed-point bilinear, black border).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from numpy.typing import ArrayLike

CROP_SIZE_PX = 224
BBOX_SCALE = 1.1  # the demo's scale; the crop function's own default (1.2) is for training features
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def crop_transform(
    bbox_cxcywh_px: ArrayLike, *, scale: float = BBOX_SCALE, crop_size_px: int = CROP_SIZE_PX
) -> np.ndarray:
    """bbox (4,) [cx, cy, w, h] pixels -> (2, 3) float64 affine from image to crop pixels.

    The box centre maps to the crop centre, ``scale * w`` to the crop width, ``scale * h`` to its
    height: ``x_crop = c/2 + (x - cx) * c / (scale * w)``. Precision as the official code: the
    half-extents are computed in the box's dtype, rounded to float32, added to the centre and the
    points stored as float32.
    """
    cx, cy, w, h = np.asarray(bbox_cxcywh_px)[:4]
    half_down = np.float32(h * scale * 0.5)
    half_right = np.float32(w * scale * 0.5)
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = (cx, cy)
    src[1] = (cx, cy + half_down)
    src[2] = (cx + half_right, cy)
    half_crop = np.float32(crop_size_px * 0.5)
    dst = np.array([[half_crop, half_crop], [half_crop, crop_size_px], [crop_size_px, half_crop]], dtype=np.float32)
    return cv2.getAffineTransform(src, dst)


def crop_person(
    frame_rgb: np.ndarray, bbox_cxcywh_px: ArrayLike, *, scale: float = BBOX_SCALE, crop_size_px: int = CROP_SIZE_PX
) -> np.ndarray:
    """frame_rgb (H, W, 3) uint8, bbox (4,) [cx, cy, w, h] -> crop (crop_size, crop_size, 3) uint8."""
    transform = crop_transform(bbox_cxcywh_px, scale=scale, crop_size_px=crop_size_px)
    return cv2.warpAffine(
        frame_rgb, transform, (crop_size_px, crop_size_px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def crop_people(
    frames_rgb: np.ndarray | Sequence[np.ndarray],
    bboxes_cxcywh_px: ArrayLike,
    *,
    scale: float = BBOX_SCALE,
    crop_size_px: int = CROP_SIZE_PX,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """frames_rgb (H, W, 3) uint8 (one frame for all boxes) or B such frames, bboxes (B, 4) [cx, cy, w, h]
    -> (B, 3, c, c) float32 tensor, ImageNet-normalised RGB: the model's input."""
    crops = crop_people_uint8(frames_rgb, bboxes_cxcywh_px, scale=scale, crop_size_px=crop_size_px)
    return normalize_crops(crops, device=device)


def crop_people_uint8(
    frames_rgb: np.ndarray | Sequence[np.ndarray],
    bboxes_cxcywh_px: ArrayLike,
    *,
    scale: float = BBOX_SCALE,
    crop_size_px: int = CROP_SIZE_PX,
) -> np.ndarray:
    """frames_rgb: one (H, W, 3) uint8 frame for all boxes, or B frames; bboxes (B, 4) -> (B, c, c, 3) uint8."""
    bboxes = np.asarray(bboxes_cxcywh_px).reshape(-1, 4)
    if isinstance(frames_rgb, np.ndarray) and frames_rgb.ndim == 3:
        frames_rgb = [frames_rgb] * len(bboxes)
    crops = np.empty((len(bboxes), crop_size_px, crop_size_px, 3), dtype=np.uint8)
    for i, (frame_rgb, bbox) in enumerate(zip(frames_rgb, bboxes, strict=True)):
        crops[i] = crop_person(frame_rgb, bbox, scale=scale, crop_size_px=crop_size_px)
    return crops


def normalize_crops(crops_rgb: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """crops (B, c, c, 3) uint8 RGB -> (B, 3, c, c) float32 tensor, ImageNet mean/std normalised.

    Same arithmetic as torchvision's ToTensor + Normalize: x / 255, then (x - mean) / std.
    """
    images = torch.from_numpy(np.ascontiguousarray(crops_rgb)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN_RGB, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return images.sub_(mean).div_(std)
