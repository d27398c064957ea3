"""Pose smoothing: the official One-Euro filter (parity with the fixture) and the rotation-aware
smoother, which must survive rotations crossing 180° where component-wise filtering breaks."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from vibe_blender.core.errors import VibeError
from vibe_blender.core.rotations import axis_angle_to_quat, make_continuous
from vibe_server.pipeline.smooth import one_euro_pose, smooth_pose, smooth_rotations


def geodesic_deg(pose_a, pose_b):
    """(T, 72) x2 -> (T, 24) angle between the rotations, degrees."""
    ra = Rotation.from_rotvec(np.asarray(pose_a, np.float64).reshape(-1, 3))
    rb = Rotation.from_rotvec(np.asarray(pose_b, np.float64).reshape(-1, 3))
    return np.degrees((ra.inv() * rb).magnitude()).reshape(len(pose_a), 24)


def root_near_180(T=60, wobble_deg=6.0, seed=0):
    """Root rotation about x that oscillates around 180° (crossing it), other joints small."""
    rng = np.random.default_rng(seed)
    angle = np.radians(180 + wobble_deg * np.sin(np.arange(T) * 0.9))
    rotvec = Rotation.from_rotvec(angle[:, None] * [1.0, 0.0, 0.0]).as_rotvec()  # wraps to <= π
    pose = np.zeros((T, 72), np.float32)
    pose[:, :3] = rotvec
    pose[:, 3:] = rng.normal(0, 0.2, (T, 69))
    return pose


def axis_angle_to_continuous_quat(pose: np.ndarray) -> np.ndarray:
    """pose (T, 72) -> quaternions (T, 24, 4) wxyz, signs flipped so that consecutive frames of a
    joint have a non-negative dot product (the shortest path between them)."""
    return make_continuous(axis_angle_to_quat(np.asarray(pose, np.float64).reshape(len(pose), 24, 3)))


def test_one_euro_matches_official_fixture(unit_reference):
    ref = unit_reference
    out = one_euro_pose(ref["fn_oneeuro_in"])
    np.testing.assert_allclose(out, ref["fn_oneeuro_out"], atol=1e-6)


def test_one_euro_passes_first_frame_and_lags_after_a_step():
    pose = np.zeros((10, 72), np.float32)
    pose[5:] = 1.0
    out = one_euro_pose(pose)
    assert np.array_equal(out[0], pose[0])
    assert 0.0 < out[5, 0] < 1.0  # low-pass: does not jump to the step at once


def test_rotation_smoothing_survives_the_180_degree_crossing():
    pose = root_near_180()
    # the axis-angle root flips sign where the angle crosses π: component-wise averaging breaks
    assert np.any(np.sign(pose[:-1, 0]) != np.sign(pose[1:, 0]))
    smoothed = smooth_rotations(pose, sigma_frames=2.0)
    assert geodesic_deg(smoothed, pose)[:, 0].max() < 8.0  # stays near 180° about x
    componentwise = gaussian_filter1d(pose, sigma=2.0, axis=0, mode="nearest")
    assert geodesic_deg(componentwise, pose)[:, 0].max() > 90.0  # same filter on axis-angle: collapses
    # the official One-Euro adapts to the apparent "fast motion" of the flip but still deviates more
    assert geodesic_deg(one_euro_pose(pose), pose)[:, 0].max() > geodesic_deg(smoothed, pose)[:, 0].max()


def test_rotation_smoothing_reduces_jitter_and_keeps_a_constant_pose():
    rng = np.random.default_rng(1)
    base = Rotation.from_rotvec(rng.normal(0, 0.5, (24, 3))).as_rotvec().reshape(72)
    constant = np.tile(base, (40, 1)).astype(np.float32)
    np.testing.assert_allclose(geodesic_deg(smooth_rotations(constant, 2.0), constant), 0, atol=1e-3)
    noisy = (
        (Rotation.from_rotvec(rng.normal(0, 0.05, (40 * 24, 3))) * Rotation.from_rotvec(constant.reshape(-1, 3)))
        .as_rotvec()
        .reshape(40, 72)
    )
    err_before = geodesic_deg(noisy, constant).mean()
    err_after = geodesic_deg(smooth_rotations(noisy, 2.0), constant).mean()
    assert err_after < 0.5 * err_before


def test_quaternions_are_sign_continuous():
    quat = axis_angle_to_continuous_quat(root_near_180())
    assert np.all(np.einsum("tjk,tjk->tj", quat[1:], quat[:-1]) >= 0)


def test_strength_zero_is_identity_and_bad_arguments_are_refused():
    pose = root_near_180()
    np.testing.assert_array_equal(smooth_pose(pose, 0.0, fps=30), pose)
    assert not np.allclose(smooth_pose(pose, 1.0, fps=30), pose)
    with pytest.raises(VibeError, match="between 0 and 1"):
        smooth_pose(pose, 1.5, fps=30)
    with pytest.raises(VibeError, match="rotation"):
        smooth_pose(pose, 0.5, fps=30, method="gaussian")
