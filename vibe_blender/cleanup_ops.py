"""Clean up an SMPL character's keys in place: smoothing, foot locking, ground snapping, trim,
frame offset and merging two broken tracks of one person. The maths is :mod:`core.cleanup`; this
module only reads the keys (pose-bone rotations, each in its bone's rotation mode, + pelvis
location) and writes back in bulk, into the same action, those the edit changes, with what follows
from them on an imported character: the body's visibility (shown on the frames with keys) and its
baked pose correctives.

Functions that take several characters work out every result before they change any character,
so a VibeError (which names the character) leaves all of them as they were."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import bpy
import numpy as np

from . import keyframes
from .animation import check_correctives, corrective_path, key_correctives, key_motion, key_visibility
from .core.cleanup import clean_up, merge_tracks, motion_figures, trim_mask
from .core.errors import VibeError
from .core.retarget_math import rotation_quats
from .core.rotations import make_continuous
from .core.skeleton import refit_basis_quats, refit_root_locations, smpl_rotations_from_basis
from .core.smpl_math import pose_feature
from .core.smpl_model import JOINT_NAMES, PARENTS
from .editable import check_editable
from .rig_builder import NUM_CORRECTIVES, find_character_mesh, rest_quats
from .visibility import ANIMATED_FLAGS

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
# Two keys this far apart (or less) are the same: float32 keys read back, or a quaternion and its negative.
SAME_KEY = 1e-6


@dataclass
class _Motion:
    """A character's keys as read_motion reads them, and which of its channels carry keys."""

    frames: np.ndarray  # (T,)
    quats: np.ndarray  # (T, 24, 4)
    loc: np.ndarray  # (T, 3)
    keyed: set[str]  # the bones with rotation curves in their rotation mode
    loc_keyed: bool  # the pelvis location has curves


def motion_curves(armature_obj) -> dict[str, tuple[str, str]]:
    """{data_path: (name, letter of each channel)} of the character's motion F-curves: each bone's
    rotation in its own rotation mode (quaternion W X Y Z, Euler X Y Z, axis-angle W X Y Z) and the
    pelvis location."""
    curves = {}
    for bone in JOINT_NAMES:
        mode = armature_obj.pose.bones[bone].rotation_mode
        path = keyframes.rotation_path(bone, mode)
        curves[path] = (f"{bone} rotation", "WXYZ"[-keyframes.rotation_channel(mode)[1] :])
    curves[LOC_PATH] = ("pelvis location", "XYZ")
    return curves


def read_motion(armature_obj, *, as_played: bool = False):
    """-> frames (T,), quats (T, 24, 4), pelvis location (T, 3) from an SMPL character's action, at
    the frames of the pelvis rotation keys (a bone keyed on other frames is sampled there). Each
    bone is read in its own rotation mode; a channel without keys plays as the bone stands now.
    VibeError unless the keys are one a frame (runs of consecutive whole frames, with gaps).

    The rule for F-curve modifiers, so that an edit loses no motion and no modifier applies twice:
    a curve whose modifiers can stay over the edited keys (keyframes.bake_reason: all but a Cycles
    over other frames than the character's; an Offset moves their frames with the keys) is read as
    its keys alone, and write_motion keeps them. Any other curve with active modifiers is read as
    Blender plays it, and write_motion removes those modifiers, baked into the new keys. as_played:
    every curve as Blender plays it (a character whose curves go away)."""
    motion = _read(armature_obj, as_played=as_played)
    return motion.frames, motion.quats, motion.loc


def _read(armature_obj, *, as_played: bool = False) -> _Motion:
    """read_motion, with which channels carry keys."""
    channels = _motion_channels(armature_obj)
    name = armature_obj.name
    frames = _motion_frames(armature_obj, channels)
    if not np.all(np.isfinite(frames)):
        raise VibeError(
            f"'{name}' has a pelvis rotation key on a frame that is not a number; delete that key in "
            "the Graph Editor, then try again."
        )
    _check_one_key_a_frame(name, frames)
    curves = motion_curves(armature_obj)
    every = [(path, c) for path, (_, letters) in curves.items() for c in range(len(letters))]
    played = set(every if as_played else _curves_to_bake(channels, every, frames))

    def sample(pose_bone, prop: str, size: int) -> tuple[np.ndarray, bool]:
        """-> (T, size) values of one property, and whether any of its channels is keyed."""
        path = pose_bone.path_from_id(prop)
        out = np.tile(np.array(getattr(pose_bone, prop), dtype=np.float64), (len(frames), 1))
        keyed = False
        for c in range(size):
            values = keyframes.sample_fcurve(channels, path, c, frames, through_modifiers=(path, c) in played)
            if values is None:
                continue
            if not np.all(np.isfinite(values)):
                what, letters = curves[path]
                frame = frames[np.flatnonzero(~np.isfinite(values))[0]]
                raise VibeError(
                    f"'{name}' has a {what} {letters[c]} that is not a number at frame {frame:g} (a key "
                    "or an F-curve modifier set it); fix or delete that key in the Graph Editor, then try again."
                )
            out[:, c], keyed = values, True
        return out, keyed

    quats, keyed = np.empty((len(frames), 24, 4)), set()
    for j, bone in enumerate(JOINT_NAMES):
        pose_bone = armature_obj.pose.bones[bone]
        mode = pose_bone.rotation_mode
        values, is_keyed = sample(pose_bone, *keyframes.rotation_channel(mode))
        quats[:, j] = rotation_quats(values, mode)
        if is_keyed:
            keyed.add(bone)
    loc, loc_keyed = sample(armature_obj.pose.bones[JOINT_NAMES[0]], "location", 3)
    return _Motion(frames, quats, loc, keyed, loc_keyed)


def _motion_channels(armature_obj):
    """The container of the character's F-curves; VibeError, saying what to do, when it has none or
    is no SMPL character with keys on its pelvis rotation."""
    name = armature_obj.name
    reason = keyframes.no_channels_reason(armature_obj)
    if reason == keyframes.IN_NLA_STRIPS:
        raise VibeError(keyframes.in_nla_strips_message(armature_obj, "try again"))
    if reason == keyframes.NO_SLOT:
        raise VibeError(keyframes.no_slot_message(armature_obj, "try again"))
    channels = keyframes.channels_of(armature_obj)
    if channels is None or len(_motion_frames(armature_obj, channels)) == 0:
        raise VibeError(
            f"'{name}' is not an animated SMPL character; clean-up works on characters "
            "imported by VIBE Mocap (retarget after cleaning)."
        )
    return channels


def _check_one_key_a_frame(name: str, frames: np.ndarray) -> None:
    """VibeError unless the keys are on whole frames, mostly one frame apart: keys further apart
    than a frame are taken for a gap (the person not seen), so a motion keyed on twos or retimed
    would be held and hidden between its keys."""
    bake = (
        "clean-up works on one key a frame: bake the action first (Pose > Animation > Bake Action, "
        "Frame Step 1), then try again."
    )
    between = frames[frames != np.round(frames)]
    if len(between):
        raise VibeError(f"'{name}' has a pelvis rotation key between frames (at frame {between[0]:g}); {bake}")
    step = float(np.median(np.diff(frames))) if len(frames) > 1 else 1.0
    if step > 1:
        raise VibeError(f"The keys of '{name}' are {step:g} frames apart; {bake}")


def frame_count(armature_obj) -> int:
    """How many frames the character has (its pelvis rotation keys); 0 when it is not animated."""
    channels = keyframes.channels_of(armature_obj)
    return 0 if channels is None else len(_motion_frames(armature_obj, channels))


def _motion_frames(armature_obj, channels) -> np.ndarray:
    """(T,) frames of the pelvis rotation keys (its first channel in its rotation mode), the
    character's frames (none without that curve or without a pelvis)."""
    if any(armature_obj.pose.bones.get(b) is None for b in JOINT_NAMES):
        return np.empty(0)
    pelvis = armature_obj.pose.bones[JOINT_NAMES[0]]
    keys = keyframes.read_fcurve(channels, keyframes.rotation_path(pelvis.name, pelvis.rotation_mode), 0)
    return np.empty(0) if keys is None else keys[0]


def _curves_to_bake(channels, curves, frames: np.ndarray) -> dict[tuple[str, int], str]:
    """{(data_path, index): keyframes.BAKE_*} of ``curves`` [(data_path, index)] whose active
    modifiers cannot stay over the edited keys, with why."""
    reasons = {(path, c): keyframes.bake_reason(channels, path, c, frames) for path, c in curves}
    return {curve: reason for curve, reason in reasons.items() if reason is not None}


def write_motion(armature_obj, frames, quats, loc) -> dict[tuple[str, int], str]:
    """Replace the character's keys with frames (T,), quats (T, 24, 4), pelvis location (T, 3), in
    its action's F-curves (they stay, with the user's settings and the modifiers read_motion read
    under); -> {(data_path, index): keyframes.BAKE_*} of the curves whose modifiers read_motion
    baked into the motion, removed here. Only the channels the new motion changes are rewritten
    (on the same frames, the bones whose rotation changes; on other frames, every keyed one), each
    bone in its own rotation mode: a bone the edit leaves as it was keeps its curves as the user
    made them, and one without keys stays without unless the edit moves it. An imported character's
    body is then shown on these frames only, and its baked pose correctives are keyed from the new
    rotations."""
    frames = np.asarray(frames, dtype=np.float64)
    quats = make_continuous(np.asarray(quats, dtype=np.float64))
    loc = np.asarray(loc, dtype=np.float64)
    mesh_obj = find_character_mesh(armature_obj)
    corrected = _corrected_body(armature_obj)  # checked before any key changes
    before = _keys_before(armature_obj)
    bones, location = _changed_channels(before, frames, quats, loc)
    if not bones and not location and before is not None and np.array_equal(before.frames, frames):
        return {}  # nothing changes: no key is rewritten
    curves = motion_curves(armature_obj)
    written = {keyframes.rotation_path(b, armature_obj.pose.bones[b].rotation_mode) for b in bones}
    written |= {LOC_PATH} if location else set()
    every = [(path, c) for path, (_, letters) in curves.items() if path in written for c in range(len(letters))]
    modifiers_baked = (
        {} if before is None else _curves_to_bake(keyframes.channels_of(armature_obj), every, before.frames)
    )
    key_motion(armature_obj, frames, quats, loc, bones=bones, location=location)
    channels = keyframes.channels_of(armature_obj)  # a shared action has been copied for it
    for path, c in modifiers_baked:
        keyframes.drop_modifiers(channels, path, c)
    if mesh_obj is None:
        return modifiers_baked  # a bare SMPL armature (no body of ours): nothing follows from the keys
    if corrected is not None:
        rotmats = smpl_rotations_from_basis(quats, rest_quats(armature_obj))
        key_correctives(armature_obj, corrected, frames, pose_feature(rotmats))
    scene = bpy.context.scene
    key_visibility(mesh_obj, frames, min(scene.frame_start, frames[0]), max(scene.frame_end, frames[-1]))
    return modifiers_baked


def _keys_before(armature_obj) -> _Motion | None:
    """The character's keys as the edit read them, None when it has none to compare with (a bare
    armature, or keys read_motion refuses: the edit then rewrites every channel)."""
    if not frame_count(armature_obj):
        return None
    try:
        return _read(armature_obj)
    except VibeError:
        return None


def _changed_channels(before: _Motion | None, frames, quats, loc) -> tuple[list[str], bool]:
    """-> (bones, pelvis location?) that write_motion must key for the new motion, given the
    character's keys ``before`` (None: it has none): on the same frames, those whose values change;
    on other frames, the keyed ones and any unkeyed one that stops standing as it does."""
    if before is None:
        return list(JOINT_NAMES), True
    same_frames = np.array_equal(before.frames, frames)
    old_q = before.quats if same_frames else before.quats[:1]  # an unkeyed bone stands still
    old_loc = before.loc if same_frames else before.loc[:1]
    # as rotations: Blender plays a quaternion normalised, and q and -q alike
    new_q, old_q = (q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12) for q in (quats, old_q))
    sign = np.where(np.sum(new_q * old_q, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    moved = np.abs(new_q - sign * old_q).max(axis=(0, 2)) > SAME_KEY
    bones = [b for j, b in enumerate(JOINT_NAMES) if moved[j] or (not same_frames and b in before.keyed)]
    location = bool(np.abs(loc - old_loc).max() > SAME_KEY) or (not same_frames and before.loc_keyed)
    return bones, location


def _corrected_body(armature_obj):
    """The body whose baked pose correctives follow the character's keys, None when there is none;
    VibeError when it lacks their shape keys (write_motion would refuse the character)."""
    mesh_obj = find_character_mesh(armature_obj)
    if mesh_obj is None or armature_obj.get("vibe_correctives") != "baked":
        return None
    check_correctives(armature_obj, mesh_obj)
    return mesh_obj


BAKED_BECAUSE = {  # why, in the warning
    keyframes.BAKE_LOOP: "because the curve's Cycles loop does not span the new keys",
}


def _write_each(armature_objs, motions, warn: Callable[[str], None]) -> None:
    """write_motion(obj, *motion) for each character, then one warning naming the curves whose
    modifiers were baked into the keys, and why, if any."""
    baked = {reason: {} for reason in BAKED_BECAUSE}
    for armature_obj, motion in zip(armature_objs, motions):
        for curve, reason in write_motion(armature_obj, *motion).items():
            baked[reason].setdefault(armature_obj, []).append(curve)
    sentences = [
        f"F-curve modifiers baked into the keys and removed {BAKED_BECAUSE[reason]}: "
        + "; ".join(f"'{obj.name}': {_curve_list(obj, curves)}" for obj, curves in characters.items())
        + "."
        for reason, characters in baked.items()
        if characters
    ]
    if sentences:
        warn(" ".join(sentences))


def _curve_list(armature_obj, curves: list[tuple[str, int]]) -> str:
    """[(data_path, index)] of the character's motion -> 'left_wrist rotation W X Y Z, pelvis location X'."""
    names = motion_curves(armature_obj)
    channels = {}
    for path, c in curves:
        name, letters = names[path]
        channels.setdefault(name, []).append(letters[c])
    return ", ".join(f"{name} {' '.join(letters)}" for name, letters in channels.items())


def _rest(armature_obj) -> np.ndarray:
    return np.array([np.array(armature_obj.data.bones[b].matrix_local) for b in JOINT_NAMES])


def check_writable(armature_obj) -> None:
    """VibeError, before anything is read or written, unless the character's keys and its body's can
    be rewritten here for good (see editable.check_editable: not linked from another file without a
    library override, no NLA strip open for tweaking)."""
    check_editable(armature_obj)
    body = find_character_mesh(armature_obj)
    if body is not None:
        check_editable(body)


def _for_each(armature_objs, work) -> list:
    """[work(obj)] for every character, each first checked to be one write_motion can write (here
    and for good), so that no character changes when another one would fail; a VibeError names the
    character it came from."""
    results = []
    for obj in armature_objs:
        try:
            check_writable(obj)
            results.append(work(obj))
            _corrected_body(obj)
        except VibeError as err:
            if len(armature_objs) == 1:
                raise
            raise VibeError(f"{obj.name}: {err} No character was changed.") from err
    return results


def measure_character(armature_obj, fps: float | None = None) -> dict:
    """Jitter (m/s²) and foot slide (mm per contact frame) of a character's keys, unchanged."""
    frames, quats, loc = read_motion(armature_obj)
    return motion_figures(
        PARENTS, _rest(armature_obj), quats, loc, LEGS, (fps or keyframes.scene_fps()), frame_ids=frames
    )


def clean_up_character(armature_obj, **options) -> dict:
    """Smooth / lock feet / snap one character; -> the core report (jitter and slide before/after).
    Options as :func:`clean_up_characters`."""
    return clean_up_characters([armature_obj], **options)[0]


def clean_up_characters(
    armature_objs,
    *,
    strength: float = 0.5,
    bone_group: str = "ALL",
    lock_feet: bool = True,
    snap_to_ground: bool = True,
    fps: float | None = None,
    warn: Callable[[str], None] = print,
) -> list[dict]:
    """Smooth / lock feet / snap each character, every run of consecutive frames on its own (keys
    across a gap are no neighbours); -> the core report of each. All or nothing. ``warn`` gets one
    message naming the F-curves whose modifiers were baked into the keys, and why (see read_motion),
    if any."""
    if bone_group not in BONE_GROUPS:
        raise VibeError(f"Unknown bone group '{bone_group}'; choose one of {', '.join(BONE_GROUPS)}.")
    fps = fps or keyframes.scene_fps()
    group = BONE_GROUPS[bone_group]
    joints = None if group is None else [JOINT_NAMES.index(b) for b in group]

    def cleaned(armature_obj):
        frames, quats, loc = read_motion(armature_obj)
        rest = _rest(armature_obj)
        bones = armature_obj.data.bones
        sole = float(rest[LEGS[0][2], 2, 3] - min(bones[b].tail_local[2] for b in ("left_ankle", "left_foot")))
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
            frame_ids=frames,
        )
        return frames, quats, loc, report

    results = _for_each(armature_objs, cleaned)
    _write_each(armature_objs, [motion for *motion, _ in results], warn)
    return [report for *_, report in results]


def trim_and_offset(
    armature_obj,
    *,
    start: int | None = None,
    end: int | None = None,
    offset: int = 0,
    warn: Callable[[str], None] = print,
) -> int:
    """Keep keys in [start, end] and move them by ``offset`` frames, with the frames their modifiers
    play on; -> number of frames kept. The body's visibility and baked correctives move with them.
    ``warn`` as clean_up_characters."""
    return trim_and_offset_characters([armature_obj], start=start, end=end, offset=offset, warn=warn)[0]


def trim_and_offset_characters(
    armature_objs, *, start=None, end=None, offset: int = 0, warn: Callable[[str], None] = print
) -> list[int]:
    """:func:`trim_and_offset` on each character, all or nothing; -> frames kept per character."""

    def trimmed(armature_obj):
        frames, quats, loc = read_motion(armature_obj)
        keep = trim_mask(frames, start, end)
        return frames[keep] + offset, quats[keep], loc[keep]

    results = _for_each(armature_objs, trimmed)
    _write_each(armature_objs, results, warn)
    for armature_obj in armature_objs if offset else ():
        _offset_the_rest(armature_obj, offset)
    return [len(frames) for frames, _, _ in results]


def _offset_the_rest(armature_obj, offset: int) -> None:
    """After write_motion moved the keys it writes by ``offset`` frames (the motion's, the body's
    visibility and baked correctives), move the frames their modifiers play on (each curve plays at
    frame f + offset what it played at f); move the keys write_motion did not write (the user's
    scale or custom property keys on the character, its body's shape keys) with their modifiers'
    frames, and the manual frame range of their actions, so that everything keyed with the motion
    stays in step with it (and an export of the action's frame range exports the moved motion)."""
    motion = set(motion_curves(armature_obj))
    keyframes.shift_keys(armature_obj, offset, keep=motion)
    keyframes.shift_modifiers_of(armature_obj, offset, motion)
    body = find_character_mesh(armature_obj)
    if body is None:
        return
    flags = set(ANIMATED_FLAGS)
    keyframes.shift_keys(body, offset, keep=flags)
    keyframes.shift_modifiers_of(body, offset, flags)
    if body.data.shape_keys is not None:
        baked = armature_obj.get("vibe_correctives") == "baked"
        written = {corrective_path(k) for k in range(NUM_CORRECTIVES)} if baked else set()
        keyframes.shift_keys(body.data.shape_keys, offset, keep=written)
        keyframes.shift_modifiers_of(body.data.shape_keys, offset, written)


def merge_characters(keep_obj, other_obj, *, warn: Callable[[str], None] = print) -> int:
    """Append ``other_obj``'s frames that ``keep_obj`` lacks (same person, broken track), then delete
    ``other_obj`` and its body; -> frame count of the merged motion. The other track's keys are
    moved onto the kept rig's rest pose (its shape may differ): every bone keeps its armature-space
    rotation and the pelvis its place in the scene. The other track is read as Blender plays it (its
    F-curves and their modifiers go with it); the kept one, whose keys stay on their frames, as
    read_motion says. The user's own objects parented to the other track move to the kept one,
    where they are in the scene, and ``warn`` names them; ``warn`` also as clean_up_characters."""
    if keep_obj == other_obj:
        raise VibeError("Pick two different characters to merge.")
    for obj in (keep_obj, other_obj):  # the kept one's keys are rewritten, the other one is deleted
        check_writable(obj)
    if not np.allclose(np.array(keep_obj.matrix_world), np.array(other_obj.matrix_world), atol=1e-6):
        raise VibeError(
            f"'{keep_obj.name}' and '{other_obj.name}' are not placed alike in the scene (their object "
            "transforms differ); clear or apply the transform of one, then merge."
        )
    fa, qa, la = read_motion(keep_obj)
    fb, qb, lb = read_motion(other_obj, as_played=True)
    q_rest_a, q_rest_b = rest_quats(keep_obj), rest_quats(other_obj)
    qb = refit_basis_quats(qb, q_rest_b, q_rest_a)
    lb = refit_root_locations(lb, _pelvis_head(other_obj), q_rest_b[0], _pelvis_head(keep_obj), q_rest_a[0])
    frames, merged = merge_tracks(fa, {"q": qa, "loc": la}, fb, {"q": qb, "loc": lb})
    _write_each([keep_obj], [(frames, merged["q"], merged["loc"])], warn)
    body = find_character_mesh(other_obj)
    moved = [child for child in other_obj.children if child != body] + (list(body.children) if body else [])
    if moved:
        _reparent(moved, keep_obj)
        names = ", ".join(f"'{child.name}'" for child in moved)
        warn(f"Deleted '{other_obj.name}' but kept its children {names}: now parented to '{keep_obj.name}', in place.")
    _deform_with(other_obj, keep_obj, keep=body)
    _delete_character(other_obj, body)
    return len(frames)


def _deform_with(old_armature, new_armature, *, keep) -> None:
    """Point every Armature modifier that deforms by ``old_armature`` (the user's clothing on the other
    track; not ``keep``, deleted with it) at ``new_armature``: the bones have the same names."""
    for obj in bpy.data.objects:
        if obj == keep:
            continue
        for modifier in obj.modifiers:
            if modifier.type == "ARMATURE" and modifier.object == old_armature:
                modifier.object = new_armature


def _reparent(children, parent_obj) -> None:
    """Parent ``children`` to ``parent_obj`` (to its bone of the same name where one was bone
    parented), each staying where it is in the scene at the current frame."""
    placed = [child.matrix_world.copy() for child in children]
    bpy.context.view_layer.update()  # the new parent's pose at the current frame
    for child, matrix in zip(children, placed):
        child.parent = parent_obj
        child.matrix_world = matrix


def _delete_character(armature_obj, body) -> None:
    """Remove the character's armature and body (None: none), and their data and actions that
    nothing else uses."""
    objects = [obj for obj in (armature_obj, body) if obj is not None]
    data = [obj.data for obj in objects if obj.data is not None]
    animated = objects + data + [d.shape_keys for d in data if getattr(d, "shape_keys", None) is not None]
    actions = {i.animation_data.action for i in animated if i.animation_data and i.animation_data.action}
    bpy.data.batch_remove(objects)
    bpy.data.batch_remove([d for d in data if d.users == 0])
    bpy.data.batch_remove([a for a in actions if a.users == 0])


def _pelvis_head(armature_obj) -> np.ndarray:
    return np.array(armature_obj.data.bones[JOINT_NAMES[0]].head_local)
