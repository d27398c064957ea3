"""Motion clean-up on arrays: rotation-aware smoothing, foot contacts, foot locking, ground snapping,
jitter and foot-slide figures, trim / offset / merge of tracks.

The motion is held as the armature keys it: parents (J,), rest (J, 4, 4) armature-space rest
matrices, quats (T, J, 4) pose-bone quaternions wxyz, root_loc (T, 3) location of the root bone,
frame_ids (T,) the frames of the keys. A gap in frame_ids (the person was not seen) splits the motion
into runs that are measured and cleaned apart: no key is a neighbour of a key across a gap.
Positions come from :func:`retarget_math.pose_matrices`; armature space is Z up, metres.
Smoothing works on quaternions made sign-continuous (a normalised weighted mean is the chordal mean
of nearby rotations), never on axis-angle components, which jump where the angle wraps.
"""

from __future__ import annotations

import numpy as np

from .errors import VibeError
from .motion import frame_runs
from .retarget_math import pose_matrices, rotation_part, swing_rotation
from .rotations import make_continuous, rotmat_to_quat

MAX_SIGMA_FRAMES = 4.0  # Gaussian width at strength 1 (about 0.13 s at 30 fps)
UP = 2  # armature space is Z up


# ---------------------------------------------------------------- smoothing
def gaussian_smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """x (T, ...) -> zero-phase Gaussian low-pass along T (ends padded with the end values)."""
    x = np.asarray(x, dtype=np.float64)
    if sigma_frames <= 0 or len(x) < 2:
        return x.copy()
    radius = int(np.ceil(3 * sigma_frames))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    k /= k.sum()
    padded = np.concatenate([np.repeat(x[:1], radius, 0), x, np.repeat(x[-1:], radius, 0)])
    return sum(w * padded[i : i + len(x)] for i, w in enumerate(k))


def strength_to_sigma(strength: float) -> float:
    if not 0.0 <= strength <= 1.0:
        raise VibeError(f"Smoothing strength must be between 0 and 1; got {strength}.")
    return MAX_SIGMA_FRAMES * strength


def smooth_quaternions(quats: np.ndarray, strength: float, joints=None) -> np.ndarray:
    """quats (T, J, 4) -> smoothed (T, J, 4), for the bones in ``joints`` (all when None)."""
    return gaussian_smooth_quaternions(quats, strength_to_sigma(strength), joints)


def gaussian_smooth_quaternions(quats: np.ndarray, sigma_frames: float, joints=None) -> np.ndarray:
    """quats (T, J, 4) -> Gaussian of ``sigma_frames`` on the sign-continuous quaternions,
    renormalised (the chordal mean of nearby rotations), for ``joints`` (all when None).
    The one rotation smoother of the project: the server's pose smoothing uses it too."""
    out = make_continuous(quats)
    sel = slice(None) if joints is None else np.asarray(joints)
    smoothed = gaussian_smooth(out[:, sel], sigma_frames)
    out[:, sel] = smoothed / np.linalg.norm(smoothed, axis=-1, keepdims=True)
    return out


def smooth_positions(x: np.ndarray, strength: float) -> np.ndarray:
    """x (T, ..., 3) -> smoothed."""
    return gaussian_smooth(x, strength_to_sigma(strength))


# ---------------------------------------------------------------- kinematics and figures
def joint_positions(parents, rest, quats, root_loc, root: int = 0) -> np.ndarray:
    """-> (T, J, 3) bone heads (the joints), armature space."""
    return pose_matrices(parents, rest, quats, root_loc, root)[..., :3, 3]


def consecutive_steps(frame_ids: np.ndarray | None, T: int) -> np.ndarray:
    """(T - 1,) bool: row t+1 is the frame right after row t (no gap between them); all when None."""
    if frame_ids is None:
        return np.ones(max(T - 1, 0), bool)
    return np.diff(np.asarray(frame_ids, dtype=np.float64)) <= 1


def jitter(positions: np.ndarray, fps: float, frame_ids: np.ndarray | None = None) -> float:
    """positions (T, J, 3) -> mean acceleration magnitude, m/s², over frames whose neighbours are
    consecutive frames (frame_ids (T,); None: all rows are)."""
    steps = consecutive_steps(frame_ids, len(positions))
    inner = steps[1:] & steps[:-1]  # (T - 2,)
    if not np.any(inner):
        return 0.0
    acc = (positions[2:] - 2 * positions[1:-1] + positions[:-2])[inner]
    return float(np.linalg.norm(acc, axis=-1).mean() * fps * fps)


def foot_slide_mm(foot_positions: np.ndarray, contacts: np.ndarray, frame_ids: np.ndarray | None = None) -> float:
    """foot_positions (T, F, 3), contacts (T, F) -> mean horizontal move of a planted foot per
    contact frame (frames t-1 and t both in contact and consecutive), millimetres; 0 without contacts."""
    both = contacts[1:] & contacts[:-1] & consecutive_steps(frame_ids, len(contacts))[:, None]
    if not np.any(both):
        return 0.0
    step = np.linalg.norm(np.diff(foot_positions[..., :2], axis=0), axis=-1)
    return float(step[both].mean() * 1000.0)


# ---------------------------------------------------------------- contacts
def segments(mask: np.ndarray) -> list[tuple[int, int]]:
    """mask (T,) bool -> [(start, end)] runs of True, end exclusive."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def detect_contacts(
    foot_positions: np.ndarray,
    fps: float,
    *,
    floor_z: float | None = None,
    max_speed_mps: float = 0.3,
    max_height_m: float = 0.08,
    min_frames: int = 3,
) -> np.ndarray:
    """foot_positions (T, F, 3) -> contacts (T, F) bool: the foot is slow and near the floor.

    floor_z defaults to the 5th percentile of foot heights. Speeds come from lightly smoothed
    positions, so jitter does not break a contact; gaps of one frame are closed and runs shorter
    than ``min_frames`` dropped. The smoothing blurs the fast swing into the first and last frames
    of a stance, so each run then grows over neighbouring frames whose own (unsmoothed) step to the
    run is slow: the whole stance, first and last frame included, is a contact."""
    if fps <= 0:
        raise VibeError(f"Frame rate must be positive to detect foot contacts; got {fps}.")
    heights = foot_positions[..., UP]
    floor_z = float(np.percentile(heights, 5)) if floor_z is None else floor_z
    low = heights - floor_z < max_height_m
    steady = gaussian_smooth(foot_positions, 2.0)
    speed = np.linalg.norm(np.gradient(steady, axis=0), axis=-1) * fps
    step_speed = np.linalg.norm(np.diff(foot_positions, axis=0), axis=-1) * fps  # (T-1, F): t -> t+1
    contacts = (speed < max_speed_mps) & low
    T = len(contacts)
    for f in range(contacts.shape[1]):
        c = contacts[:, f]
        for start, end in segments(~c):
            if 0 < start and end < T and end - start == 1:
                c[start:end] = True
        for start, end in segments(c):
            while start > 0 and low[start - 1, f] and step_speed[start - 1, f] < max_speed_mps:
                start -= 1
            while end < T and low[end, f] and step_speed[end - 1, f] < max_speed_mps:
                end += 1
            c[start:end] = True
        for start, end in segments(c):
            if end - start < min_frames:
                c[start:end] = False
    return contacts


def detect_contacts_per_run(
    foot_positions: np.ndarray, fps: float, frame_ids: np.ndarray | None = None, **contact_options
) -> np.ndarray:
    """:func:`detect_contacts` on each run of consecutive frames apart (one floor for all of them);
    a run of a single frame has no contact. -> contacts (T, F) bool."""
    T = len(foot_positions)
    runs = frame_runs(np.arange(T) if frame_ids is None else frame_ids)
    if contact_options.get("floor_z") is None:
        contact_options["floor_z"] = float(np.percentile(foot_positions[..., UP], 5))
    contacts = np.zeros(foot_positions.shape[:2], bool)
    for start, end in runs:
        if end - start > 1:
            contacts[start:end] = detect_contacts(foot_positions[start:end], fps, **contact_options)
    return contacts


def ground_offset(foot_positions: np.ndarray, contacts: np.ndarray, floor_z: float = 0.0) -> float:
    """Vertical shift (metres) that puts the lowest planted foot (the lowest foot if none) on the floor."""
    heights = foot_positions[..., UP]
    lowest = heights[contacts].min() if np.any(contacts) else heights.min()
    return float(floor_z - lowest)


# ---------------------------------------------------------------- foot locking
def _lock_targets(ankle: np.ndarray, contact: np.ndarray, blend_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """ankle (T, 3), contact (T,) -> target positions (T, 3) and weights (T,): inside each contact the
    foot is held at the segment's mean position; the weight ramps to 0 over ``blend_frames``."""
    T = len(ankle)
    target, weight = ankle.copy(), np.zeros(T)
    runs = segments(contact)
    if not runs:
        return target, weight
    frames = np.arange(T)
    # nearest contact segment of every frame and the distance to it
    dist = np.full(T, np.inf)
    lock = np.zeros((T, 3))
    for start, end in runs:
        point = ankle[start:end].mean(axis=0)
        d = np.maximum(0, np.maximum(start - frames, frames - (end - 1)))
        closer = d < dist
        dist[closer], lock[closer] = d[closer], point
    weight = np.clip(1.0 - dist / (blend_frames + 1), 0.0, 1.0)
    target = ankle + weight[:, None] * (lock - ankle)
    return target, weight


def two_bone_ik(
    hip: np.ndarray, knee: np.ndarray, ankle: np.ndarray, target: np.ndarray, hinge: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions (T, 3) and wanted ankle (T, 3) -> world rotations (T, 3, 3) to apply to the
    thigh (about the hip) and, after it, to the shin (about the knee). The knee stays in the leg's
    current bend plane; ``hinge`` (T, 3) is that plane's normal where the leg is straight."""
    l1 = np.linalg.norm(knee - hip, axis=-1)
    l2 = np.linalg.norm(ankle - knee, axis=-1)
    D = target - hip
    d = np.clip(np.linalg.norm(D, axis=-1), np.abs(l1 - l2) + 1e-6, l1 + l2 - 1e-6)
    u = D / np.maximum(np.linalg.norm(D, axis=-1, keepdims=True), 1e-12)
    n = np.cross(knee - hip, ankle - knee)
    n_len = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(n_len > 1e-6 * (l1 * l2)[:, None], n / np.maximum(n_len, 1e-12), hinge)
    v = np.cross(u, n)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    x = (d * d + l1 * l1 - l2 * l2) / (2 * d)
    y = np.sqrt(np.maximum(l1 * l1 - x * x, 0.0))
    knee_new = hip + x[:, None] * u + y[:, None] * v
    ankle_new = hip + d[:, None] * u
    R_thigh = swing_rotation(knee - hip, knee_new - hip)
    R_shin = swing_rotation(np.einsum("tab,tb->ta", R_thigh, ankle - knee), ankle_new - knee_new)
    return R_thigh, R_shin


def lock_feet(
    parents, rest, quats, root_loc, legs, contacts, *, blend_frames: int = 3, root_share: float = 0.5, root: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Hold planted feet still: the root takes ``root_share`` of the mean horizontal correction of
    the planted feet (smoothed), two-bone IK on each leg does the rest; ankle orientations are kept.

    legs: [(hip, knee, ankle)] joint indices per foot, contacts (T, F) -> new quats, root_loc."""
    parents = np.asarray(parents)
    quats = make_continuous(quats)
    pose = pose_matrices(parents, rest, quats, root_loc, root)
    P = pose[..., :3, 3]
    targets, weights = zip(*[_lock_targets(P[:, a], contacts[:, f], blend_frames) for f, (_, _, a) in enumerate(legs)])
    targets, weights = np.stack(targets, 1), np.stack(weights, 1)  # (T, F, 3), (T, F)
    # 1. root: a smoothed share of the feet's horizontal correction
    correction = (targets - np.stack([P[:, a] for _, _, a in legs], 1)) * weights[..., None]
    total = weights.sum(axis=1, keepdims=True)
    shift = np.where(total > 0, correction.sum(axis=1) / np.maximum(total, 1e-12), 0.0)
    shift[:, UP] = 0.0
    shift = gaussian_smooth(shift * root_share, 2.0)
    rest_rot0 = rotation_part(rest[root])
    root_loc = root_loc + shift @ rest_rot0  # world shift -> bone-local
    P = P + shift[:, None]
    # 2. legs: IK to the targets, feet keep their world orientation
    quats = reach(parents, rest, quats, root_loc, legs, targets, root)
    return quats, root_loc


def planted_leg_rotations(
    positions: np.ndarray, leg_rot: np.ndarray, contacts: np.ndarray, hinges: np.ndarray, *, blend_frames: int = 3
) -> np.ndarray:
    """Foot lock on any rig, as wanted rotations: each planted ankle is held where it is on average
    over its contact, by turning the thigh about the hip and the shin about the knee (two-bone IK).

    positions (T, F, 3, 3) heads of (hip, knee, ankle) per leg; leg_rot (T, F, 2, 3, 3) the thigh's
    and shin's rotations, same space; contacts (T, F) bool; hinges (T, F, 3): the knee's bend axis,
    used where a leg is straight. -> new leg_rot (T, F, 2, 3, 3). Frames away from any contact (more
    than ``blend_frames``) keep their rotations exactly; the ankle's own rotation is not touched."""
    out = np.array(leg_rot, dtype=np.float64)
    for f in range(positions.shape[1]):
        hip, knee, ankle = (positions[:, f, i] for i in range(3))
        target, weight = _lock_targets(ankle, contacts[:, f], blend_frames)
        near = weight > 0
        if not np.any(near):
            continue
        R_thigh, R_shin = two_bone_ik(hip[near], knee[near], ankle[near], target[near], hinges[near, f])
        out[near, f, 0] = R_thigh @ out[near, f, 0]
        out[near, f, 1] = R_shin @ R_thigh @ out[near, f, 1]
    return out


def reach(parents, rest, quats, root_loc, legs, targets, root: int = 0) -> np.ndarray:
    """Bend each leg (hip, knee, ankle) so that its ankle reaches targets (T, F, 3); the ankles keep
    their world orientation. -> new quats (T, J, 4)."""
    parents = np.asarray(parents)
    pose = pose_matrices(parents, rest, quats, root_loc, root)
    P, G = pose[..., :3, 3], rotation_part(pose)
    new_G = G.copy()
    for f, (h, k, a) in enumerate(legs):
        R_thigh, R_shin = two_bone_ik(P[:, h], P[:, k], P[:, a], targets[:, f], G[:, k, :, 0])
        new_G[:, h] = R_thigh @ G[:, h]
        new_G[:, k] = R_shin @ R_thigh @ G[:, k]
    quats = quats.copy()
    for h, k, a in legs:
        for j in (h, k, a):
            local_rest = rotation_part(np.linalg.inv(rest[parents[j]]) @ rest[j])
            chain = new_G[:, parents[j]] @ local_rest
            quats[:, j] = rotmat_to_quat(np.swapaxes(chain, -1, -2) @ new_G[:, j])
    return make_continuous(quats)


def motion_figures(
    parents, rest, quats, root_loc, legs, fps: float, root: int = 0, frame_ids=None, **contact_options
) -> dict:
    """-> {jitter (m/s²), slide_mm (per contact frame), contact_frames} of a motion as it is."""
    ankles = [a for _, _, a in legs]
    positions = joint_positions(np.asarray(parents), rest, quats, root_loc, root)
    contacts = detect_contacts_per_run(positions[:, ankles], fps, frame_ids, **contact_options)
    return {
        "jitter": jitter(positions, fps, frame_ids),
        "slide_mm": foot_slide_mm(positions[:, ankles], contacts, frame_ids),
        "contact_frames": int(contacts.sum()),
    }


def clean_up(
    parents,
    rest,
    quats,
    root_loc,
    legs,
    fps: float,
    *,
    strength: float = 0.5,
    lock: bool = True,
    snap: bool = True,
    smooth_joints=None,
    root: int = 0,
    sole_height_m: float = 0.0,
    frame_ids=None,
    **contact_options,
):
    """Smooth, detect contacts, lock feet and snap to the floor (z = 0) in one pass. sole_height_m:
    height of the ankle joint over the sole, so that snapping puts soles (not ankles) on the floor.
    frame_ids (T,): each run of consecutive frames is smoothed and locked apart (None: one run).

    -> (quats, root_loc, report) with report = {jitter_before/after (m/s²), slide_before/after_mm,
    contact_frames, ground_shift_m} measured on the same contacts (detected on the input)."""
    parents = np.asarray(parents)
    ankles = [a for _, _, a in legs]
    before = joint_positions(parents, rest, quats, root_loc, root)
    contacts = detect_contacts_per_run(before[:, ankles], fps, frame_ids, **contact_options)
    if not np.any(contacts) and lock:
        raise VibeError(
            "No foot contact was found (no slow foot near the floor), so feet cannot be locked; "
            "turn foot locking off or check that the character walks on a floor."
        )
    quats, root_loc = make_continuous(quats), np.array(root_loc, dtype=np.float64)
    for start, end in frame_runs(np.arange(len(quats)) if frame_ids is None else frame_ids):
        run = slice(start, end)
        quats[run] = smooth_quaternions(quats[run], strength, smooth_joints)
        if smooth_joints is None or root in np.atleast_1d(smooth_joints):
            root_loc[run] = smooth_positions(root_loc[run], strength)
        if lock:
            quats[run], root_loc[run] = lock_feet(
                parents, rest, quats[run], root_loc[run], legs, contacts[run], root=root
            )
    shift = 0.0
    if snap:
        feet = joint_positions(parents, rest, quats, root_loc, root)[:, ankles]
        shift = ground_offset(feet, contacts, floor_z=sole_height_m)
        root_loc = root_loc + np.array([0.0, 0.0, shift]) @ rotation_part(rest[root])
    after = joint_positions(parents, rest, quats, root_loc, root)
    report = {
        "jitter_before": jitter(before, fps, frame_ids),
        "jitter_after": jitter(after, fps, frame_ids),
        "slide_before_mm": foot_slide_mm(before[:, ankles], contacts, frame_ids),
        "slide_after_mm": foot_slide_mm(after[:, ankles], contacts, frame_ids),
        "contact_frames": int(contacts.sum()),
        "ground_shift_m": shift,
    }
    return quats, root_loc, report


# ---------------------------------------------------------------- trim / offset / merge
def trim_mask(frame_ids: np.ndarray, start: int | None, end: int | None) -> np.ndarray:
    """frame_ids (T,) -> bool mask of the frames in [start, end] (inclusive; None = open)."""
    frame_ids = np.asarray(frame_ids)
    keep = np.ones(len(frame_ids), bool)
    if start is not None:
        keep &= frame_ids >= start
    if end is not None:
        keep &= frame_ids <= end
    if not np.any(keep):
        raise VibeError(
            f"Trimming to frames {start}..{end} leaves no frame of the motion "
            f"(it spans {frame_ids.min()}..{frame_ids.max()}); widen the range."
        )
    return keep


def merge_tracks(frames_a: np.ndarray, arrays_a: dict, frames_b: np.ndarray, arrays_b: dict):
    """Two broken tracks of one person -> (frame_ids, arrays) on the union of their frames; where both
    have a frame the first track's values are kept. Arrays are (T, ...) and must have the same keys."""
    if set(arrays_a) != set(arrays_b):
        raise VibeError(
            "The two tracks carry different channels and cannot be merged; merge tracks of the "
            "same kind (two imported characters)."
        )
    frames_a, frames_b = np.asarray(frames_a), np.asarray(frames_b)
    only_b = ~np.isin(frames_b, frames_a)
    frames = np.concatenate([frames_a, frames_b[only_b]])
    order = np.argsort(frames, kind="stable")
    merged = {}
    for key in arrays_a:
        a, b = np.asarray(arrays_a[key]), np.asarray(arrays_b[key])
        if a.shape[1:] != b.shape[1:]:
            raise VibeError(
                f"Channel '{key}' has shape {a.shape[1:]} in one track and {b.shape[1:]} in the "
                "other; the tracks cannot be merged."
            )
        merged[key] = np.concatenate([a, b[only_b]])[order]
    return frames[order], merged
