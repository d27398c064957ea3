"""The loss functions against hand-computed values of the original's formulas."""

import math

import torch

from vibe_server.train import losses


def test_2d_loss_weights_by_confidence_and_divides_by_every_element():
    pred = torch.zeros(2, 49, 2)
    gt = torch.zeros(2, 49, 3)
    gt[0, 30, :2] = torch.tensor([1.0, 2.0])
    gt[0, 30, 2] = 1.0  # visible: counts
    gt[1, 10, :2] = torch.tensor([5.0, 5.0])  # invisible: ignored
    expected = (1.0 + 4.0) / (2 * 49 * 2)
    assert math.isclose(losses.keypoint_2d_loss(pred, gt).item(), expected, rel_tol=1e-6)
    assert math.isclose(losses.keypoint_2d_loss(pred, gt, gt_weight=0.0).item(), 0.0, abs_tol=1e-9)


def test_3d_loss_uses_the_14_gt_joints_centred_on_the_hips():
    gt = torch.randn(3, 49, 3)
    shifted = gt + torch.tensor([0.5, -1.0, 3.0])  # a global translation costs nothing
    shifted[:, :25] = torch.randn(3, 25, 3)  # nor do the OpenPose joints
    assert losses.keypoint_3d_loss(shifted, gt).item() < 1e-10
    moved = gt.clone()
    moved[:, 25] += torch.tensor([0.14, 0.0, 0.0])  # right ankle off by 14 cm
    assert math.isclose(losses.keypoint_3d_loss(moved, gt).item(), 0.14**2 / (14 * 3), rel_tol=1e-4)
    empty = losses.keypoint_3d_loss(torch.randn(0, 49, 3, requires_grad=True), torch.zeros(0, 49, 3))
    assert empty.item() == 0.0 and empty.requires_grad


def test_pose_loss_compares_rotation_matrices_including_global_orientation():
    pose = torch.zeros(1, 72)
    pose[0, :3] = torch.tensor([math.pi / 2, 0.0, 0.0])  # only the global orientation differs
    loss_pose, loss_shape = losses.smpl_losses(pose, torch.ones(1, 10), torch.zeros(1, 72), torch.ones(1, 10))
    # R_x(90°) - I has four entries of magnitude 1 among 24 * 9
    assert math.isclose(loss_pose.item(), 4 / (24 * 9), rel_tol=1e-5)
    assert loss_shape.item() == 0.0


def test_lsgan_terms():
    fake, real = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [0.5], [0.0]])
    assert math.isclose(losses.generator_adversarial_loss(fake).item(), 0.5)  # ((0-1)^2 + 0) / 2
    d_real, d_fake, d_total = losses.discriminator_loss(real, fake)
    assert math.isclose(d_real.item(), (0 + 0.25 + 1) / 3, rel_tol=1e-6)
    assert math.isclose(d_fake.item(), 0.5) and math.isclose(d_total.item(), d_real.item() + 0.5, rel_tol=1e-6)


def test_generator_losses_supervise_2d_everywhere_and_3d_smpl_only_on_the_3d_part():
    n2, n3, t = 2, 1, 4
    pred = {
        "theta": torch.zeros(n2 + n3, t, 85),
        "kp_2d": torch.zeros(n2 + n3, t, 49, 2),
        "kp_3d": torch.zeros(n2 + n3, t, 49, 3),
    }
    pred["kp_3d"][:n2, :, 30] = 100.0  # errors in the 2D part's 3D joints: ignored
    gt_kp_2d = torch.zeros(n2 + n3, t, 49, 3)
    data_3d = {
        "kp_3d": torch.zeros(n3, t, 49, 3),
        "theta": torch.zeros(n3, t, 85),
        "w_3d": torch.ones(n3, t),
        "w_smpl": torch.zeros(n3, t),
    }
    weights = {"kp_2d": 300.0, "kp_3d": 300.0, "pose": 60.0, "shape": 0.06}
    out = losses.generator_losses(pred, gt_kp_2d, data_3d, n2, weights)
    assert set(out) == {"loss_kp_2d", "loss_kp_3d"}  # no SMPL ground truth: no pose/shape terms
    assert out["loss_kp_3d"].item() == 0.0

    gt_kp_2d[0, :, 0] = torch.tensor([0.1, 0.0, 1.0])  # a 2D-set sequence is supervised in 2D
    data_3d["w_smpl"][:] = 1.0
    data_3d["theta"][..., 75:] = 1.0
    out = losses.generator_losses(pred, gt_kp_2d, data_3d, n2, weights)
    assert math.isclose(out["loss_kp_2d"].item(), 300 * t * 0.01 / ((n2 + n3) * t * 49 * 2), rel_tol=1e-5)
    assert math.isclose(out["loss_shape"].item(), 0.06, rel_tol=1e-6) and out["loss_pose"].item() < 1e-10
