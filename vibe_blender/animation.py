"""Key a character from a TrackMotion, and re-fit its bones when its shape changes.

Keys sit at Blender frame = source frame + 1. Frames without a detection stay gaps: the last key of
each run holds (CONSTANT interpolation, so nothing slides across the gap) and the body is hidden
until the next run starts.
"""

from __future__ import annotations

import numpy as np

from . import keyframes
from .core.errors import VibeError
from .core.motion import TrackMotion, frame_runs
from .core.retarget_math import rotation_keys, rotation_quats
from .core.rotations import axis_angle_to_rotmat, make_continuous
from .core.skeleton import bone_basis_quats, refit_basis_quats, refit_root_locations, root_locations
from .core.smpl_math import pose_feature
from .core.smpl_model import JOINT_NAMES, NUM_BETAS
from .editable import check_editable
from .rig_builder import (
    NUM_CORRECTIVES,
    add_corrective_drivers,
    character_mesh,
    corrective_key_name,
    current_betas,
    joints_for_betas,
    place_bones,
    rest_quats,
    shape_key_name,
)
from .visibility import ANIMATED_FLAGS

FIRST_FRAME = 1


def key_interpolation(frames: np.ndarray) -> np.ndarray:
    """frames (T,) of the keys -> (T,) LINEAR, except CONSTANT on the last key before each gap."""
    interpolation = np.full(len(frames), keyframes.LINEAR, dtype=np.int32)
    for _, end in frame_runs(frames)[:-1]:
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
    key_motion(armature_obj, frames, quats, loc)
    if armature_obj.get("vibe_correctives") == "baked":
        weights = pose_feature(axis_angle_to_rotmat(track.pose.reshape(-1, 24, 3)))  # (T, 207)
        key_correctives(armature_obj, mesh_obj, frames, weights)
    last = int(track.frame_ids[-1]) if last_frame_id is None else last_frame_id
    key_visibility(mesh_obj, frames, FIRST_FRAME, FIRST_FRAME + last)


def key_motion(
    armature_obj,
    frames: np.ndarray,
    quats: np.ndarray,
    loc: np.ndarray,
    *,
    bones=JOINT_NAMES,
    location: bool = True,
) -> None:
    """frames (T,), quats (T, 24, 4) sign-continuous pose-bone quaternions, loc (T, 3) pelvis location
    -> the keys of the character's action (made when it has none; the keys of these channels are
    replaced, their F-curves stay with the user's modifiers and settings), for ``bones`` only and
    the pelvis location when ``location``: the other curves keep their keys. Each bone is keyed in
    its own rotation mode (one the user switched to Euler keeps playing its keys).
    The last key before each gap holds (CONSTANT), so nothing slides across the gap."""
    channels = keyframes.channels_for_rewrite(armature_obj, f"{armature_obj.name}_motion")
    interpolation = key_interpolation(frames)
    for bone in bones:
        mode = armature_obj.pose.bones[bone].rotation_mode
        values = rotation_keys(quats[:, JOINT_NAMES.index(bone)], mode)
        for c in range(values.shape[-1]):
            keyframes.rewrite_fcurve(
                channels,
                keyframes.rotation_path(bone, mode),
                c,
                frames,
                values[:, c],
                group=bone,
                interpolation=interpolation,
            )
    for c in range(3 if location else 0):
        keyframes.rewrite_fcurve(
            channels,
            keyframes.location_path(JOINT_NAMES[0]),
            c,
            frames,
            loc[:, c],
            group=JOINT_NAMES[0],
            interpolation=interpolation,
        )


def key_correctives(armature_obj, mesh_obj, frames: np.ndarray, weights: np.ndarray) -> None:
    """frames (T,), weights (T, 207) -> keys of the baked pose correctives Pose000..206 (replaced
    when keyed already), holding before gaps as the motion does."""
    check_correctives(armature_obj, mesh_obj)
    key = mesh_obj.data.shape_keys
    channels = keyframes.channels_for_rewrite(key, f"{armature_obj.name}_correctives")
    interpolation = key_interpolation(frames)
    for k in range(NUM_CORRECTIVES):
        keyframes.rewrite_fcurve(
            channels,
            corrective_path(k),
            0,
            frames,
            weights[:, k],
            group="Pose correctives",
            interpolation=interpolation,
        )


def corrective_path(k: int) -> str:
    """F-curve data path (on the body's shape keys) of the baked pose corrective ``k``."""
    return f'key_blocks["{corrective_key_name(k)}"].value'


def check_correctives(armature_obj, mesh_obj) -> None:
    """VibeError unless the body holds the pose-corrective shape keys its baked correctives key."""
    key = mesh_obj.data.shape_keys
    missing = [k for k in range(NUM_CORRECTIVES) if key is None or key.key_blocks.get(corrective_key_name(k)) is None]
    if missing:
        raise VibeError(
            f"'{armature_obj.name}' bakes its pose correctives but its body '{mesh_obj.name}' lacks "
            f"{len(missing)} of their shape keys ({corrective_key_name(missing[0])}...); import the "
            "character again to get them back."
        )


def key_visibility(mesh_obj, frames: np.ndarray, first_frame: float, last_frame: float) -> None:
    """Show the body on the frames of the motion's keys ``frames`` (T,) and hide it elsewhere in
    [first_frame, last_frame]: before its first run, in gaps, after its end. A body seen in every
    frame of that range has no visibility keys (those it had are removed), except under F-curve
    modifiers the user added: that curve stays, with one key that shows the body."""
    times, hidden = [], []
    if frames[0] > first_frame:
        times.append(first_frame), hidden.append(1.0)
    for start, end in frame_runs(frames):
        times.append(frames[start]), hidden.append(0.0)
        if frames[end - 1] < last_frame:
            times.append(frames[end - 1] + 1), hidden.append(1.0)
    seen_throughout = len(times) == 1
    if seen_throughout:  # its visibility keys go; a flag the user set stays
        channels = keyframes.channels_of(mesh_obj)
        if channels is None or not any(f.data_path in ANIMATED_FLAGS for f in channels.fcurves):
            return
    channels = keyframes.channels_for_rewrite(mesh_obj, f"{mesh_obj.name}_visibility")
    for path in ANIMATED_FLAGS:
        fcurve = channels.fcurves.find(path)
        if not seen_throughout or (fcurve is not None and len(fcurve.modifiers)):  # kept for the user's modifiers
            keyframes.rewrite_fcurve(
                channels,
                path,
                0,
                np.array(times, dtype=np.float64),
                np.array(hidden),
                interpolation=keyframes.CONSTANT,
            )
        elif keyframes.remove_fcurves(channels, path):
            setattr(mesh_obj, path, False)  # no longer animated: left as the last frame evaluated


def refit_bones(armature_obj) -> None:
    """Move the bones to J(betas) for the betas the Shape keys hold now, keeping the animation:
    every keyed bone keeps its armature-space rotation and the pelvis keeps its world position.
    All keys are read (and checked) before the rig changes: a VibeError leaves it as it was."""
    check_refittable(armature_obj)
    betas = current_betas(armature_obj)
    mesh_obj = character_mesh(armature_obj)
    channels = keyframes.channels_of(armature_obj)
    rotations, location = _read_pose_keys(armature_obj, channels)
    q_rest_old = rest_quats(armature_obj)
    head_old = np.array(armature_obj.data.bones[JOINT_NAMES[0]].head_local)
    place_bones(armature_obj, joints_for_betas(armature_obj, betas))
    q_rest_new = rest_quats(armature_obj)
    head_new = np.array(armature_obj.data.bones[JOINT_NAMES[0]].head_local)
    for bone, q_basis in rotations.items():  # each bone on its own keys: a user's extra key is fine
        j = JOINT_NAMES.index(bone)
        refit = refit_basis_quats(q_basis[:, None], q_rest_old[j : j + 1], q_rest_new[j : j + 1])[:, 0]
        mode = armature_obj.pose.bones[bone].rotation_mode
        # written in the bone's own mode (a bone switched to Euler plays its Euler keys); Euler angles
        # are made from sign-continuous quaternions so that they do not jump
        values = rotation_keys(refit if mode == "QUATERNION" else make_continuous(refit), mode)
        for c in range(values.shape[1]):
            keyframes.replace_fcurve_values(channels, keyframes.rotation_path(bone, mode), c, values[:, c])
    if location is not None:
        refit = refit_root_locations(location, head_old, q_rest_old[0], head_new, q_rest_new[0])
        for c in range(3):
            keyframes.replace_fcurve_values(channels, keyframes.location_path(JOINT_NAMES[0]), c, refit[:, c])
    if armature_obj.get("vibe_correctives") == "drivers":
        add_corrective_drivers(armature_obj, mesh_obj)


def check_refittable(armature_obj) -> None:
    """VibeError, before anything changes, unless refit_bones can move this character's bones here
    for good: an armature of this file (Blender moves no bones of a linked armature, nor of a library
    override's), animated as editable.check_editable asks, with its 24 SMPL bones and its body's
    Shape000..009 keys under their names."""
    data = armature_obj.data
    if data.library is not None or data.override_library is not None:
        library = data.library or data.override_library.reference.library
        where = f"'{library.filepath}'" if library is not None else "another file"
        raise VibeError(
            f"The bones of '{armature_obj.name}' come from {where}, where they can be moved: Blender cannot move a "
            "linked armature's bones (nor a library override's). Open that file, refit the bones there and save it."
        )
    check_editable(armature_obj)
    key = character_mesh(armature_obj).data.shape_keys
    bones = [name for name in JOINT_NAMES if data.bones.get(name) is None]
    keys = [shape_key_name(i) for i in range(NUM_BETAS) if key is None or key.key_blocks.get(shape_key_name(i)) is None]
    lacks = [f"the {what} {', '.join(names)}" for what, names in (("bones", bones), ("shape keys", keys)) if names]
    if lacks:
        raise VibeError(
            f"Cannot refit '{armature_obj.name}': it lacks {' and '.join(lacks)} (renamed or deleted); give them "
            "back their names, or import the character again."
        )


def _read_pose_keys(armature_obj, channels) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """-> ({bone: quaternion keys (N, 4)} for the keyed bones, read in each bone's own rotation mode,
    pelvis location keys (N, 3) or None);
    VibeError when a bone's channels are keyed on different frames (it could not be refit)."""
    rotations, location = {}, None
    if channels is None:
        return rotations, location
    try:
        for bone in JOINT_NAMES:
            mode = armature_obj.pose.bones[bone].rotation_mode
            size = keyframes.rotation_channel(mode)[1]
            keys = keyframes.read_vector_keys(channels, keyframes.rotation_path(bone, mode), size)
            if keys is not None:
                rotations[bone] = rotation_quats(keys[1], mode)
        keys = keyframes.read_vector_keys(channels, keyframes.location_path(JOINT_NAMES[0]), 3)
        location = None if keys is None else keys[1]
    except ValueError as err:
        raise VibeError(
            f"Cannot refit '{armature_obj.name}': {err}. Key all channels of that bone together "
            "(Insert Keyframe > Rotation or Location) or delete the odd keys, then refit again."
        ) from err
    return rotations, location
