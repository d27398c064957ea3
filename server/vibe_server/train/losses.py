"""VIBE's training losses as pure functions (official `lib/core/loss.py`).

Generator (weights from `TrainConfig`, official 300 / 300 / 60 / 0.06 / 0.5):
  2D keypoints  mean(conf * (kp_2d - gt)^2) over every element of the 2D + 3D batch (all 49 joints)
  3D keypoints  MSE on spin joints 25:39 after subtracting each side's hip mean (frames with w_3d)
  pose          MSE between Rodrigues matrices of theta[3:75] incl. global orientation (frames with w_smpl)
  shape         MSE on betas theta[75:85] (frames with w_smpl)
  adversarial   LSGAN: sum((D(fake) - 1)^2) / N
Discriminator: LSGAN sum((D(real) - 1)^2) / N_real + sum(D(fake)^2) / N_fake.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import batch_rodrigues

LSP_SLICE = slice(25, 39)  # the 14 ground-truth (LSP) joints inside spin-49
HIP_JOINTS = (2, 3)  # right hip, left hip inside those 14


def keypoint_2d_loss(
    pred_kp_2d: torch.Tensor, gt_kp_2d: torch.Tensor, openpose_weight: float = 1.0, gt_weight: float = 1.0
) -> torch.Tensor:
    """pred_kp_2d (M, 49, 2), gt_kp_2d (M, 49, 3) with confidence last -> scalar.

    Divides by the full element count (M*49*2), not by the confidence sum, as the release does."""
    conf = gt_kp_2d[:, :, 2:].clone()
    conf[:, :25] *= openpose_weight
    conf[:, 25:] *= gt_weight
    return (conf * (pred_kp_2d - gt_kp_2d[:, :, :2]) ** 2).mean()


def keypoint_3d_loss(pred_kp_3d: torch.Tensor, gt_kp_3d: torch.Tensor) -> torch.Tensor:
    """pred_kp_3d, gt_kp_3d (M, 49, 3) metres -> scalar; zero when M = 0."""
    if len(gt_kp_3d) == 0:
        return pred_kp_3d.sum() * 0.0  # keeps the graph (and DDP) happy
    pred, gt = pred_kp_3d[:, LSP_SLICE], gt_kp_3d[:, LSP_SLICE, :3]
    pred = pred - pred[:, list(HIP_JOINTS)].mean(dim=1, keepdim=True)
    gt = gt - gt[:, list(HIP_JOINTS)].mean(dim=1, keepdim=True)
    return F.mse_loss(pred, gt)


def smpl_losses(
    pred_pose: torch.Tensor, pred_betas: torch.Tensor, gt_pose: torch.Tensor, gt_betas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """pred_pose, gt_pose (M, 72) axis-angle; pred_betas, gt_betas (M, 10) -> (pose loss, shape loss)."""
    pred_rotmat = batch_rodrigues(pred_pose.reshape(-1, 3)).reshape(-1, 24, 3, 3)
    gt_rotmat = batch_rodrigues(gt_pose.reshape(-1, 3)).reshape(-1, 24, 3, 3)
    return F.mse_loss(pred_rotmat, gt_rotmat), F.mse_loss(pred_betas, gt_betas)


def generator_adversarial_loss(fake_score: torch.Tensor) -> torch.Tensor:
    """fake_score (N, 1) -> sum((D(fake) - 1)^2) / N."""
    return ((fake_score - 1.0) ** 2).sum() / fake_score.shape[0]


def discriminator_loss(
    real_score: torch.Tensor, fake_score: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """real_score (Nr, 1), fake_score (Nf, 1) -> (real term, fake term, their sum), unweighted."""
    real = ((real_score - 1.0) ** 2).sum() / real_score.shape[0]
    fake = (fake_score**2).sum() / fake_score.shape[0]
    return real, fake, real + fake


def generator_losses(
    pred: dict, gt_kp_2d: torch.Tensor, data_3d: dict, num_2d: int, weights: dict
) -> dict[str, torch.Tensor]:
    """The supervised generator terms, weighted.

    pred: generator output for the whole batch (2D sequences first, then 3D): `theta` (N, T, 85),
      `kp_2d` (N, T, 49, 2), `kp_3d` (N, T, 49, 3).
    gt_kp_2d (N, T, 49, 3): 2D targets of the whole batch, same order.
    data_3d: the 3D part's `kp_3d` (N3, T, 49, 3), `theta` (N3, T, 85), `w_3d`, `w_smpl` (N3, T).
    num_2d: how many leading sequences come from 2D datasets.
    weights: `kp_2d`, `kp_3d`, `pose`, `shape`.
    Returns `loss_kp_2d`, `loss_kp_3d` and, when some frame has SMPL ground truth, `loss_pose` and
    `loss_shape` (absent otherwise, as in the release).
    """
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # (N, T, ...) -> (N*T, ...)
    w_3d = data_3d["w_3d"].reshape(-1).bool()
    w_smpl = data_3d["w_smpl"].reshape(-1).bool()
    pred_kp_3d = flat(pred["kp_3d"][num_2d:])[w_3d]
    pred_theta = flat(pred["theta"][num_2d:])[w_smpl]
    gt_theta = flat(data_3d["theta"])[w_smpl]

    losses = {
        "loss_kp_2d": keypoint_2d_loss(flat(pred["kp_2d"]), flat(gt_kp_2d)) * weights["kp_2d"],
        "loss_kp_3d": keypoint_3d_loss(pred_kp_3d, flat(data_3d["kp_3d"])[w_3d]) * weights["kp_3d"],
    }
    if len(pred_theta) > 0:
        loss_pose, loss_shape = smpl_losses(
            pred_theta[:, 3:75], pred_theta[:, 75:], gt_theta[:, 3:75], gt_theta[:, 75:]
        )
        losses["loss_pose"] = loss_pose * weights["pose"]
        losses["loss_shape"] = loss_shape * weights["shape"]
    return losses
