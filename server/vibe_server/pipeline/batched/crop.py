"""Person crops for many boxes at once on the frames' device: ``affine_grid`` + ``grid_sample``.

The same affine as the official crop (``pipeline.crop.crop_transform``: the box centre to the crop
centre, 1.1 x the box to the crop), sampled bilinearly with a black border, then rounded to
uint8 levels and ImageNet-normalised like ``pipeline.crop.crop_people``. OpenCV's ``warpAffine``
quantises source coordinates to 1/32 pixel and its weights to 15 bits; this samples exactly, so the
two differ by a few grey levels at sharp edges and agree on average to well under one level
(``tests/server/test_batched_crop.py`` states the bounds). ``--official`` keeps the OpenCV crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..crop import BBOX_SCALE, CROP_SIZE_PX, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from .transfers import device_constant, stacked_to_device, to_device

# a sampling point outside every image (normalised coordinates run -1..1): it samples black
OUTSIDE = 2.0
# frames cropped in one call at most hold this many pixels (8 frames of 1080p; 2 of 4K): the frames
# are made float on the device for the call (4 bytes a channel)
CALL_PIXELS = 8 * 1920 * 1080


def crop_to_image_affines(
    bboxes_cxcywh_px: np.ndarray, *, scale: float = BBOX_SCALE, crop_size_px: int = CROP_SIZE_PX
) -> np.ndarray:
    """bboxes (K, 4) [cx, cy, w, h] -> (K, 2, 3) float64 affines from crop pixels to image pixels.

    The inverse of ``crop_transform``, built from the same float32-rounded centre and half-extents:
    ``x = cx + (u - c/2) * half_w / (c/2)``, ``y = cy + (v - c/2) * half_h / (c/2)``.
    """
    boxes = np.asarray(bboxes_cxcywh_px, dtype=np.float64).reshape(-1, 4)
    centre = boxes[:, :2].astype(np.float32).astype(np.float64)
    half = (boxes[:, 2:4] * scale * 0.5).astype(np.float32).astype(np.float64)  # (K, 2) w, h
    half_crop = crop_size_px * 0.5
    affines = np.zeros((len(boxes), 2, 3))
    affines[:, 0, 0] = half[:, 0] / half_crop
    affines[:, 1, 1] = half[:, 1] / half_crop
    affines[:, :, 2] = centre - half  # u = c/2 maps to the centre: cx - half_w
    return affines


def _grid_sample_theta(affines: np.ndarray, image_height: int, image_width: int, crop_size_px: int) -> np.ndarray:
    """Pixel-space affines (K, 2, 3) -> ``affine_grid`` thetas (K, 2, 3) for align_corners=False:
    normalised output -> output pixel -> image pixel -> normalised image coordinates."""
    c = crop_size_px
    out_to_pixel = np.array([[c / 2, 0, (c - 1) / 2], [0, c / 2, (c - 1) / 2], [0, 0, 1]])
    pixel_to_norm = np.array(
        [[2 / image_width, 0, 1 / image_width - 1], [0, 2 / image_height, 1 / image_height - 1], [0, 0, 1]]
    )
    full = np.concatenate([affines, np.broadcast_to([0.0, 0.0, 1.0], (len(affines), 1, 3))], axis=1)
    return (pixel_to_norm @ full @ out_to_pixel)[:, :2]


def crop_people_batched(
    frames_rgb: torch.Tensor,
    frame_index: np.ndarray | torch.Tensor,
    bboxes_cxcywh_px: np.ndarray,
    *,
    scale: float = BBOX_SCALE,
    crop_size_px: int = CROP_SIZE_PX,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """frames (F, H, W, 3) uint8 RGB on a device, frame_index (K,) ints on the host (the frame of each
    box), bboxes (K, 4) [cx, cy, w, h] pixels -> (K, 3, c, c) ImageNet-normalised crops on that device.

    Each frame is made float once, and all of its boxes are sampled in one ``grid_sample`` row: the
    sampling grids are laid out (F, most boxes in a frame x c, c), padded with points outside every
    image (which sample black). The float frames take memory per frame, not per box as a copy of the
    frame per box would; the grids and sampled rows take frames x the most boxes in one frame."""
    device = frames_rgb.device
    frames_count, height, width, _ = frames_rgb.shape
    c = crop_size_px
    frame_of_box = np.asarray(frame_index, dtype=np.int64).reshape(-1)
    slot_of_box = np.zeros_like(frame_of_box)  # each box's place among its frame's boxes
    for frame in np.unique(frame_of_box):
        mine = frame_of_box == frame
        slot_of_box[mine] = np.arange(mine.sum())
    slots = int(slot_of_box.max(initial=-1)) + 1
    affines = crop_to_image_affines(bboxes_cxcywh_px, scale=scale, crop_size_px=c)
    theta = to_device(_grid_sample_theta(affines, height, width, c).astype(np.float32), device)
    where = to_device(np.stack([frame_of_box, slot_of_box]), device)
    grids = torch.full((frames_count, slots, c, c, 2), OUTSIDE, device=device)
    grids[where[0], where[1]] = F.affine_grid(theta, [len(theta), 3, c, c], align_corners=False)
    images = frames_rgb.permute(0, 3, 1, 2).float()  # (F, 3, H, W)
    rows = F.grid_sample(
        images, grids.view(frames_count, slots * c, c, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    crops = rows.view(frames_count, 3, slots, c, c).permute(0, 2, 1, 3, 4)[where[0], where[1]]  # (K, 3, c, c)
    crops = crops.round_().clamp_(0, 255).div_(255.0)  # uint8 levels, as the OpenCV crop
    mean = device_constant(IMAGENET_MEAN_RGB, device).view(1, 3, 1, 1)
    std = device_constant(IMAGENET_STD_RGB, device).view(1, 3, 1, 1)
    return crops.sub_(mean).div_(std).to(dtype)


def crop_people_on_device(
    frames_rgb: Sequence[np.ndarray], bboxes_cxcywh_px: Sequence[np.ndarray], device: str | torch.device
) -> torch.Tensor:
    """A few frames (H, W, 3) uint8 on the host, one video's (one size), and each frame's boxes
    (K_i, 4) [cx, cy, w, h] -> (sum K_i, 3, 224, 224) ImageNet-normalised float32 crops on ``device``,
    in order. The frames go over in one copy from pinned memory and are cropped in one call, as many
    as ``CALL_PIXELS`` allows: a GPU's launches and copies are paid per few frames, not per frame."""
    boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in bboxes_cxcywh_px]
    if not sum(len(b) for b in boxes):
        return torch.zeros((0, 3, CROP_SIZE_PX, CROP_SIZE_PX), device=device)
    height, width = frames_rgb[0].shape[:2]
    one_size = len({frame.shape for frame in frames_rgb}) == 1  # one video's frames are; if not, one by one
    per_call = max(1, CALL_PIXELS // (height * width)) if one_size else 1
    if len(frames_rgb) > per_call:
        parts = range(0, len(frames_rgb), per_call)
        return torch.cat(
            [crop_people_on_device(frames_rgb[i : i + per_call], boxes[i : i + per_call], device) for i in parts]
        )
    frame_index = np.repeat(np.arange(len(boxes)), [len(b) for b in boxes])
    return crop_people_batched(stacked_to_device(frames_rgb, device), frame_index, np.concatenate(boxes))
