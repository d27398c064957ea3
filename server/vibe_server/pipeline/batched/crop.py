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
    frame_index: torch.Tensor,
    bboxes_cxcywh_px: np.ndarray,
    *,
    scale: float = BBOX_SCALE,
    crop_size_px: int = CROP_SIZE_PX,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """frames (F, H, W, 3) uint8 RGB on a device, frame_index (K,) long (the frame of each box),
    bboxes (K, 4) [cx, cy, w, h] pixels -> (K, 3, c, c) ImageNet-normalised crops on that device."""
    device = frames_rgb.device
    _, height, width, _ = frames_rgb.shape
    affines = crop_to_image_affines(bboxes_cxcywh_px, scale=scale, crop_size_px=crop_size_px)
    theta = torch.as_tensor(
        _grid_sample_theta(affines, height, width, crop_size_px), dtype=torch.float32, device=device
    )
    images = frames_rgb.index_select(0, frame_index.to(device)).permute(0, 3, 1, 2).float()  # (K, 3, H, W)
    grid = F.affine_grid(theta, [len(theta), 3, crop_size_px, crop_size_px], align_corners=False)
    crops = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    crops = crops.round_().clamp_(0, 255).div_(255.0)  # uint8 levels, as the OpenCV crop
    mean = torch.tensor(IMAGENET_MEAN_RGB, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB, device=device).view(1, 3, 1, 1)
    return crops.sub_(mean).div_(std).to(dtype)


def crop_people_on_device(
    frames_rgb: Sequence[np.ndarray], bboxes_cxcywh_px: Sequence[np.ndarray], device: str | torch.device
) -> torch.Tensor:
    """A few frames (H, W, 3) uint8 on the host, one video's (one size), and each frame's boxes
    (K_i, 4) [cx, cy, w, h] -> (sum K_i, 3, 224, 224) ImageNet-normalised float32 crops on ``device``,
    in order. The frames go over in one copy (from pinned memory on a GPU) and are cropped in one
    call: a GPU's launches and copies are paid per few frames, not per frame."""
    if len({frame.shape for frame in frames_rgb}) > 1:  # frames of one video have one size; if not, one by one
        return torch.cat([crop_people_on_device([f], [b], device) for f, b in zip(frames_rgb, bboxes_cxcywh_px)])
    boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in bboxes_cxcywh_px]
    if not sum(len(b) for b in boxes):
        return torch.zeros((0, 3, CROP_SIZE_PX, CROP_SIZE_PX), device=device)
    on_cuda = torch.device(device).type == "cuda"  # pinned: the copy runs beside the host's work
    host = torch.empty((len(frames_rgb), *frames_rgb[0].shape), dtype=torch.uint8, pin_memory=on_cuda)
    for slot, frame in zip(host.numpy(), frames_rgb):
        slot[...] = frame
    frames = host.to(device, non_blocking=True)
    frame_index = torch.from_numpy(np.repeat(np.arange(len(boxes)), [len(b) for b in boxes]))
    return crop_people_batched(frames, frame_index, np.concatenate(boxes))
