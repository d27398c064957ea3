"""Clean up an SMPL character's keys in place: smoothing, foot locking, ground snapping, trim,
frame offset and merging two broken tracks of one person. The maths is :mod:`core.cleanup`; this
module only reads the keys (pose-bone quaternions + pelvis location) and writes them back in bulk."""

from __future__ import annotations

import numpy as np

from . import keyframes
from .core.cleanup import clean_up, merge_tracks, motion_figures, trim_mask
from .core.errors import VibeError
from .core.rotations import make_continuous
from .core.smpl_model import JOINT_NAMES, PARENTS
from .retarget import bake_pose_keys

BONE_GROUPS = {
    "ALL": None,
    "LEGS": [
        "pelvis",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
        "left_foot",
        "right_foot",
    ],
    "SPINE": ["spine1", "spine2", "spine3", "neck", "head"],
    "ARMS": [
        "left_collar",
        "right_collar",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hand",
        "right_hand",
    ],
}
LEGS = [tuple(JOINT_NAMES.index(f"{s}_{p}") for p in ("hip", "knee", "ankle")) for s in ("left", "right")]


LOC_PATH = keyframes.location_path("pelvis")


def read_motion(armature_obj):
    """-> frames (T,), quats (T, 24, 4), pelvis location (T, 3) from an SMPL character's action."""
    channels = keyframes.channels_of(armature_obj)
    missing = [b for b in JOINT_NAMES if armature_obj.pose.bones.get(b) is None]
    if channels is None or missing or channels.fcurves.find(keyframes.rotation_path("pelvis"), index=0) is None:
        raise VibeError(
            f"'{armature_obj.name}' is not an animated SMPL character; clean-up works on characters "
            "imported by VIBE Mocap (retarget after cleaning)."
        )
    frames = keyframes.read_fcurve(channels, keyframes.rotation_path("pelvis"), 0)[0]
    quats = np.zeros((len(frames), 24, 4))
    for j, bone in enumerate(JOINT_NAMES):
        for c in range(4):
            curve = keyframes.read_fcurve(channels, keyframes.rotation_path(bone), c)
            if curve is None or len(curve[0]) != len(frames):
                quats[:, j, c] = 1.0 if c == 0 else 0.0
            else:
                quats[:, j, c] = curve[1]
    loc = np.zeros((len(frames), 3))
    for c in range(3):
        curve = keyframes.read_fcurve(channels, LOC_PATH, c)
        if curve is not None and len(curve[0]) == len(frames):
            loc[:, c] = curve[1]
    return frames, quats, loc


def write_motion(armature_obj, frames, quats, loc) -> None:
    bake_pose_keys(
        armature_obj,
        np.asarray(frames, dtype=np.float64),
        {b: quats[:, j] for j, b in enumerate(JOINT_NAMES)},
        {"pelvis": loc},
        armature_obj.animation_data.action.name if armature_obj.animation_data else "motion",
    )


def _rest(armature_obj) -> np.ndarray:
    return np.array([np.array(armature_obj.data.bones[b].matrix_local) for b in JOINT_NAMES])


def _fps(fps: float | None) -> float:
    import bpy

    scene = bpy.context.scene
    return fps or scene.render.fps / scene.render.fps_base


def measure_character(armature_obj, fps: float | None = None) -> dict:
    """Jitter (m/s²) and foot slide (mm per contact frame) of a character's keys, unchanged."""
    _, quats, loc = read_motion(armature_obj)
    return motion_figures(PARENTS, _rest(armature_obj), quats, loc, LEGS, _fps(fps))


def clean_up_character(
    armature_obj,
    *,
    strength: float = 0.5,
    bone_group: str = "ALL",
    lock_feet: bool = True,
    snap_to_ground: bool = True,
    fps: float | None = None,
) -> dict:
    """Smooth / lock feet / snap one character; -> the core report (jitter and slide before/after)."""
    if bone_group not in BONE_GROUPS:
        raise VibeError(f"Unknown bone group '{bone_group}'; choose one of {', '.join(BONE_GROUPS)}.")
    frames, quats, loc = read_motion(armature_obj)
    fps = _fps(fps)
    group = BONE_GROUPS[bone_group]
    joints = None if group is None else [JOINT_NAMES.index(b) for b in group]
    rest = _rest(armature_obj)
    sole = float(
        rest[LEGS[0][2], 2, 3] - min(armature_obj.data.bones[b].tail_local[2] for b in ("left_ankle", "left_foot"))
    )
    quats, loc, report = clean_up(
        PARENTS,
        rest,
        quats,
        loc,
        LEGS,
        fps,
        strength=strength,
        lock=lock_feet,
        snap=snap_to_ground,
        smooth_joints=joints,
        sole_height_m=sole,
    )
    write_motion(armature_obj, frames, quats, loc)
    return report


def trim_and_offset(armature_obj, *, start: int | None = None, end: int | None = None, offset: int = 0) -> int:
    """Keep keys in [start, end] and move them by ``offset`` frames; -> number of frames kept."""
    frames, quats, loc = read_motion(armature_obj)
    keep = trim_mask(frames, start, end)
    write_motion(armature_obj, frames[keep] + offset, quats[keep], loc[keep])
    return int(keep.sum())


def merge_characters(keep_obj, other_obj) -> int:
    """Append ``other_obj``'s frames that ``keep_obj`` lacks (same person, broken track), then delete
    ``other_obj`` and its mesh; -> frame count of the merged motion."""
    import bpy

    if keep_obj == other_obj:
        raise VibeError("Pick two different characters to merge.")
    fa, qa, la = read_motion(keep_obj)
    fb, qb, lb = read_motion(other_obj)
    frames, merged = merge_tracks(fa, {"q": qa, "loc": la}, fb, {"q": qb, "loc": lb})
    write_motion(keep_obj, frames, make_continuous(merged["q"]), merged["loc"])
    for child in list(other_obj.children):
        bpy.data.objects.remove(child, do_unlink=True)
    bpy.data.objects.remove(other_obj, do_unlink=True)
    return len(frames)
