"""Key a character from a TrackMotion, and re-fit its bones when its shape changes.

Keys sit at Blender frame = source frame + 1. Frames without a detection stay gaps: the last key of
each run holds (CONSTANT interpolation, so nothing slides across the gap) and the body is hidden
until the next run starts.
"""

from __future__ import annotations

import numpy as np

from . import keyframes
from .core.motion import TrackMotion
from .core.rotations import axis_angle_to_rotmat
from .core.skeleton import bone_basis_quats, refit_basis_quats, refit_root_locations, root_locations
from .core.smpl_math import pose_feature
from .core.smpl_model import JOINT_NAMES
from .rig_builder import (
    NUM_CORRECTIVES,
    add_corrective_drivers,
    character_mesh,
    corrective_key_name,
    current_betas,
    joints_for_betas,
    place_bones,
    rest_quats,
)

FIRST_FRAME = 1


def key_interpolation(track: TrackMotion) -> np.ndarray:
    """(T,) LINEAR, except CONSTANT on the last key before each gap."""
    interpolation = np.full(len(track.frame_ids), keyframes.LINEAR, dtype=np.int32)
    for _, end in track.segments()[:-1]:
        interpolation[end - 1] = keyframes.CONSTANT
    return interpolation


def animate_character(
    armature_obj, track: TrackMotion, *, ground_offset_m=None, in_place: bool = False, last_frame_id: int | None = None
) -> None:
    """Write the track's motion onto the character (one action per animated ID).
    last_frame_id: the source's last frame; the body is hidden after the track ends before it."""
    mesh_obj = character_mesh(armature_obj)
    betas = current_betas(armature_obj)
    q_rest = rest_quats(armature_obj)
    J0 = joints_for_betas(armature_obj, betas)[0]
    quats = bone_basis_quats(track.pose, q_rest, track.source_to_blender)  # (T, 24, 4)
    loc = root_locations(track.trans_m, J0, q_rest[0], track.source_to_blender, ground_offset_m, in_place=in_place)
    frames = track.frame_ids.astype(np.float64) + FIRST_FRAME
    interpolation = key_interpolation(track)

    channels = keyframes.new_channels(armature_obj, f"{armature_obj.name}_motion")
    for j, bone in enumerate(JOINT_NAMES):
        for c in range(4):
            keyframes.write_fcurve(
                channels,
                keyframes.rotation_path(bone),
                c,
                frames,
                quats[:, j, c],
                group=bone,
                interpolation=interpolation,
            )
    for c in range(3):
        keyframes.write_fcurve(
            channels,
            keyframes.location_path(JOINT_NAMES[0]),
            c,
            frames,
            loc[:, c],
            group=JOINT_NAMES[0],
            interpolation=interpolation,
        )

    if armature_obj.get("vibe_correctives") == "baked":
        weights = pose_feature(axis_angle_to_rotmat(track.pose.reshape(-1, 24, 3)))  # (T, 207)
        key = mesh_obj.data.shape_keys
        key_channels = keyframes.new_channels(key, f"{armature_obj.name}_correctives")
        for k in range(NUM_CORRECTIVES):
            keyframes.write_fcurve(
                key_channels,
                f'key_blocks["{corrective_key_name(k)}"].value',
                0,
                frames,
                weights[:, k],
                group="Pose correctives",
                interpolation=interpolation,
            )
    _key_visibility(mesh_obj, track, last_frame_id)


def _key_visibility(mesh_obj, track: TrackMotion, last_frame_id: int | None) -> None:
    """Hide the body where the track has no frames: before its first run, in gaps, after its end."""
    segments = track.segments()
    last = int(track.frame_ids[-1]) if last_frame_id is None else last_frame_id
    if len(segments) == 1 and track.frame_ids[0] == 0 and track.frame_ids[-1] >= last:
        return  # seen in every frame
    frames, hidden = [], []
    if track.frame_ids[0] > 0:
        frames.append(FIRST_FRAME), hidden.append(1.0)
    for start, end in segments:
        frames.append(track.frame_ids[start] + FIRST_FRAME), hidden.append(0.0)
        if track.frame_ids[end - 1] < last:
            frames.append(track.frame_ids[end - 1] + 1 + FIRST_FRAME), hidden.append(1.0)
    channels = keyframes.new_channels(mesh_obj, f"{mesh_obj.name}_visibility")
    for path in ("hide_viewport", "hide_render"):
        keyframes.write_fcurve(
            channels, path, 0, np.array(frames, dtype=np.float64), np.array(hidden), interpolation=keyframes.CONSTANT
        )


def refit_bones(armature_obj) -> None:
    """Move the bones to J(betas) for the betas the Shape keys hold now, keeping the animation:
    every keyed bone keeps its armature-space rotation and the pelvis keeps its world position."""
    betas = current_betas(armature_obj)
    q_rest_old = rest_quats(armature_obj)
    head_old = np.array(armature_obj.data.bones[JOINT_NAMES[0]].head_local)
    place_bones(armature_obj, joints_for_betas(armature_obj, betas))
    q_rest_new = rest_quats(armature_obj)
    head_new = np.array(armature_obj.data.bones[JOINT_NAMES[0]].head_local)
    channels = keyframes.channels_of(armature_obj)
    if channels is not None and channels.fcurves.find(keyframes.rotation_path(JOINT_NAMES[0]), index=0) is not None:
        values = np.stack(
            [
                np.stack([keyframes.read_fcurve(channels, keyframes.rotation_path(b), c)[1] for c in range(4)], -1)
                for b in JOINT_NAMES
            ],
            axis=1,
        )  # (T, 24, 4)
        values = refit_basis_quats(values, q_rest_old, q_rest_new)
        for j, bone in enumerate(JOINT_NAMES):
            for c in range(4):
                keyframes.replace_fcurve_values(channels, keyframes.rotation_path(bone), c, values[:, j, c])
        if channels.fcurves.find(keyframes.location_path(JOINT_NAMES[0]), index=0) is not None:
            loc = np.stack(
                [keyframes.read_fcurve(channels, keyframes.location_path(JOINT_NAMES[0]), c)[1] for c in range(3)], -1
            )
            loc = refit_root_locations(loc, head_old, q_rest_old[0], head_new, q_rest_new[0])
            for c in range(3):
                keyframes.replace_fcurve_values(channels, keyframes.location_path(JOINT_NAMES[0]), c, loc[:, c])
    if armature_obj.get("vibe_correctives") == "drivers":
        add_corrective_drivers(armature_obj, character_mesh(armature_obj))
