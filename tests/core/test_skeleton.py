"""The SMPL -> Blender maths, checked against SMPL's own forward pass with a numpy model of how
Blender evaluates an armature (so no bpy is needed; the Blender suite checks the real thing)."""

import numpy as np
import pytest

from vibe_blender.core.motion import TrackMotion, frame_runs, ground_offset
from vibe_blender.core.rotations import axis_angle_to_quat, axis_angle_to_rotmat, quat_to_rotmat
from vibe_blender.core.skeleton import (
    CAMERA_TO_BLENDER,
    SMPL_TO_BLENDER,
    bone_basis_quats,
    bone_layout,
    bone_to_smpl_rotations,
    corrective_driver_expression,
    fps_to_blender,
    refit_basis_quats,
    refit_root_locations,
    root_locations,
    smpl_rotations_from_basis,
)
from vibe_blender.core.smpl_math import smpl_forward
from vibe_blender.core.smpl_model import JOINT_NAMES, PARENTS


def blender_pose(q_rest, heads, basis, loc0):
    """Blender's armature evaluation: rest B_j = [R_rest_j | head_j], pose P_j = T(loc) R(basis);
    M_j = M_parent · B_parent⁻¹ · B_j · P_j. Returns skinning matrices D_j = M_j B_j⁻¹ (24, 4, 4)."""
    B = np.tile(np.eye(4), (24, 1, 1))
    B[:, :3, :3], B[:, :3, 3] = quat_to_rotmat(q_rest), heads
    M = np.zeros((24, 4, 4))
    for j in range(24):
        P = np.eye(4)
        P[:3, :3] = quat_to_rotmat(basis[j])
        if j == 0:
            P[:3, 3] = loc0
            M[j] = B[j] @ P
        else:
            M[j] = M[PARENTS[j]] @ np.linalg.inv(B[PARENTS[j]]) @ B[j] @ P
    return M @ np.linalg.inv(B)


@pytest.mark.parametrize("source_to_blender", [CAMERA_TO_BLENDER, np.eye(3)], ids=["camera", "z_up"])
def test_bone_channels_reproduce_smpl_for_any_rest_orientation(body_model, source_to_blender):
    rng = np.random.default_rng(0)
    T = 3
    betas = rng.normal(0, 1.5, 10)
    pose = rng.normal(0, 0.6, (T, 72))
    trans = rng.normal(0, 1, (T, 3))
    offset = np.array([0.0, 0.0, 1.3])
    J = body_model.joints_rest(betas)
    heads, _ = bone_layout(J)
    q_rest = axis_angle_to_quat(rng.normal(0, 2, (24, 3)))  # any rest frames: the formula is general
    basis = bone_basis_quats(pose, q_rest, source_to_blender)
    loc = root_locations(trans, J[0], q_rest[0], source_to_blender, offset)
    v_ref, j_ref = smpl_forward(body_model, pose, betas, trans, pose_correctives=False)
    v_rest_bl = body_model.v_shaped(betas) @ SMPL_TO_BLENDER.T
    for t in range(T):
        D = blender_pose(q_rest, heads, basis[t], loc[t])
        W = np.einsum("vj,jab->vab", body_model.lbs_weights, D)
        verts = np.einsum("vab,vb->va", W[:, :3, :3], v_rest_bl) + W[:, :3, 3]
        joints = np.einsum("jab,jb->ja", D[:, :3, :3], heads) + D[:, :3, 3]
        np.testing.assert_allclose(verts, v_ref[t] @ source_to_blender.T + offset, atol=1e-9)
        np.testing.assert_allclose(joints, j_ref[t] @ source_to_blender.T + offset, atol=1e-9)


def test_camera_frame_person_stands_upright_facing_the_camera(body_model):
    """Root 180° about x in the camera frame = upright; in Blender the head is above the pelvis,
    the body faces -Y (towards the camera at the origin looking along +Y) and stands in front of it."""
    pose = np.zeros((1, 72))
    pose[0, :3] = [np.pi, 0, 0]
    _, joints = smpl_forward(body_model, pose, np.zeros(10), np.array([[0.0, 0.0, 4.0]]))
    bl = joints[0] @ CAMERA_TO_BLENDER.T
    assert bl[15, 2] - bl[0, 2] > 0.3  # head above pelvis
    assert bl[0, 1] > 3.5  # 4 m in front of the camera
    facing = CAMERA_TO_BLENDER @ axis_angle_to_rotmat(pose[0, :3]) @ np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(facing, [0.0, -1.0, 0.0], atol=1e-12)
    assert bl[1, 0] > bl[2, 0]  # left hip on the +X side, as in SMPL


def test_bone_layout_points_bones_at_children_and_names_mirror(body_model):
    J = body_model.joints_rest(np.zeros(10))
    heads, tails = bone_layout(J)
    np.testing.assert_allclose(heads, J @ SMPL_TO_BLENDER.T)
    np.testing.assert_allclose(tails[JOINT_NAMES.index("left_knee")], heads[JOINT_NAMES.index("left_ankle")])
    np.testing.assert_allclose(tails[0], heads[3])  # pelvis -> spine1, not a hip
    np.testing.assert_allclose(tails[9], heads[12])  # spine3 -> neck, not a collar
    assert np.all(np.linalg.norm(tails - heads, axis=1) > 1e-3)  # no zero-length bone
    for name in JOINT_NAMES:
        if name.startswith("left_"):
            assert "right_" + name[5:] in JOINT_NAMES


def test_in_place_keeps_pelvis_over_origin_but_keeps_height():
    rng = np.random.default_rng(1)
    trans = rng.normal(0, 1, (5, 3))
    J0, q0 = np.array([0.0, -0.2, 0.0]), np.array([1.0, 0, 0, 0])
    full = root_locations(trans, J0, q0, CAMERA_TO_BLENDER)
    still = root_locations(trans, J0, q0, CAMERA_TO_BLENDER, in_place=True)
    head = SMPL_TO_BLENDER @ J0
    np.testing.assert_allclose((still + head)[:, :2], 0.0, atol=1e-12)
    np.testing.assert_allclose(still[:, 2], full[:, 2])


def test_corrective_driver_expression_matches_the_matrix_and_fits_blender():
    rng = np.random.default_rng(2)
    q_rest = axis_angle_to_quat(rng.normal(0, 2, (24, 3)))
    M = bone_to_smpl_rotations(q_rest)
    for j in (1, 7, 23):
        w, x, y, z = axis_angle_to_quat(rng.normal(0, 1, 3))
        expected = M[j] @ quat_to_rotmat(np.array([w, x, y, z])) @ M[j].T - np.eye(3)
        for r in range(3):
            for c in range(3):
                expr = corrective_driver_expression(M[j], r, c)
                assert len(expr) < 256, expr  # Blender truncates longer ones
                assert set(expr) <= set("0123456789.+-*wxyze")  # a "simple expression"
                assert abs(eval(expr, {}, dict(w=w, x=x, y=y, z=z)) - expected[r, c]) < 1e-8


def test_smpl_rotations_come_back_from_the_keys_on_any_rest_pose():
    """What baked correctives are computed from when keys change in Blender (clean-up, merge)."""
    rng = np.random.default_rng(5)
    pose = rng.normal(0, 0.6, (4, 72))
    for q_rest in (axis_angle_to_quat(rng.normal(0, 2, (24, 3))), axis_angle_to_quat(rng.normal(0, 2, (24, 3)))):
        basis = bone_basis_quats(pose, q_rest, CAMERA_TO_BLENDER)
        R = smpl_rotations_from_basis(basis, q_rest)
        np.testing.assert_allclose(R[:, 1:], axis_angle_to_rotmat(pose.reshape(4, 24, 3))[:, 1:], atol=1e-12)


def test_refit_keeps_armature_space_rotations_and_pelvis_world_position():
    rng = np.random.default_rng(3)
    q_old, q_new = axis_angle_to_quat(rng.normal(0, 1, (24, 3))), axis_angle_to_quat(rng.normal(0, 1, (24, 3)))
    basis = axis_angle_to_quat(rng.normal(0, 1, (6, 24, 3)))
    new = refit_basis_quats(basis, q_old, q_new)
    arm = lambda q_rest, b: (
        quat_to_rotmat(q_rest)[None] @ quat_to_rotmat(b) @ quat_to_rotmat(q_rest).swapaxes(-1, -2)[None]
    )  # noqa: E731
    np.testing.assert_allclose(arm(q_new, new), arm(q_old, basis), atol=1e-12)
    loc = rng.normal(0, 1, (6, 3))
    h_old, h_new = rng.normal(0, 1, 3), rng.normal(0, 1, 3)
    loc_new = refit_root_locations(loc, h_old, q_old[0], h_new, q_new[0])
    np.testing.assert_allclose(
        loc_new @ quat_to_rotmat(q_new[0]).T + h_new, loc @ quat_to_rotmat(q_old[0]).T + h_old, atol=1e-12
    )


def test_fps_to_blender():
    assert fps_to_blender(25.0) == (25, 1.0)
    whole, base = fps_to_blender(30000 / 1001)
    assert whole == 30 and abs(base - 1.001) < 1e-9
    whole, base = fps_to_blender(23.976)
    assert whole == 24 and abs(whole / base - 23.976) < 1e-9
    with pytest.raises(ValueError):
        fps_to_blender(0.0)


def test_frame_runs_split_at_gaps():
    track = TrackMotion(
        name="t",
        frame_ids=np.array([0, 1, 2, 6, 7, 9]),
        pose=np.zeros((6, 72)),
        trans_m=np.zeros((6, 3)),
        betas=np.zeros(10),
    )
    assert frame_runs(track.frame_ids) == [(0, 3), (3, 5), (5, 6)]


def test_ground_offset_puts_the_feet_on_the_floor(body_model):
    rng = np.random.default_rng(4)
    pose = rng.normal(0, 0.1, (10, 72))
    pose[:, :3] = [np.pi, 0, 0]
    trans = np.tile([0.0, 0.9, 4.0], (10, 1))  # camera 0.9 m above the hips
    track = TrackMotion(name="t", frame_ids=np.arange(10), pose=pose, trans_m=trans, betas=np.zeros(10))
    offset = ground_offset(body_model, [track])
    verts, _ = smpl_forward(body_model, pose, np.zeros(10), trans, pose_correctives=False)
    lowest = (verts @ CAMERA_TO_BLENDER.T + offset)[..., 2].min(axis=1)
    assert offset[:2].tolist() == [0.0, 0.0]
    assert np.percentile(lowest, 2) == pytest.approx(0.0, abs=1e-9)
    assert lowest.min() > -0.01 and lowest.max() < 0.1  # nobody sinks or floats
