"""The paper's 3D pose metrics, with the official definitions (VIBE `lib/utils/eval_utils.py`).

All inputs are in metres and all outputs too; the reports multiply by 1000 (mm). Joints are the
14 LSP-ordered joints (`J_regressor_h36m` through `H36M_TO_J14`); the pelvis is the mean of joints
2 and 3 (right and left hip). Pure tensor/array functions: no model, no data loading.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayOrTensor = np.ndarray | torch.Tensor

PELVIS_JOINTS = (2, 3)  # right hip, left hip in the 14-joint (LSP) order


def centre_on_pelvis(joints: ArrayOrTensor) -> ArrayOrTensor:
    """joints (N, 14, 3) -> the same minus the mean of the two hip joints (works for numpy and torch)."""
    pelvis = (joints[:, PELVIS_JOINTS[0]] + joints[:, PELVIS_JOINTS[1]]) / 2.0
    return joints - pelvis[:, None, :]


def similarity_transform(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """pred, target (J, 3) -> pred after the Procrustes fit (scale, rotation, translation) to target.

    Reflections are excluded by flipping the smallest singular direction (sign of det)."""
    pred_t, target_t = pred.T, target.T  # (3, J)
    mu_pred = pred_t.mean(axis=1, keepdims=True)
    mu_target = target_t.mean(axis=1, keepdims=True)
    x_pred, x_target = pred_t - mu_pred, target_t - mu_target
    var_pred = np.sum(x_pred**2)
    k = x_pred @ x_target.T  # (3, 3)
    u, _, vh = np.linalg.svd(k)
    v = vh.T
    z = np.eye(3)
    z[-1, -1] *= np.sign(np.linalg.det(u @ v.T))
    rotation = v @ z @ u.T
    scale = np.trace(rotation @ k) / var_pred
    translation = mu_target - scale * rotation @ mu_pred
    return (scale * rotation @ pred_t + translation).T


def batch_similarity_transform(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (N, J, 3) -> pred (N, J, 3) aligned to target frame by frame (Procrustes with scale)."""
    pred_t, target_t = pred.transpose(1, 2), target.transpose(1, 2)  # (N, 3, J)
    mu_pred = pred_t.mean(dim=2, keepdim=True)
    mu_target = target_t.mean(dim=2, keepdim=True)
    x_pred, x_target = pred_t - mu_pred, target_t - mu_target
    var_pred = (x_pred**2).sum(dim=(1, 2))  # (N,)
    k = x_pred @ x_target.transpose(1, 2)  # (N, 3, 3)
    u, _, vh = torch.linalg.svd(k)
    v = vh.transpose(1, 2)
    z = torch.eye(3, dtype=pred.dtype, device=pred.device).repeat(len(pred), 1, 1)
    z[:, -1, -1] *= torch.sign(torch.linalg.det(u @ v.transpose(1, 2)))
    rotation = v @ z @ u.transpose(1, 2)
    scale = torch.einsum("nii->n", rotation @ k) / var_pred  # trace(R K) / var
    translation = mu_target - scale[:, None, None] * (rotation @ mu_pred)
    return (scale[:, None, None] * rotation @ pred_t + translation).transpose(1, 2)


def mpjpe_per_frame(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (N, 14, 3) metres -> (N,) mean joint error after pelvis alignment."""
    pred, target = centre_on_pelvis(pred), centre_on_pelvis(target)
    return (pred - target).norm(dim=-1).mean(dim=-1)


def pa_mpjpe_per_frame(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (N, 14, 3) metres -> (N,) mean joint error after pelvis alignment and Procrustes."""
    pred, target = centre_on_pelvis(pred), centre_on_pelvis(target)
    aligned = batch_similarity_transform(pred, target)
    return (aligned - target).norm(dim=-1).mean(dim=-1)


def compute_errors(target: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """target, pred (N, 14, 3) -> per-frame MPJPE and PA-MPJPE (N,), (N,) in metres (numpy path,
    one frame at a time, as the official `compute_errors`)."""
    errors, errors_pa = [], []
    for target_j, pred_j in zip(target, pred):
        target_j = target_j - target_j[list(PELVIS_JOINTS)].mean(axis=0)
        pred_j = pred_j - pred_j[list(PELVIS_JOINTS)].mean(axis=0)
        errors.append(np.mean(np.linalg.norm(target_j - pred_j, axis=1)))
        aligned = similarity_transform(pred_j, target_j)
        errors_pa.append(np.mean(np.linalg.norm(target_j - aligned, axis=1)))
    return np.asarray(errors), np.asarray(errors_pa)


def compute_accel(joints: np.ndarray) -> np.ndarray:
    """joints (N, J, 3) -> (N-2,) mean over joints of |x[t+1] - 2 x[t] + x[t-1]|, t = 1..N-2."""
    accel = joints[:-2] - 2 * joints[1:-1] + joints[2:]
    return np.mean(np.linalg.norm(accel, axis=2), axis=1)


def compute_error_accel(joints_gt: np.ndarray, joints_pred: np.ndarray) -> np.ndarray:
    """joints_gt, joints_pred (N, J, 3) -> (N-2,) mean over joints of the acceleration difference."""
    accel_gt = joints_gt[:-2] - 2 * joints_gt[1:-1] + joints_gt[2:]
    accel_pred = joints_pred[:-2] - 2 * joints_pred[1:-1] + joints_pred[2:]
    return np.mean(np.linalg.norm(accel_pred - accel_gt, axis=2), axis=1)


def vertex_error_per_frame(pred_verts: torch.Tensor, target_verts: torch.Tensor) -> torch.Tensor:
    """pred_verts, target_verts (N, V, 3) metres -> (N,) mean vertex error, no alignment (PVE)."""
    return (pred_verts - target_verts).norm(dim=-1).mean(dim=-1)
