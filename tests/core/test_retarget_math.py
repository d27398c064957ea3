"""Retargeting maths: FK, swing/twist rest correction, solving pose channels, root scaling."""

import numpy as np
import pytest

from vibe_blender.core.errors import VibeError
from vibe_blender.core.retarget_math import (
    EULER_ORDERS,
    axis_rotations,
    compose_basis,
    euler_to_rotmat,
    heading_turn,
    hip_height,
    leg_length,
    leg_scale,
    pose_from_basis,
    rest_offsets,
    retarget_rotations,
    rotation_keys,
    rotation_matrices,
    rotation_part,
    rotmat_to_euler,
    scale_root_motion,
    solve_basis,
    sub_skeleton,
    swing_rotation,
    topological_order,
)
from vibe_blender.core.rotations import axis_angle_to_rotmat, make_continuous, quat_to_rotmat, rotmat_to_quat
from vibe_blender.core.smpl_model import PARENTS


def random_rotations(rng, shape, scale=np.pi):
    return axis_angle_to_rotmat(rng.normal(0, scale / 2, shape + (3,)))


def random_rig(rng, parents, rest_scale=np.pi):
    """rest (N, 4, 4): random rotations, heads 10-30 cm from the parent's head."""
    N = len(parents)
    rest = np.tile(np.eye(4), (N, 1, 1))
    rest[:, :3, :3] = random_rotations(rng, (N,), rest_scale)
    for j in topological_order(parents):
        p = parents[j]
        rest[j, :3, 3] = 0 if p < 0 else rest[p, :3, 3] + rng.uniform(-0.3, 0.3, 3)
    return rest


def angle_deg(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, -1)))


def test_euler_order_matches_blender_convention():
    e = np.array([0.3, -0.7, 1.1])
    Rx, Ry, Rz = (axis_rotations(e[i], i) for i in range(3))
    np.testing.assert_allclose(euler_to_rotmat(e, "XYZ"), Rz @ Ry @ Rx, atol=1e-12)
    np.testing.assert_allclose(euler_to_rotmat(e, "ZXY"), Ry @ Rx @ Rz, atol=1e-12)
    with pytest.raises(VibeError, match="permutation"):
        euler_to_rotmat(e, "XXY")


@pytest.mark.parametrize("order", EULER_ORDERS)
def test_euler_angles_of_rotations_round_trip_also_where_the_axes_line_up(order):
    rng = np.random.default_rng(3)
    R = random_rotations(rng, (200,))
    np.testing.assert_allclose(euler_to_rotmat(rotmat_to_euler(R, order), order), R, atol=1e-12)
    lined_up = rng.uniform(-3, 3, (40, 3))
    lined_up[:, "XYZ".index(order[1])] = rng.choice([-np.pi / 2, np.pi / 2], 40)  # gimbal: middle angle ±90°
    R = euler_to_rotmat(lined_up, order)
    np.testing.assert_allclose(euler_to_rotmat(rotmat_to_euler(R, order), order), R, atol=1e-12)


@pytest.mark.parametrize("order", EULER_ORDERS)
def test_euler_keys_are_continuous_through_whole_turns_and_past_the_middle_axis_limit(order):
    """Keys that jump by 2π (or from one Euler triple to its twin) spin the bone between frames."""
    t = np.linspace(0.0, 6 * np.pi, 400)[:, None]
    axis = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    spin = axis_angle_to_rotmat(t * axis)  # three turns about a tilted axis
    middle = np.zeros(3)
    middle["XYZ".index(order[1])] = 1.0
    # a turn about the middle axis from 0 to 2.5 rad: past 90°, where the angle itself cannot go on
    sweep = axis_angle_to_rotmat(np.linspace(0, 2.5, 400)[:, None] * middle) @ euler_to_rotmat([0.2, 0.3, 0.1], order)
    for R in (spin, sweep):
        euler = rotmat_to_euler(R, order)
        np.testing.assert_allclose(euler_to_rotmat(euler, order), R, atol=1e-12)
        assert np.abs(np.diff(euler, axis=0)).max() < 0.25  # ~0.05 rad of motion per frame
    # several bones at once: the same per bone
    both = rotmat_to_euler(np.stack([spin, sweep], 1), order)
    np.testing.assert_allclose(both[:, 0], rotmat_to_euler(spin, order), atol=1e-12)


@pytest.mark.parametrize("mode", [*EULER_ORDERS, "QUATERNION", "AXIS_ANGLE"])
def test_rotation_keys_of_each_mode_give_back_the_rotations_and_run_on_smoothly(mode):
    rng = np.random.default_rng(4)
    R = random_rotations(rng, (30, 5))
    q = make_continuous(rotmat_to_quat(R))
    np.testing.assert_allclose(rotation_matrices(rotation_keys(q, mode), mode), R, atol=1e-12)
    t = np.linspace(0.05, 6 * np.pi, 300)[:, None]
    spin = axis_angle_to_rotmat(t * np.array([0.6, 0.0, 0.8]))
    keys = rotation_keys(make_continuous(rotmat_to_quat(spin)), mode)
    np.testing.assert_allclose(rotation_matrices(keys, mode), spin, atol=1e-12)
    assert np.abs(np.diff(keys, axis=0)).max() < 0.25
    if mode == "QUATERNION":
        np.testing.assert_array_equal(rotation_keys(q, mode), q)  # written as solved
    if mode == "AXIS_ANGLE":  # Blender's reading: the axis need not be unit, a zero axis turns nothing
        np.testing.assert_allclose(
            rotation_matrices([[0.7, 0.0, 2.0, 0.0], [1.0, 0, 0, 0]], mode)[0], axis_rotations(0.7, 1), atol=1e-12
        )
        np.testing.assert_allclose(rotation_matrices([[1.0, 0, 0, 0]], mode)[0], np.eye(3))


def test_swing_rotation_takes_a_to_b_including_opposite_vectors():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3))
    b = rng.normal(size=(50, 3))
    b[0] = -a[0]  # antiparallel
    b[1] = a[1] * 2  # parallel
    R = swing_rotation(a, b)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.tile(np.eye(3), (50, 1, 1)), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    assert angle_deg(np.einsum("nab,nb->na", R, a), b).max() < 1e-6
    # smallest rotation: the rotation axis is perpendicular to both vectors
    axis = np.cross(a[2:], b[2:])
    np.testing.assert_allclose(np.einsum("nab,nb->na", R[2:], axis), axis, atol=1e-9)


def test_rest_offset_is_a_pure_twist_about_the_bone_axis():
    rng = np.random.default_rng(1)
    src, tgt = random_rotations(rng, (30,)), random_rotations(rng, (30,))
    offsets = rest_offsets(src, tgt)
    np.testing.assert_allclose(offsets[:, :, 1], np.tile([0.0, 1.0, 0.0], (30, 1)), atol=1e-9)


def test_forward_kinematics_of_a_two_bone_chain_by_hand():
    rest = np.tile(np.eye(4), (2, 1, 1))
    rest[1, :3, 3] = [0, 1, 0]  # child head one unit along the parent's Y
    basis = np.tile(np.eye(4), (1, 2, 1, 1))
    basis[0, 0, :3, :3] = axis_rotations(np.pi / 2, 2)  # parent turns 90° about Z
    basis[0, 0, :3, 3] = [5, 0, 0]
    pose = pose_from_basis(np.array([-1, 0]), rest, basis)
    np.testing.assert_allclose(pose[0, 1, :3, 3], [5 - 1, 0, 0], atol=1e-12)  # (0,1,0) turned to (-1,0,0)


def test_topological_order_rejects_cycles():
    assert topological_order(np.array([2, -1, 1])) == [1, 2, 0]
    with pytest.raises(VibeError, match="cycle"):
        topological_order(np.array([1, 0]))


def test_retarget_to_a_rig_with_other_rest_rotations_matches_world_directions():
    """SMPL-tree source with random rest frames and motion -> target with other rest rotations,
    object rotation and scale, and extra unmapped bones: every mapped bone direction matches."""
    rng = np.random.default_rng(2)
    T = 40
    src_rest = random_rig(rng, PARENTS)
    src_basis = compose_basis(np.zeros((T, 24, 3)), random_rotations(rng, (T, 24), 1.0))
    src_basis[:, 0, :3, 3] = rng.normal(0, 0.3, (T, 3))
    src_world = pose_from_basis(PARENTS, src_rest, src_basis)  # source object = identity

    # target: the SMPL tree plus an unmapped bone inserted above each spine joint and a root bone
    tgt_parents = np.concatenate([PARENTS + 1, [0, 0, 0]])  # 24 mapped + 3 extras
    tgt_parents[0] = -1  # bone 0 = "root"
    tgt_parents = np.concatenate([[-1], np.where(PARENTS < 0, 0, PARENTS + 1), [1, 4, 7]])
    N = len(tgt_parents)
    tgt_rest = random_rig(rng, tgt_parents)
    obj = np.eye(4)
    obj[:3, :3] = 0.01 * axis_rotations(np.pi / 2, 0)  # like an FBX import
    obj[:3, 3] = [1, 2, 0]
    mapped = np.zeros(N, bool)
    mapped[1:25] = True
    tgt_rest_world_rot = rotation_part(obj @ tgt_rest)
    offsets = rest_offsets(rotation_part(src_rest), tgt_rest_world_rot[1:25])
    world_rot = retarget_rotations(rotation_part(src_world), offsets)  # (T, 24, 3, 3)
    target_rot = np.tile(np.eye(3), (T, N, 1, 1))
    target_rot[:, 1:25] = rotation_part(obj).T @ world_rot
    head_world = src_world[:, 0, :3, 3]
    head_arm = (np.linalg.inv(obj) @ np.concatenate([head_world, np.ones((T, 1))], -1).T).T[:, :3]
    quats, loc = solve_basis(tgt_parents, tgt_rest, target_rot, mapped, 1, head_arm)
    tgt_basis = compose_basis(np.zeros((T, N, 3)), quat_to_rotmat(quats))
    tgt_basis[:, 1, :3, 3] = loc
    tgt_world = obj @ pose_from_basis(tgt_parents, tgt_rest, tgt_basis)
    err = angle_deg(tgt_world[:, 1:25, :3, 1], src_world[:, :, :3, 1])
    assert err.max() < 1e-6
    np.testing.assert_allclose(tgt_world[:, 1, :3, 3], head_world, atol=1e-9)
    np.testing.assert_allclose(quats[:, 25:], np.tile([1.0, 0, 0, 0], (T, 3, 1)), atol=1e-12)  # unmapped: rest
    assert np.all(np.sum(quats[1:] * quats[:-1], -1) >= 0)  # sign continuity


def test_solving_only_the_mapped_chains_gives_their_channels_exactly():
    """The bones outside the mapped chains (extra leaves, another hierarchy) move none of them: solving
    on the chains alone (sub_skeleton) gives the same channels as on the whole rig."""
    rng = np.random.default_rng(3)
    parents = np.array([-1, 0, 1, 2, 1, 4, -1, 6, 2, 8, 8, 5])  # 6, 7: another root; 8-11: leaves
    rest = random_rig(rng, parents)
    T, N = 7, len(parents)
    mapped = np.zeros(N, bool)
    mapped[[1, 2, 3, 5]] = True
    target_rot = random_rotations(rng, (T, N))
    head = rng.normal(0, 0.3, (T, 3))
    quats, loc = solve_basis(parents, rest, target_rot, mapped, 1, head)
    keep = [3, 2, 1, 0, 5, 4]  # mapped bones and their parents, in the order bones_with_parents gives
    sub = sub_skeleton(parents, keep)
    np.testing.assert_array_equal(sub, [1, 2, 3, -1, 5, 2])
    sub_quats, sub_loc = solve_basis(sub, rest[keep], target_rot[:, keep], mapped[keep], keep.index(1), head)
    np.testing.assert_allclose(sub_quats, quats[:, keep], atol=1e-12)
    np.testing.assert_allclose(sub_loc, loc, atol=1e-12)
    with pytest.raises(ValueError, match="parents of kept bones"):
        sub_skeleton(parents, [3, 2])


def test_root_motion_scales_about_the_floor_point_under_the_hips():
    src = np.array([[0.0, 0.0, 0.9], [1.0, 0.5, 0.95]])
    out = scale_root_motion(src, [0, 0, 0], [2, 0, 0.1], 0.5)
    np.testing.assert_allclose(out, [[2, 0, 0.55], [2.5, 0.25, 0.575]])
    assert hip_height(np.array([0, 0, 0.9]), 0.1) == pytest.approx(0.8)
    with pytest.raises(VibeError, match="leg length"):
        hip_height(np.array([0, 0, 0.0]), 0.1)


def test_leg_length_is_the_chain_hip_knee_ankle_ground_and_the_scale_its_ratio():
    hip, knee, ankle = np.array([0.1, 0, 0.9]), np.array([0.1, 0.03, 0.5]), np.array([0.1, 0, 0.1])
    chain = np.linalg.norm(knee - hip) + np.linalg.norm(ankle - knee)
    assert leg_length(hip, knee, ankle, ground_z=0.02) == pytest.approx(chain + 0.08)
    assert leg_length(hip, knee, ankle, ground_z=0.5) == pytest.approx(chain)  # contact above: no drop
    # legs x1.15 about the hips, the hip-to-pelvis offset unchanged: the scale is 1.15, whatever the pelvis
    scaled = [leg_length(hip, hip + 1.15 * (knee - hip), hip + 1.15 * (ankle - hip), hip[2] - 1.15 * (hip[2] - 0.02))]
    assert leg_scale([leg_length(hip, knee, ankle, 0.02)], scaled) == pytest.approx(1.15)
    assert leg_scale([1.0, 0.9], [1.2, 1.0]) == pytest.approx(2.2 / 1.9)
    with pytest.raises(VibeError, match="no length"):
        leg_length(hip, hip, hip, hip[2])


def test_the_heading_turn_is_about_z_from_the_first_level_pair_and_turns_the_hips_travel():
    """A rig turned 180° about Z (left hip at -x) gets the half turn; a pair standing upright in
    either rig is skipped for the next; a rig only stood up (an FBX rig's 90° about X) turns nothing.
    Before, the limbs were matched in world directions, mirrored through a turned rig's body."""
    half = heading_turn([[0.2, 0, 0]], [[-0.2, 0, 0]])
    np.testing.assert_allclose(half, np.diag([-1.0, -1.0, 1.0]), atol=1e-12)
    quarter = heading_turn([[0, 0, 0.3], [0.3, 0, 0.01]], [[0.3, 0, 0], [0, 0.3, 0]])
    np.testing.assert_allclose(quarter @ [1.0, 0, 0], [0, 1.0, 0], atol=1e-3)
    np.testing.assert_allclose(heading_turn([[0.2, 0, 0]], [[0.2, 0, 0]]), np.eye(3))
    np.testing.assert_allclose(heading_turn([[0, 0, 1.0]], [[0, 0, 1.0]]), np.eye(3))  # nothing level: none
    # hips a micrometre apart (an FBX import) tell no heading: the shoulders of a 1.7 m rig do
    tiny = heading_turn([[0.2, 0, 0], [0.3, 0, 0]], [[-1e-6, 1e-6, 0], [-0.3, 0, 0]], (1.7, 1.7))
    np.testing.assert_allclose(tiny, half, atol=1e-12)
    src = np.array([[0.0, 0.0, 0.9], [0.0, -1.0, 0.9]])  # walking -Y
    out = scale_root_motion(src, [0, 0, 0.9], [1, 0, 0.9], 2.0, half)
    np.testing.assert_allclose(out, [[1, 0, 0.9], [1, 2, 0.9]], atol=1e-12)  # the turned rig walks +Y
