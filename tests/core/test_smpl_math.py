import numpy as np

from vibe_blender.core.rotations import axis_angle_to_rotmat
from vibe_blender.core.smpl_math import pose_feature, smpl_forward


def test_rest_pose_is_the_shaped_template(body_model):
    betas = np.random.default_rng(0).normal(0, 1, 10)
    verts, joints = smpl_forward(body_model, np.zeros((1, 72)), betas, np.array([[0.1, 0.2, 0.3]]))
    np.testing.assert_allclose(verts[0], body_model.v_shaped(betas) + [0.1, 0.2, 0.3], atol=1e-12)
    np.testing.assert_allclose(joints[0], body_model.joints_rest(betas) + [0.1, 0.2, 0.3], atol=1e-12)


def test_rotating_one_joint_moves_its_subtree_rigidly(body_model):
    """Bending the left knee 90°: the left ankle rotates about the knee, the right leg stays."""
    pose = np.zeros((1, 72))
    pose[0, 3 * 4 : 3 * 5] = [np.pi / 2, 0, 0]
    _, joints = smpl_forward(body_model, pose, np.zeros(10), pose_correctives=False)
    J = body_model.joints_rest(np.zeros(10))
    R = axis_angle_to_rotmat(pose[0, 12:15])
    np.testing.assert_allclose(joints[0, 7], J[4] + R @ (J[7] - J[4]), atol=1e-12)
    np.testing.assert_allclose(joints[0, [2, 5, 8]], J[[2, 5, 8]], atol=1e-12)


def test_pose_feature_order_matches_posedirs():
    rotmat = axis_angle_to_rotmat(np.random.default_rng(1).normal(0, 1, (2, 24, 3)))
    feature = pose_feature(rotmat)
    assert feature.shape == (2, 207)
    j, r, c = 5, 1, 2
    assert feature[1, 9 * (j - 1) + 3 * r + c] == rotmat[1, j, r, c] - (r == c)
