"""Rotations and cameras with the official VIBE semantics (``lib/utils/geometry.py``, ``spin.py``,
``demo_utils.py``). Stateless tensor/array functions; every docstring starts with shapes.

Crop frame: the 224 px person crop, normalised to [-1, 1] (x right, y down). Camera frame: x right,
y down, z forward (an upright person facing the camera has a root rotation of about 180° about x).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FOCAL_LENGTH_CROP_PX = 5000.0  # the fixed focal length of VIBE's crop projection
CROP_SIZE_PX = 224.0


# --------------------------------------------------------------------------------------------
# Rotations
# --------------------------------------------------------------------------------------------


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """x (..., 6) -> rotation matrices (prod(...), 3, 3).

    The 6 numbers are read row-major as a 3x2 matrix ``[a00, a01, a10, a11, a20, a21]``: column 0
    and column 1 are Gram-Schmidt orthonormalised into b1, b2, and R = [b1 b2 b1×b2] by columns.
    (PyTorch3D's 6D convention is row-based and differs.)
    """
    x = x.reshape(-1, 3, 2)
    a1, a2 = x[:, :, 0], x[:, :, 1]
    b1 = F.normalize(a1, dim=1, eps=1e-6)  # eps 1e-6 as VIBE (not SPIN's 1e-12): degenerate
    b2 = F.normalize(a2 - torch.sum(b1 * a2, dim=1, keepdim=True) * b1, dim=-1, eps=1e-6)  # columns stay short
    b3 = torch.cross(b1, b2, dim=1)
    return torch.stack((b1, b2, b3), dim=-1)


def rotation_matrix_to_quaternion(rotation_matrix: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """rotation_matrix (B, 3, 4) or (B, 3, 3) -> quaternion (B, 4) as [w, x, y, z].

    The old kornia algorithm that VIBE uses: the branch is chosen on R^T[2,2] < eps and the
    diagonal comparisons, then divided by sqrt(t) and halved. Kept as is for parity.
    """
    rmat_t = torch.transpose(rotation_matrix, 1, 2)
    mask_d2 = rmat_t[:, 2, 2] < eps
    mask_d0_d1 = rmat_t[:, 0, 0] > rmat_t[:, 1, 1]
    mask_d0_nd1 = rmat_t[:, 0, 0] < -rmat_t[:, 1, 1]

    t0 = 1 + rmat_t[:, 0, 0] - rmat_t[:, 1, 1] - rmat_t[:, 2, 2]
    q0 = torch.stack(
        [rmat_t[:, 1, 2] - rmat_t[:, 2, 1], t0, rmat_t[:, 0, 1] + rmat_t[:, 1, 0], rmat_t[:, 2, 0] + rmat_t[:, 0, 2]],
        -1,
    )
    t1 = 1 - rmat_t[:, 0, 0] + rmat_t[:, 1, 1] - rmat_t[:, 2, 2]
    q1 = torch.stack(
        [rmat_t[:, 2, 0] - rmat_t[:, 0, 2], rmat_t[:, 0, 1] + rmat_t[:, 1, 0], t1, rmat_t[:, 1, 2] + rmat_t[:, 2, 1]],
        -1,
    )
    t2 = 1 - rmat_t[:, 0, 0] - rmat_t[:, 1, 1] + rmat_t[:, 2, 2]
    q2 = torch.stack(
        [rmat_t[:, 0, 1] - rmat_t[:, 1, 0], rmat_t[:, 2, 0] + rmat_t[:, 0, 2], rmat_t[:, 1, 2] + rmat_t[:, 2, 1], t2],
        -1,
    )
    t3 = 1 + rmat_t[:, 0, 0] + rmat_t[:, 1, 1] + rmat_t[:, 2, 2]
    q3 = torch.stack(
        [t3, rmat_t[:, 1, 2] - rmat_t[:, 2, 1], rmat_t[:, 2, 0] - rmat_t[:, 0, 2], rmat_t[:, 0, 1] - rmat_t[:, 1, 0]],
        -1,
    )

    mask_c0 = (mask_d2 & mask_d0_d1).view(-1, 1).type_as(q0)
    mask_c1 = (mask_d2 & ~mask_d0_d1).view(-1, 1).type_as(q1)
    mask_c2 = (~mask_d2 & mask_d0_nd1).view(-1, 1).type_as(q2)
    mask_c3 = (~mask_d2 & ~mask_d0_nd1).view(-1, 1).type_as(q3)

    q = q0 * mask_c0 + q1 * mask_c1 + q2 * mask_c2 + q3 * mask_c3
    q = q / torch.sqrt(
        t0.unsqueeze(1) * mask_c0 + t1.unsqueeze(1) * mask_c1 + t2.unsqueeze(1) * mask_c2 + t3.unsqueeze(1) * mask_c3
    )
    return q * 0.5


def quaternion_to_angle_axis(quaternion: torch.Tensor) -> torch.Tensor:
    """quaternion (..., 4) [w, x, y, z] -> axis-angle (..., 3), angle in [0, π]."""
    q1, q2, q3 = quaternion[..., 1], quaternion[..., 2], quaternion[..., 3]
    sin_squared_theta = q1 * q1 + q2 * q2 + q3 * q3
    sin_theta = torch.sqrt(sin_squared_theta)
    cos_theta = quaternion[..., 0]
    two_theta = 2.0 * torch.where(
        cos_theta < 0.0, torch.atan2(-sin_theta, -cos_theta), torch.atan2(sin_theta, cos_theta)
    )
    k_pos = two_theta / sin_theta
    k_neg = 2.0 * torch.ones_like(sin_theta)
    k = torch.where(sin_squared_theta > 0.0, k_pos, k_neg)
    return torch.stack([q1 * k, q2 * k, q3 * k], dim=-1)


def rotation_matrix_to_angle_axis(rotation_matrix: torch.Tensor) -> torch.Tensor:
    """rotation_matrix (B, 3, 3) or (B, 3, 4) -> axis-angle (B, 3); NaN (degenerate input) -> 0."""
    if rotation_matrix.shape[1:] == (3, 3):
        hom = torch.zeros(rotation_matrix.shape[0], 3, 1, dtype=rotation_matrix.dtype, device=rotation_matrix.device)
        hom[:, 2] = 1.0
        rotation_matrix = torch.cat([rotation_matrix, hom], dim=-1)
    aa = quaternion_to_angle_axis(rotation_matrix_to_quaternion(rotation_matrix))
    return torch.nan_to_num(aa, nan=0.0)


def quat_to_rotmat(quat: torch.Tensor) -> torch.Tensor:
    """quat (B, 4) [w, x, y, z], normalised here -> rotation matrices (B, 3, 3)."""
    q = quat / quat.norm(p=2, dim=1, keepdim=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    w2, x2, y2, z2 = w * w, x * x, y * y, z * z
    wx, wy, wz, xy, xz, yz = w * x, w * y, w * z, x * y, x * z, y * z
    return torch.stack(
        [
            w2 + x2 - y2 - z2,
            2 * xy - 2 * wz,
            2 * wy + 2 * xz,
            2 * wz + 2 * xy,
            w2 - x2 + y2 - z2,
            2 * yz - 2 * wx,
            2 * xz - 2 * wy,
            2 * wx + 2 * yz,
            w2 - x2 - y2 + z2,
        ],
        dim=1,
    ).view(-1, 3, 3)


def batch_rodrigues(theta: torch.Tensor) -> torch.Tensor:
    """theta (B, 3) axis-angle -> rotation matrices (B, 3, 3); the loss-side Rodrigues of VIBE."""
    angle = torch.norm(theta + 1e-8, p=2, dim=1).unsqueeze(-1)
    axis = theta / angle
    half = angle * 0.5
    return quat_to_rotmat(torch.cat([torch.cos(half), torch.sin(half) * axis], dim=1))


# --------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------


def projection(joints: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """joints (B, J, 3) metres, cam (B, 3) [s, tx, ty] -> keypoints (B, J, 2) in the crop, [-1, 1].

    A pinhole of focal 5000 px on the 224 px crop, placed at depth 2·5000/(224·s) so that it
    approximates the weak-perspective camera ``kp ≈ s·(X_xy + t_xy)``.
    """
    cam_t = torch.stack([cam[:, 1], cam[:, 2], 2 * FOCAL_LENGTH_CROP_PX / (CROP_SIZE_PX * cam[:, 0] + 1e-9)], dim=-1)
    points = joints + cam_t.unsqueeze(1)
    projected = points / points[:, :, -1].unsqueeze(-1)
    return projected[:, :, :2] * FOCAL_LENGTH_CROP_PX / (CROP_SIZE_PX / 2.0)


def convert_crop_cam_to_orig_img(
    cam: np.ndarray, bbox: np.ndarray, img_width: int, img_height: int, bbox_scale: float = 1.0
) -> np.ndarray:
    """cam (T, 3) [s, tx, ty] of the crop, bbox (T, 4) [cx, cy, w, h] px -> (T, 4) [sx, sy, tx, ty].

    The weak-perspective camera of the whole image (normalised by its half width/height).
    bbox_scale: the crop's scale relative to the box. The official demo uses 1.0 although it crops
    1.1 × the box, which draws bodies ~9 % too small; pass the crop scale (1.1) to correct that.
    """
    cx, cy, h = bbox[:, 0], bbox[:, 1], bbox[:, 2] * bbox_scale
    hw, hh = img_width / 2.0, img_height / 2.0
    sx = cam[:, 0] * (1.0 / (img_width / h))
    sy = cam[:, 0] * (1.0 / (img_height / h))
    tx = ((cx - hw) / hw / sx) + cam[:, 1]
    ty = ((cy - hh) / hh / sy) + cam[:, 2]
    return np.stack([sx, sy, tx, ty]).T


def convert_crop_coords_to_orig_img(
    bbox: np.ndarray, keypoints: np.ndarray, crop_size: int = 224, bbox_scale: float = 1.0
) -> np.ndarray:
    """bbox (T, 4) [cx, cy, w, h] px, keypoints (T, J, ≥2) in [-1, 1] -> new array, x/y in pixels.

    bbox_scale as in :func:`convert_crop_cam_to_orig_img` (official 1.0, corrected = crop scale).
    """
    cx, cy, h = bbox[:, 0], bbox[:, 1], bbox[:, 2] * bbox_scale
    out = keypoints.copy()
    out[:, :, :2] = 0.5 * crop_size * (keypoints[:, :, :2] + 1.0)
    out[:, :, :2] = out[:, :, :2] * (h[:, None, None] / crop_size)
    out[:, :, 0] = out[:, :, 0] + (cx - h / 2.0)[:, None]
    out[:, :, 1] = out[:, :, 1] + (cy - h / 2.0)[:, None]
    return out
