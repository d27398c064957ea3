"""Clean-up on synthetic walking motion with injected jitter and sliding."""

import numpy as np
import pytest

from vibe_blender.core.cleanup import (
    clean_up,
    detect_contacts,
    foot_slide_mm,
    gaussian_smooth,
    ground_offset,
    jitter,
    joint_positions,
    merge_tracks,
    planted_leg_rotations,
    reach,
    segments,
    smooth_quaternions,
    trim_mask,
)
from vibe_blender.core.errors import VibeError
from vibe_blender.core.retarget_math import pose_matrices, swing_rotation
from vibe_blender.core.rotations import axis_angle_to_quat, make_continuous, quat_multiply
from vibe_blender.core.smpl_model import JOINT_NAMES, PARENTS

FPS = 30.0
# Rough SMPL T-pose joints in Blender's frame (Z up, facing -Y), metres.
J_REST = np.array(
    [
        [0, 0, 0.93],
        [0.06, 0, 0.84],
        [-0.06, 0, 0.84],
        [0, 0, 1.04],
        [0.10, 0, 0.47],
        [-0.10, 0, 0.47],
        [0, 0, 1.17],
        [0.09, 0.03, 0.08],
        [-0.09, 0.03, 0.08],
        [0, 0, 1.22],
        [0.11, -0.10, 0.02],
        [-0.11, -0.10, 0.02],
        [0, 0, 1.44],
        [0.08, 0, 1.36],
        [-0.08, 0, 1.36],
        [0, -0.02, 1.53],
        [0.18, 0, 1.40],
        [-0.18, 0, 1.40],
        [0.43, 0, 1.40],
        [-0.43, 0, 1.40],
        [0.68, 0, 1.40],
        [-0.68, 0, 1.40],
        [0.76, 0, 1.40],
        [-0.76, 0, 1.40],
    ]
)
IDX = {n: i for i, n in enumerate(JOINT_NAMES)}
LEGS = [
    (IDX["left_hip"], IDX["left_knee"], IDX["left_ankle"]),
    (IDX["right_hip"], IDX["right_knee"], IDX["right_ankle"]),
]


def bone_rest_matrices(heads: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """heads, tails (N, 3) armature space -> rest matrices (N, 4, 4) of roll-0 bones (Y along the
    bone, the smallest rotation from +Y, as Blender builds edit bones away from the -Y direction)."""
    heads = np.asarray(heads, dtype=np.float64)
    rest = np.tile(np.eye(4), (len(heads), 1, 1))
    rest[:, :3, :3] = swing_rotation(np.tile([0.0, 1.0, 0.0], (len(heads), 1)), np.asarray(tails) - heads)
    rest[:, :3, 3] = heads
    return rest


def smpl_rest():
    tails = J_REST.copy()
    for j in range(24):
        kids = np.flatnonzero(PARENTS == j)
        child = {0: 3, 9: 12}.get(j, kids[0] if len(kids) else None)
        tails[j] = J_REST[child] if child is not None else J_REST[j] + 0.5 * (J_REST[j] - J_REST[PARENTS[j]])
    return bone_rest_matrices(J_REST, tails)


def clean_walk(T=150, rest=None):
    """A walk along -Y at 0.6 m/s with planted feet (made by IK), and its true stance masks.
    rest: the rig's rest matrices (24, 4, 4), default :func:`smpl_rest`."""
    rest = smpl_rest() if rest is None else rest
    t = np.arange(T) / FPS
    phase = t % 1.0  # 1 s gait cycle
    root_world = np.stack([0.01 * np.sin(2 * np.pi * t), -0.6 * t, 0.84 + 0.01 * np.cos(4 * np.pi * t)], -1)
    root_loc = (root_world - J_REST[0]) @ rest[0, :3, :3]
    quats = np.tile([1.0, 0, 0, 0], (T, 24, 1))
    # arms down a little and swinging, so that every bone moves
    for side, sign in (("left", 1), ("right", -1)):
        swing = 0.3 * np.sin(2 * np.pi * t + (0 if sign > 0 else np.pi))
        quats[:, IDX[f"{side}_shoulder"]] = axis_angle_to_quat(
            np.stack([swing, np.zeros(T), np.full(T, -1.1 * sign)], -1)
        )
    targets, stance = np.zeros((T, 2, 3)), np.zeros((T, 2), bool)
    for f, (offset, x) in enumerate(((0.0, 0.09), (0.5, -0.09))):
        p = (phase + offset) % 1.0  # stance while p < 0.6
        cycle = np.floor(t + offset)
        plant_y = -0.6 * (cycle - offset + 0.3)  # body position at mid-stance
        stance[:, f] = p < 0.6
        s = np.clip((p - 0.6) / 0.4, 0, 1)  # swing progress
        y = np.where(p < 0.6, plant_y, plant_y - s * 0.6)
        z = 0.08 + np.where(p < 0.6, 0.0, 0.08 * np.sin(np.pi * s))
        targets[:, f] = np.stack([np.full(T, x), y, z], -1)
    quats = reach(PARENTS, rest, quats, root_loc, LEGS, targets)
    return rest, quats, root_loc, stance


def noisy(quats, root_loc, rng, jitter_deg=0.5, root_noise_m=0.003, slide_m=0.025):
    T = len(quats)
    noise = axis_angle_to_quat(rng.normal(0, np.radians(jitter_deg), (T, 24, 3)))
    q = make_continuous(quat_multiply(quats, noise))
    slide = slide_m * np.stack(
        [np.sin(2 * np.pi * np.arange(T) / 30), np.cos(2 * np.pi * np.arange(T) / 40), np.zeros(T)], -1
    )
    return q, root_loc + rng.normal(0, root_noise_m, root_loc.shape) + slide


def test_clean_walk_has_planted_feet_and_detected_contacts():
    rest, quats, root_loc, stance = clean_walk()
    pos = joint_positions(PARENTS, rest, quats, root_loc)
    ankles = pos[:, [LEGS[0][2], LEGS[1][2]]]
    assert foot_slide_mm(ankles, stance) < 0.01
    contacts = detect_contacts(ankles, FPS)
    agree = (contacts == stance).mean()
    assert agree > 0.85, agree


def test_contacts_cover_the_first_and_last_frame_of_every_stance():
    """Before: the smoothed speed blurred the swing into the stance ends, so the first two frames of
    each stance were no contact. Now every stance frame is a contact, and the extra frames are ones
    where the foot is still too (the stance mask of the walk ends one frame before the lift)."""
    rest, quats, root_loc, stance = clean_walk()
    ankles = joint_positions(PARENTS, rest, quats, root_loc)[:, [LEGS[0][2], LEGS[1][2]]]
    contacts = detect_contacts(ankles, FPS)
    assert np.all(contacts[stance])
    for f in range(2):
        for start, end in segments(contacts[:, f]):
            run = ankles[start:end, f]
            assert np.abs(run - run[0]).max() < 1e-9  # exactly still over the whole contact


def test_cleanup_halves_jitter_and_foot_slide_and_keeps_the_rest_of_the_motion():
    rng = np.random.default_rng(0)
    rest, quats_clean, root_clean, stance = clean_walk()
    quats, root_loc = noisy(quats_clean, root_clean, rng)
    out_q, out_root, report = clean_up(PARENTS, rest, quats, root_loc, LEGS, FPS, strength=0.5, snap=False)
    print(report)
    assert report["jitter_after"] <= 0.5 * report["jitter_before"]
    assert report["slide_after_mm"] <= 0.5 * report["slide_before_mm"]
    # slide against the true stance phases too, not only against the detected contacts
    after = joint_positions(PARENTS, rest, out_q, out_root)
    before = joint_positions(PARENTS, rest, quats, root_loc)
    ankles = [LEGS[0][2], LEGS[1][2]]
    assert foot_slide_mm(after[:, ankles], stance) <= 0.5 * foot_slide_mm(before[:, ankles], stance)
    # off contact (the swinging foot, the upper body) joints move little: under 2 cm on average,
    # and they end closer to the clean motion than the noisy input was
    truth = joint_positions(PARENTS, rest, quats_clean, root_clean)
    moved = np.linalg.norm(after - before, axis=-1)
    upper = [IDX[n] for n in ("spine3", "head", "left_wrist", "right_wrist")]
    for f, (_, _, a) in enumerate(LEGS):
        swing = ~stance[:, f]
        assert moved[swing, a].mean() < 0.02
        assert (
            np.linalg.norm(after[swing, a] - truth[swing, a], axis=-1).mean()
            < np.linalg.norm(before[swing, a] - truth[swing, a], axis=-1).mean()
        )
    assert moved[:, upper].mean() < 0.02
    assert np.linalg.norm(after - truth, axis=-1).mean() < np.linalg.norm(before - truth, axis=-1).mean()


def test_runs_across_a_gap_are_cleaned_and_measured_apart():
    """Keys on both sides of a gap (the person was not seen) are no neighbours: smoothing, foot
    contacts and locking treat each run of consecutive frames as its own motion."""
    rng = np.random.default_rng(2)
    rest, quats, root_loc, _ = clean_walk(T=120)
    quats, root_loc = noisy(quats, root_loc, rng)
    root_loc[60:] += [0.5, 0.0, 0.0]  # the person is elsewhere when seen again
    frame_ids = np.r_[np.arange(60), np.arange(300, 360)]
    options = dict(strength=0.5, snap=False, floor_z=0.05)
    out_q, out_root, report = clean_up(PARENTS, rest, quats, root_loc, LEGS, FPS, frame_ids=frame_ids, **options)
    for run in (slice(0, 60), slice(60, 120)):
        alone_q, alone_root, _ = clean_up(PARENTS, rest, quats[run], root_loc[run], LEGS, FPS, **options)
        np.testing.assert_allclose(np.abs(np.sum(out_q[run] * alone_q, -1)), 1.0, atol=1e-9)
        np.testing.assert_allclose(out_root[run], alone_root, atol=1e-9)
    # the 0.5 m jump at the gap is no jitter: the figure is the mean of the two runs' (equally long)
    positions = joint_positions(PARENTS, rest, quats, root_loc)
    runs_jitter = (jitter(positions[:60], FPS) + jitter(positions[60:], FPS)) / 2
    assert report["jitter_before"] == pytest.approx(runs_jitter)
    assert jitter(positions, FPS) > 1.2 * runs_jitter
    x = np.zeros((6, 1, 3))
    x[3:, 0, 0] = 1.0
    gap = np.array([0, 1, 2, 10, 11, 12])
    assert jitter(x, 30.0, gap) == 0.0 and jitter(x, 30.0) > 0.0
    assert foot_slide_mm(x, np.ones((6, 1), bool), gap) == 0.0


def test_smoothing_is_rotation_aware_and_strength_zero_is_identity():
    rng = np.random.default_rng(1)
    T = 60
    angle = np.linspace(0, 4 * np.pi, T)  # two full turns: axis-angle wraps, quaternions flip
    q = axis_angle_to_quat(np.stack([np.zeros(T), np.zeros(T), angle], -1))[:, None]
    q[::2] *= -1  # sign flips must not matter
    np.testing.assert_allclose(np.abs(np.sum(smooth_quaternions(q, 0.0) * q, -1)), 1.0, atol=1e-12)
    smoothed = smooth_quaternions(q, 1.0)
    dots = np.abs(np.sum(smoothed * make_continuous(q), -1))[13:-13]  # away from padded ends
    assert np.degrees(2 * np.arccos(np.clip(dots, -1, 1))).max() < 1.0  # a steady spin stays a spin
    np.testing.assert_allclose(np.linalg.norm(smoothed, axis=-1), 1.0)
    with pytest.raises(VibeError, match="between 0 and 1"):
        smooth_quaternions(q, 1.5)
    only = smooth_quaternions(np.concatenate([q, q], 1) + rng.normal(0, 0.01, (T, 2, 4)), 1.0, joints=[1])
    assert only.shape == (T, 2, 4)


def test_ground_offset_puts_the_lowest_contact_on_the_floor():
    feet = np.zeros((10, 2, 3))
    feet[..., 2] = 0.3
    feet[4, 1, 2] = 0.25
    contacts = np.zeros((10, 2), bool)
    contacts[3:6, 1] = True
    assert ground_offset(feet, contacts) == pytest.approx(-0.25)
    assert ground_offset(feet, np.zeros_like(contacts), floor_z=0.1) == pytest.approx(-0.15)


def test_metrics():
    x = np.zeros((5, 1, 3))
    x[:, 0, 0] = np.arange(5) ** 2 / 900.0  # constant acceleration 2 (1/900 m per frame²)
    assert jitter(x, 30.0) == pytest.approx(2.0)
    c = np.ones((5, 1), bool)
    assert foot_slide_mm(x, c) == pytest.approx(np.diff(x[:, 0, 0]).mean() * 1000)
    assert foot_slide_mm(x, ~c) == 0.0
    assert segments(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    np.testing.assert_allclose(gaussian_smooth(np.ones((7, 2)), 2.0), 1.0)
    with pytest.raises(VibeError, match="Frame rate"):
        detect_contacts(x, 0.0)


def test_trim_and_merge_tracks():
    frames = np.arange(10, 20)
    assert trim_mask(frames, 12, 14).sum() == 3
    with pytest.raises(VibeError, match="leaves no frame"):
        trim_mask(frames, 30, 40)
    f, merged = merge_tracks(
        np.array([0, 1, 2]), {"x": np.array([1.0, 2, 3])}, np.array([2, 5, 6]), {"x": np.array([9.0, 6, 7])}
    )
    np.testing.assert_array_equal(f, [0, 1, 2, 5, 6])
    np.testing.assert_array_equal(merged["x"], [1, 2, 3, 6, 7])
    with pytest.raises(VibeError, match="different channels"):
        merge_tracks(f, {"x": f}, f, {"y": f})
    with pytest.raises(VibeError, match="shape"):
        merge_tracks(f, {"x": np.zeros((5, 2))}, f, {"x": np.zeros((5, 3))})


def test_planted_leg_rotations_hold_sliding_ankles_and_leave_the_swing_alone():
    """The walk with a sliding root: the IK rotations put each planted ankle on one point per
    contact, and frames far from any contact keep their rotations exactly."""
    rest, quats, root_loc, stance = clean_walk(90)
    _, root_loc = noisy(quats, root_loc, np.random.default_rng(3), jitter_deg=0.0, root_noise_m=0.0, slide_m=0.01)
    pose = pose_matrices(PARENTS, rest, quats, root_loc)
    legs = np.array(LEGS)
    P = pose[:, legs][..., :3, 3]  # (T, 2, 3, 3)
    G = pose[:, legs[:, :2]][..., :3, :3]  # (T, 2, 2, 3, 3) thigh, shin
    hinges = pose[:, legs[:, 1]][..., :3, 0]
    new = planted_leg_rotations(P, G, stance, hinges)
    # rebuild the ankle from the new rotations: hip + R_thigh (knee - hip)_rest-direction ...
    thigh = np.einsum("tfab,tfb->tfa", new[:, :, 0] @ np.swapaxes(G[:, :, 0], -1, -2), P[:, :, 1] - P[:, :, 0])
    shin = np.einsum("tfab,tfb->tfa", new[:, :, 1] @ np.swapaxes(G[:, :, 1], -1, -2), P[:, :, 2] - P[:, :, 1])
    ankle = P[:, :, 0] + thigh + shin
    assert foot_slide_mm(P[:, :, 2], stance) > 1.0
    assert foot_slide_mm(ankle, stance) < 1e-6
    for f in range(2):  # more than 3 frames (the blend) from a contact
        far = np.convolve(stance[:, f], np.ones(9), "same") == 0
        assert np.any(far)
        np.testing.assert_allclose(new[far, f], G[far, f], atol=1e-12)
