"""Retarget an armature's motion onto another humanoid armature and bake it into the target's keys.

Read both rigs (rest matrices, hierarchy, object transforms) and the source's F-curves, evaluate the
source in numpy (no frame stepping), carry every mapped bone's world rotation over with the rest-pose
and roll correction of :mod:`core.retarget_math`, scale the root motion by leg length, lock the
target's feet where the source's feet are planted (:mod:`core.cleanup`), and write one new action on
the target in bulk through the one F-curve helper, :mod:`keyframes`.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np

from . import keyframes
from .core.cleanup import detect_contacts, planted_leg_rotations
from .core.errors import VibeError
from .core.retarget_map import ROOT_JOINT, validate_map
from .core.retarget_math import (
    compose_basis,
    heading_turn,
    hip_height,
    leg_length,
    leg_scale,
    pose_from_basis,
    pose_matrices,
    rest_offsets,
    retarget_rotations,
    rotation_keys,
    rotation_matrices,
    rotation_part,
    scale_root_motion,
    solve_basis,
    sub_skeleton,
)
from .core.rotations import make_continuous, rotmat_to_quat
from .editable import check_editable
from .keyframes import rotation_channel
from .progress_counter import progress_counter

# Every frame of the range is baked. Only the mapped bones and their parents are computed, so the memory
# a frame follows the mapped chains, not the rig's size: measured 16 KB on a 22-bone Mixamo-like rig and
# 30 KB on Rigify's 706-bone control rig. A capture of an hour at 30 frames/s is 108,000 frames (1.7-3.2
# GB); the cap, 200,000 frames (3.2-6 GB), refuses a gap of millions of frames in a damaged file.
MAX_RETARGET_FRAMES = 200_000


def armature_arrays(armature_obj) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """-> bone names (N,), parents (N,) (-1 for roots), rest (N, 4, 4) armature space, world (4, 4)."""
    if armature_obj is None or armature_obj.type != "ARMATURE":
        raise VibeError("Pick an armature object (the source character and the target rig must both be armatures).")
    bones = bones_as_edited(armature_obj)
    names = [b.name for b in bones]
    index = {n: i for i, n in enumerate(names)}
    parents = np.array([index[b.parent.name] if b.parent else -1 for b in bones], dtype=np.int64)
    rest = np.array([np.array(b.matrix_local) for b in bones], dtype=np.float64).reshape(-1, 4, 4)
    world = np.array(armature_obj.matrix_world, dtype=np.float64)
    check_object_scale(armature_obj.name, world)
    return names, parents, rest, world


def check_object_scale(name: str, world: np.ndarray) -> None:
    """Refuse a world matrix (the object's transform with its parents') that the retarget cannot
    carry bone rotations through: one that scales to nothing, unevenly or mirrored."""
    scale = np.linalg.norm(world[:3, :3], axis=0)
    # Animators key a rig's scale to 0 to hide it; its matrix has no inverse.
    if scale.min() < 1e-6:
        raise VibeError(
            f"'{name}' is scaled to zero at this frame (its object scale or a parent's); go to a frame where "
            "it shows, or set its scale back, before retargeting."
        )
    if np.ptp(scale) > 1e-4 * scale.max():
        raise VibeError(
            f"'{name}' has a non-uniform object scale {tuple(np.round(scale, 4))}; "
            "apply the scale (Object > Apply > Scale) first."
        )
    # A negative scale mirrors the rig: its bones turn the other way round, and the carried
    # rotations come out up to 180 degrees off.
    if np.linalg.det(world[:3, :3]) <= 0:
        raise VibeError(
            f"'{name}' is mirrored by a negative scale (its object scale or a parent's); apply the scale "
            "(Object > Apply > Scale) first."
        )


def bones_as_edited(armature_obj):
    """The armature's bones, with the edits of an armature in Edit Mode taken in first (its bones
    are otherwise those from before the edit)."""
    if armature_obj.mode == "EDIT":
        armature_obj.update_from_editmode()
    return armature_obj.data.bones


def check_evaluable(target, bone_names) -> None:
    """Refuse, before anything changes, a rig whose constraint-driven parents Blender cannot evaluate
    here: one outside this view layer (its collection excluded, or in another scene)."""
    from .visibility import outside_view_layer

    if has_constrained_parents(target, bone_names) and outside_view_layer([target]):
        raise VibeError(
            f"'{target.name}' is not in this scene's view layer (its collection is excluded, or it is in another "
            "scene), so Blender does not evaluate the constraints its bones hang from; include its collection, "
            "or retarget in its own scene."
        )


@contextmanager
def posed(rig):
    """Within the block the armature shows its pose (not its rest position); afterwards as it was."""
    before = rig.data.pose_position
    rig.data.pose_position = "POSE"
    try:
        yield
    finally:
        rig.data.pose_position = before


def bones_with_parents(rig, bone_names) -> list[str]:
    """The bones and all their parents, each once: the chains the forward kinematics walks."""
    chain: dict[str, None] = {}
    for name in bone_names:
        bone = rig.data.bones[name]
        while bone is not None and bone.name not in chain:
            chain[bone.name] = None
            bone = bone.parent
    return list(chain)


def check_bone_options(rig, bone_names, root: str, scaled=()) -> None:
    """Refuse bone options that the forward kinematics (:func:`core.retarget_math.pose_from_basis`)
    does not reproduce, on ``bone_names`` (root among them) and their parents; the rig is not changed.

    Inherit Scale matters only under a parent in ``scaled`` (bones whose keys scale them): with unit
    scales every Inherit Scale mode gives the same pose, and the retarget keys the target's scales 1."""
    bones = rig.data.bones
    chain = bones_with_parents(rig, bone_names)
    hinged = [n for n in chain if bones[n].parent is not None and not bones[n].use_inherit_rotation]
    if hinged:
        raise VibeError(
            f"Bones {_names(hinged)} of '{rig.name}' do not inherit their parent's rotation, which the retarget "
            "cannot reproduce; tick Inherit Rotation on them (Bone properties > Relations)."
        )
    scaled = set(scaled)
    partial = [
        n
        for n in chain
        if bones[n].inherit_scale != "FULL" and any(p.name in scaled for p in bones[n].parent_recursive)
    ]
    if partial:
        raise VibeError(
            f"Bones {_names(partial)} of '{rig.name}' inherit only part of their parents' scale while the keys "
            "scale those parents, which the retarget cannot reproduce; set Inherit Scale to Full on them "
            "(Bone properties > Relations) or remove the scale keys."
        )
    if bones[root].use_connect:
        raise VibeError(
            f"The root bone '{root}' of '{rig.name}' is connected to its parent, so Blender ignores its location "
            "keys and the root motion would be lost; untick Connected on it in Edit Mode, or map the root to an "
            "unconnected bone."
        )
    if not bones[root].use_local_location:
        raise VibeError(
            f"The root bone '{root}' of '{rig.name}' has Local Location off, which the retarget cannot key; tick "
            "Local Location on it (Bone properties > Relations), or map the root to another bone."
        )


def pose_overrides(rig, bone_names) -> dict[str, list[str]]:
    """What sets a bone's pose over its keys: enabled, valid constraints with influence on it, IK
    chains it belongs to, and drivers on the transform channels it reads (its rotation mode's).
    -> {bone: [descriptions]} for the ``bone_names`` that have any, in their order."""
    wanted = set(bone_names)
    found: dict[str, list[str]] = {}
    for owner in rig.pose.bones:
        for con in owner.constraints:
            if not (con.enabled and con.influence > 0 and con.is_valid):
                continue
            moved = [owner]
            if con.type in ("IK", "SPLINE_IK"):  # the chain above the owner turns too (0: up to the root)
                chain = [owner, *owner.parent_recursive]
                moved = chain[: con.chain_count or len(chain)]
            kind = type(con).bl_rna.properties["type"].enum_items[con.type].name
            for bone in moved:
                if bone.name in wanted:
                    where = "" if bone == owner else f" on '{owner.name}'"
                    found.setdefault(bone.name, []).append(f"{kind} constraint '{con.name}'{where}")
    if rig.animation_data is not None:
        channels = {}
        for name in wanted:
            pose_bone = rig.pose.bones[name]
            for prop in ("location", rotation_channel(pose_bone.rotation_mode)[0], "scale"):
                channels[pose_bone.path_from_id(prop)] = (name, prop)
        for fcurve in rig.animation_data.drivers:
            hit = channels.get(fcurve.data_path)
            if hit is not None and not fcurve.mute:
                found.setdefault(hit[0], []).append(f"driver on {hit[1]}[{fcurve.array_index}]")
    return {n: found[n] for n in dict.fromkeys(bone_names) if n in found}


def action_frame_range(armature_obj) -> tuple[int, int]:
    """The frames of the source's own keys; VibeError when it has none the retarget can read."""
    anim = armature_obj.animation_data
    name = armature_obj.name
    reason = keyframes.no_channels_reason(armature_obj)
    if reason == keyframes.IN_NLA_STRIPS:
        raise VibeError(keyframes.in_nla_strips_message(armature_obj, "retarget again", tweak_mode_reads=True))
    if reason == keyframes.NO_ACTION:
        raise VibeError(f"'{name}' has no animation to retarget; import or key a motion first.")
    if reason == keyframes.NO_SLOT:
        raise VibeError(keyframes.no_slot_message(armature_obj, "retarget again"))
    keyed = keyframes.keyed_range(armature_obj)
    if keyed is None:
        raise VibeError(f"The action '{anim.action.name}' of '{name}' has no keys to retarget.")
    return int(round(keyed[0])), int(round(keyed[1]))


def _sample(channels, pose_bone, prop: str, size: int, frames: np.ndarray) -> np.ndarray:
    """(T, size) values of one pose-bone property: its F-curves where keyed and played, else the current
    value."""
    path = pose_bone.path_from_id(prop)
    out = np.tile(np.array(getattr(pose_bone, prop), dtype=np.float64), (len(frames), 1))
    for i in range(size if channels is not None else 0):
        fcurve = channels.fcurves.find(path, index=i)
        if fcurve is not None and keyframes.is_played(fcurve):  # (a muted curve: the value as it is, as played)
            out[:, i] = keyframes.sample_fcurve(channels, path, i, frames)
    return out


def sample_basis(armature_obj, frames: np.ndarray, bone_names=None) -> np.ndarray:
    """-> pose-bone basis matrices (T, N, 4, 4) from the armature's action at ``frames``, of every
    bone or of ``bone_names`` (N of them, in that order)."""
    channels = keyframes.channels_of(armature_obj)
    pose_bones = armature_obj.pose.bones
    out = []
    for pose_bone in pose_bones if bone_names is None else (pose_bones[n] for n in bone_names):
        loc = _sample(channels, pose_bone, "location", 3, frames)
        scale = _sample(channels, pose_bone, "scale", 3, frames)
        prop, size = rotation_channel(pose_bone.rotation_mode)
        rot = rotation_matrices(_sample(channels, pose_bone, prop, size, frames), pose_bone.rotation_mode)
        out.append(compose_basis(loc, rot, scale))
    return np.stack(out, axis=1)


def _floor_origin(rest_world: np.ndarray, tails_world: np.ndarray, root: int) -> tuple[np.ndarray, float]:
    """Point on the rig's floor under its rest hips, and the hips' height over that floor."""
    floor_z = float(min(rest_world[:, 2, 3].min(), tails_world[:, 2].min()))
    head = rest_world[root, :3, 3]
    return np.array([head[0], head[1], floor_z]), hip_height(head, floor_z)


# A rig whose rest feet hang more than this share of its hip height below its armature's origin may
# stand on the origin's plane: a source does when its motion's feet walk within ON_ORIGIN_SHARE of it.
HANGING_SHARE, ON_ORIGIN_SHARE = 0.5, 0.25


def _lifted_onto_origin(
    rest_world: np.ndarray, tails_world: np.ndarray, root: int, object_world: np.ndarray
) -> tuple[np.ndarray, float, float] | None:
    """-> (the rest hips lifted onto the armature origin's plane, the rest floor's height, the hip
    height) where the rest pose hangs below that plane (the add-on's own characters and BVH imports
    keep the rest pelvis at the origin, their pelvis keys lifting them onto the floor); None where it
    stands on its floor."""
    floor, height = _floor_origin(rest_world, tails_world, root)
    origin_z = float(object_world[2, 3])
    if floor[2] >= origin_z - HANGING_SHARE * height:
        return None
    hips = rest_world[root, :3, 3].copy()
    hips[2] += origin_z - floor[2]
    return hips, float(floor[2]), height


def _source_rest_hips(
    rest_world: np.ndarray,
    tails_world: np.ndarray,
    root: int,
    object_world: np.ndarray,
    feet_rest_z: np.ndarray,
    feet_motion_z: np.ndarray,
) -> np.ndarray:
    """The source's rest hips, the point its root motion is measured from: lifted onto the origin's
    plane where the rest pose hangs below it and the motion walks on it (measured from the hanging
    rest hips, the target was lifted by a hip height once more and floated); else as they are.
    feet_rest_z (K,), feet_motion_z (T, K): heights of the feet's joints at rest and over the frames."""
    hips = rest_world[root, :3, 3].copy()
    lifted = _lifted_onto_origin(rest_world, tails_world, root, object_world)
    if lifted is None or len(feet_rest_z) == 0:
        return hips
    lifted_hips, floor_z, height = lifted
    # where the motion's floor is: the feet's lowest height over most frames, less their rest height
    # over the rest floor (a foot joint is not at the sole)
    walked_on = float(np.percentile(feet_motion_z.min(axis=1), 5)) - (float(feet_rest_z.min()) - floor_z)
    return lifted_hips if abs(walked_on - float(object_world[2, 3])) < ON_ORIGIN_SHARE * height else hips


def _target_rest_hips(target, rest_world: np.ndarray, tails_world: np.ndarray, root: int, object_world) -> np.ndarray:
    """The target's rest hips, where its root motion is placed from: lifted onto the origin's plane for
    a character the add-on built (it hangs below its origin: placed from its rest hips, it sank a hip
    height under the floor); as they are for any other rig, which stands on its rest floor (a rig with
    its origin at the hips and its feet on the floor hangs below its origin too)."""
    lifted = _lifted_onto_origin(rest_world, tails_world, root, object_world)
    if lifted is not None and "vibe_J_template" in target.data:
        return lifted[0]
    return rest_world[root, :3, 3].copy()


def _tails_world(armature_obj, world: np.ndarray) -> np.ndarray:
    tails = np.array([b.tail_local for b in armature_obj.data.bones], dtype=np.float64)
    return tails @ world[:3, :3].T + world[:3, 3]


SIDES = ("left", "right")
LEG_JOINTS = ("hip", "knee", "ankle")


def mapped_legs(mapping: dict[str, str]) -> list[str]:
    """The sides whose hip, knee and ankle are all mapped."""
    return [side for side in SIDES if all(mapping.get(f"{side}_{j}") for j in LEG_JOINTS)]


def _leg_lengths(
    names: list[str], rest_world: np.ndarray, tails_world: np.ndarray, bones: dict[str, str], sides: list[str]
) -> list[float]:
    """Leg length per side (hip → knee → ankle → ground contact) of one rig; bones: SMPL joint ->
    that rig's bone. The ground contact is the lowest of the ankle bone's tail and the toe's head."""
    lengths = []
    for side in sides:
        hip, knee, ankle = (names.index(bones[f"{side}_{j}"]) for j in LEG_JOINTS)
        ground_z = tails_world[ankle, 2]
        toe = bones.get(f"{side}_foot")
        if toe in names:
            ground_z = min(ground_z, rest_world[names.index(toe), 2, 3])
        lengths.append(leg_length(*(rest_world[j, :3, 3] for j in (hip, knee, ankle)), ground_z))
    return lengths


def retarget(
    source,
    target,
    mapping: dict[str, str],
    *,
    frame_start: int | None = None,
    frame_end: int | None = None,
    scale_root: bool = True,
    lock_feet: bool = True,
    fps: float | None = None,
    action_name: str = "",
) -> dict:
    """Bake ``source``'s motion onto ``target`` through ``mapping`` ({source bone: target bone}).

    scale_root: scale the root motion by the ratio of leg lengths; lock_feet: hold the target's
    ankles still wherever the source's feet are planted (the source's contacts, detected at ``fps``,
    default the scene's), so that other foot geometry does not slide.
    -> report {frames, bones, root_scale, root_scale_from, contact_frames, constraint_passes,
    fk_switches, kept_action, overridden, unsettled, source_overridden, warnings}. The target gets a
    new action (its previous one, kept_action, is kept in the file with a fake user) keyed in each
    bone's own rotation mode; the mapped bones and their parents are keyed whole (unmapped ones at
    rest), other bones keep their pose. overridden: {bone: [constraints, drivers]} that set a mapped
    bone's pose over its keys (listed, left as they are); unsettled: {bone: degrees} still off where
    constraint-driven parents did not settle; source_overridden: the same for the source's mapped
    bones and their parents, which the retarget does not follow (it reads the source's keys);
    warnings: one sentence each on those and on limbs switched to FK.
    Raises VibeError, changing nothing, for a linked rig without library override and for bone
    options the forward kinematics does not reproduce (:func:`check_bone_options`)."""
    s_names, s_parents, s_rest, s_world = armature_arrays(source)
    t_names, t_parents, t_rest, t_world = armature_arrays(target)
    if source == target:
        raise VibeError("Source and target are the same armature; pick the rig to animate as the target.")
    check_editable(target)
    mapping = {s: t for s, t in mapping.items() if t}
    validate_map(mapping, t_names)
    check_evaluable(target, list(mapping.values()))
    check_bone_options(target, list(mapping.values()), mapping[ROOT_JOINT])
    missing = sorted(set(mapping) - set(s_names))
    if missing:
        raise VibeError(
            f"The source armature has no bone {', '.join(missing)}; retarget from an imported SMPL character."
        )
    start, end = action_frame_range(source)
    start = start if frame_start is None else frame_start
    end = end if frame_end is None else frame_end
    if end < start:
        raise VibeError(f"The frame range {start}..{end} is empty; set an end frame after the start frame.")
    if end - start + 1 > MAX_RETARGET_FRAMES:
        raise VibeError(
            f"The source's animation spans {end - start + 1:,} frames ({start}..{end}); retargeting bakes every "
            f"frame, at most {MAX_RETARGET_FRAMES:,} at once (more would need many GB). Retarget a part of it "
            "(frame_start and frame_end of vibe_blender.retarget.retarget in Python)."
        )
    frames = np.arange(start, end + 1, dtype=np.float64)
    pairs = list(mapping.items())
    # Frame by frame, only the mapped bones and their parents are computed: no other bone moves them,
    # so the memory and the time follow the mapped chains, not the rig's size (a Rigify rig has 700).
    s_chain = bones_with_parents(source, [s for s, _ in pairs])
    t_chain = bones_with_parents(target, [t for _, t in pairs])
    s_keep, t_keep = [s_names.index(n) for n in s_chain], [t_names.index(n) for n in t_chain]
    s_chain_parents, t_chain_parents = sub_skeleton(s_parents, s_keep), sub_skeleton(t_parents, t_keep)
    s_chain_rest, t_chain_rest = s_rest[s_keep], t_rest[t_keep]

    # 1. Source motion in the world, by forward kinematics of its keys (its constraints and drivers
    #    are not evaluated: they are named in the warnings).
    source_overridden = pose_overrides(source, s_chain)
    src_basis = sample_basis(source, frames, s_chain)
    scale_off = np.abs(np.linalg.norm(src_basis[..., :3, :3], axis=-2) - 1.0).max(axis=(0, 2))
    check_bone_options(source, list(mapping), ROOT_JOINT, [n for n, d in zip(s_chain, scale_off) if d > 1e-6])
    src_pose = s_world @ pose_from_basis(s_chain_parents, s_chain_rest, src_basis)
    del src_basis
    si = np.array([s_chain.index(s) for s, _ in pairs])
    ti = np.array([t_chain.index(t) for _, t in pairs])
    # 2. Rotations: the source turned to the target's heading, rest-pose and roll correction per
    #    pair, then into the target's armature space.
    s_rest_world, t_rest_world = s_world @ s_rest, t_world @ t_rest
    turn = _heading_turn(s_names, s_rest_world, t_names, t_rest_world, mapping)
    offsets = rest_offsets(turn @ rotation_part(s_world @ s_chain_rest[si]), rotation_part(t_world @ t_chain_rest[ti]))
    target_world_rot = retarget_rotations(turn @ rotation_part(src_pose[:, si]), offsets)
    to_target = np.swapaxes(rotation_part(t_world), -1, -2)  # world -> target armature
    target_rot = np.tile(np.eye(3), (len(frames), len(t_chain), 1, 1))
    target_rot[:, ti] = to_target @ target_world_rot
    mapped = np.zeros(len(t_chain), bool)
    mapped[ti] = True
    # 3. Root motion about the rest hips, scaled by the ratio of leg lengths (hip height without legs);
    #    the rigs' rest measures are taken on all their bones.
    s_root, t_root = s_chain.index(ROOT_JOINT), t_chain.index(mapping[ROOT_JOINT])
    s_root_all, t_root_all = s_keep[s_root], t_keep[t_root]
    s_tails, t_tails = _tails_world(source, s_world), _tails_world(target, t_world)
    sides = mapped_legs(mapping)
    scale, scale_from = 1.0, "off"
    if scale_root and sides:
        scale = leg_scale(
            _leg_lengths(s_names, s_rest_world, s_tails, {j: j for j in mapping}, sides),
            _leg_lengths(t_names, t_rest_world, t_tails, mapping, sides),
        )
        scale_from = "legs"
    elif scale_root:
        scale = (
            _floor_origin(t_rest_world, t_tails, t_root_all)[1] / _floor_origin(s_rest_world, s_tails, s_root_all)[1]
        )
        scale_from = "hip height"
    feet = [f"{side}_ankle" for side in sides]
    s_origin = _source_rest_hips(
        s_rest_world,
        s_tails,
        s_root_all,
        s_world,
        np.array([s_rest_world[s_names.index(f), 2, 3] for f in feet]),
        src_pose[:, [s_chain.index(f) for f in feet], 2, 3],
    )
    t_origin = _target_rest_hips(target, t_rest_world, t_tails, t_root_all, t_world)
    hips_world = scale_root_motion(src_pose[:, s_root, :3, 3], s_origin, t_origin, scale, turn)
    hips_arm = (np.concatenate([hips_world, np.ones((len(frames), 1))], -1) @ np.linalg.inv(t_world).T)[:, :3]
    quats, root_loc = solve_basis(t_chain_parents, t_chain_rest, target_rot, mapped, t_root, hips_arm)
    # 4. Feet: where the source's feet are planted, hold the target's ankles still (leg IK).
    contact_frames = 0
    if lock_feet and sides:
        target_rot, contact_frames = _lock_target_feet(
            src_pose,
            s_chain,
            t_chain_parents,
            t_chain_rest,
            t_chain,
            target_rot,
            quats,
            root_loc,
            t_root,
            mapping,
            sides,
            to_target @ turn,
            fps or keyframes.scene_fps(),
            float(np.linalg.norm(s_world[:3, 0])),
        )
        quats, root_loc = solve_basis(t_chain_parents, t_chain_rest, target_rot, mapped, t_root, hips_arm)
    del src_pose
    # 5. Bake, onto a new action: the rig's own animation stays in the file (a fake user keeps it).
    #    The mapped chains are keyed whole (the solution assumes unmapped parents, locations and
    #    scales at rest), so the action plays the same whatever pose the rig is left in.
    overridden = pose_overrides(target, [t for _, t in pairs])
    previous = target.animation_data.action if target.animation_data else None
    if previous is not None:
        previous.use_fake_user = True
    rest_quat, zero, one = np.array([[1.0, 0.0, 0.0, 0.0]]), np.zeros((1, 3)), np.ones((1, 3))
    channels = keyframes.new_channels(target, action_name or f"{target.name}_retarget")
    write_pose_keys(
        target,
        channels,
        frames,
        {n: rest_quat for n in t_chain} | {t_chain[j]: quats[:, j] for j in ti},
        {n: zero for n in t_chain} | {t_chain[t_root]: root_loc},
        {n: one for n in t_chain},
    )
    fk_switched = use_fk_controls(target, channels, frames, {t for _, t in pairs})
    # 6. Rigs whose bones hang from constraint-driven helpers (Rigify controls): correct with
    #    Blender's own evaluation, one pass per level of affected bones. Bones under an overridden
    #    bone are left out: compensating for a constraint the user is told to mute would bake it in.
    wanted_world_rot = rotation_part(t_world) @ target_rot[:, ti]
    free = {}
    for k, j in enumerate(ti):
        pose_bone = target.pose.bones[t_chain[j]]
        if not overridden.keys() & {pose_bone.name, *(p.name for p in pose_bone.parent_recursive)}:
            free[pose_bone.name] = wanted_world_rot[:, k]
    passes, unsettled = 0, {}
    if has_constrained_parents(target, list(free)):
        from .visibility import shown

        with shown([target]), posed(target):  # Blender evaluates the constraints of a shown, posed rig only
            passes, unsettled = refine_constrained(target, frames, free, t_chain[t_root], hips_world)
    kept = previous.name if previous is not None else None
    return {
        "frames": len(frames),
        "bones": len(pairs),
        "root_scale": float(scale),
        "root_scale_from": scale_from,
        "contact_frames": contact_frames,
        "constraint_passes": passes,
        "fk_switches": len(fk_switched),
        "kept_action": kept,
        "overridden": overridden,
        "unsettled": unsettled,
        "source_overridden": source_overridden,
        "warnings": _warnings(overridden, unsettled, passes, fk_switched, kept, source_overridden),
    }


def _names(bones) -> str:
    return ", ".join(f"'{b}'" for b in bones)


def _listed(overridden: dict) -> str:
    return "; ".join(f"'{bone}' ({', '.join(what)})" for bone, what in overridden.items())


def _warnings(
    overridden: dict,
    unsettled: dict,
    passes: int,
    fk_switched: list[str],
    kept: str | None,
    source_overridden: dict,
) -> list[str]:
    """One sentence per thing the user has to know to play the result: what happened, what to do."""
    out = []
    if source_overridden:
        out.append(
            f"Constraints or drivers on the source set the pose of {len(source_overridden)} of its bones: "
            f"{_listed(source_overridden)}; the retarget reads the source's keys only, so the target follows "
            "the keys, not those. Bake them into the source's keys (Pose > Animation > Bake Action, Visual "
            "Keying) or mute them, and retarget again."
        )
    if overridden:
        out.append(
            f"Keys are written for every mapped bone, but constraints or drivers set the pose of {len(overridden)} "
            f"of them instead: {_listed(overridden)}; mute those (or switch the IK to FK) to play the retargeted "
            "motion."
        )
    if unsettled:
        out.append(
            f"The parent bones of {_names(unsettled)}, set by constraints or drivers, did not settle in {passes} "
            f"correction passes, so these bones are still off by up to {max(unsettled.values()):.2f}°; check the "
            "constraints and drivers on those parents."
        )
    if fk_switched:
        then = f"play '{kept}' as before" if kept else "animate with IK again"
        out.append(
            f"Limbs were switched from IK to FK (IK_FK set to 1 on {_names(fk_switched)}, and keyed so in the new "
            f"action); set IK_FK back to {then}."
        )
    return out


# Left / right joints whose rest heads give a rig's heading, most reliable first
HEADING_JOINTS = ("hip", "shoulder", "collar", "knee", "ankle", "elbow", "wrist")


def _heading_turn(s_names, s_rest_world, t_names, t_rest_world, mapping) -> np.ndarray:
    """The turn about Z from the source's rest heading to the target's (:func:`heading_turn`), read
    from the left-minus-right heads of the joints of HEADING_JOINTS mapped on both sides."""
    joints = [j for j in HEADING_JOINTS if mapping.get(f"left_{j}") and mapping.get(f"right_{j}")]

    def lateral(names, rest_world, bone_of):
        head = lambda joint: rest_world[names.index(bone_of(joint)), :3, 3]
        return [head(f"left_{j}") - head(f"right_{j}") for j in joints]

    size = lambda rest_world: float(np.ptp(rest_world[:, :3, 3], axis=0).max())  # the rig's extent
    return heading_turn(
        lateral(s_names, s_rest_world, lambda joint: joint),
        lateral(t_names, t_rest_world, mapping.get),
        (size(s_rest_world), size(t_rest_world)),
    )


def _lock_target_feet(
    src_pose,
    s_names,
    t_parents,
    t_rest,
    t_names,
    target_rot,
    quats,
    root_loc,
    t_root,
    mapping,
    sides,
    to_target,
    fps,
    source_scale,
) -> tuple[np.ndarray, int]:
    """The source's foot contacts -> target_rot with the target's thighs and shins turned so that
    its planted ankles stay still; -> (target_rot, contact frames). source_scale: the source object's
    scale, by which its world positions are not metres (x100 in a centimetre scene); to_target: the
    source's world (turned to the target's heading) -> the target's armature space."""
    src_ankles = src_pose[:, [s_names.index(f"{side}_ankle") for side in sides]][..., :3, 3]
    contacts = detect_contacts(src_ankles / source_scale, fps)  # its speeds and heights are in metres
    legs = np.array([[t_names.index(mapping[f"{side}_{j}"]) for j in LEG_JOINTS] for side in sides])
    pose = pose_matrices(t_parents, t_rest, quats, root_loc, t_root)
    # The knee's bend axis where a leg is straight: the source knee's X axis (SMPL bones bend about X).
    knee_x = src_pose[:, [s_names.index(f"{side}_knee") for side in sides]][..., :3, 0]
    hinges = np.einsum("ab,tfb->tfa", to_target, knee_x)
    leg_rot = planted_leg_rotations(pose[:, legs][..., :3, 3], target_rot[:, legs[:, :2]], contacts, hinges)
    target_rot = target_rot.copy()
    target_rot[:, legs[:, :2]] = leg_rot
    return target_rot, int(contacts.sum())


FK_SWITCH = "IK_FK"  # Rigify limb property: 0 = IK, 1 = FK


RIGIFY_LIMB_SWITCH = re.compile(r"(?P<base>.+)_parent(?P<side>[._-].*)?")  # upper_arm_parent.L: the limb's switch


def use_fk_controls(rig, channels, frames: np.ndarray, mapped: set[str]) -> list[str]:
    """Switch the Rigify-style limbs whose FK controls are ``mapped`` to FK (the retarget keys those
    controls) and key the switch in the new action, so that it plays right after the user switches
    back to IK; -> bones switched now. A limb left unmapped keeps its switch (in FK, unkeyed, it would
    jump to whatever pose its FK controls hold). A switch not named as Rigify names them is switched."""
    changed = []
    for pose_bone in rig.pose.bones:
        limb = RIGIFY_LIMB_SWITCH.fullmatch(pose_bone.name)
        if limb is not None and f"{limb['base']}_fk{limb['side'] or ''}" not in mapped:
            continue
        if FK_SWITCH in pose_bone.keys():
            path = f'{pose_bone.path_from_id()}["{FK_SWITCH}"]'
            keyframes.write_fcurve(channels, path, 0, frames[:1], np.ones(1), group=pose_bone.name)
            if pose_bone[FK_SWITCH] != 1.0:
                pose_bone[FK_SWITCH] = 1.0
                changed.append(pose_bone.name)
    return changed


def has_constrained_parents(rig, bone_names) -> bool:
    """True when a constraint or a driver sets the pose of any ancestor of the bones (their parent
    chain is then not the plain rest hierarchy that the numpy solution assumes)."""
    return bool(pose_overrides(rig, {p.name for n in bone_names for p in rig.pose.bones[n].parent_recursive}))


def refine_constrained(
    rig,
    frames: np.ndarray,
    wanted_world_rot: dict[str, np.ndarray],
    root_bone: str,
    root_world: np.ndarray,
    tolerance_deg: float = 0.01,
    max_passes: int = 12,
) -> tuple[int, dict[str, float]]:
    """Re-solve keyed bones against their parent chains as Blender evaluates them (constraints included).

    Each pass steps through the frames once, reads every mapped bone's evaluated chain
    (pose matrix · basis⁻¹), and rewrites the keys of the shallowest bones still off by more than
    ``tolerance_deg``; their children are fixed in later passes. -> (passes that changed keys,
    {bone: largest error in degrees} of the bones still off after ``max_passes``, else empty)."""
    import bpy

    scene = bpy.context.scene
    channels = keyframes.channels_of(rig)
    names = list(wanted_world_rot)
    depth = {n: sum(1 for p in rig.pose.bones[n].parent_recursive if p.name in wanted_world_rot) for n in names}
    frame_before = scene.frame_current
    passes = 0
    with progress_counter(len(frames) * (max_passes + 1)) as step:  # seconds a pass on a long take
        while True:  # the last round only measures what the last pass left
            chains = {n: np.empty((len(frames), 4, 4)) for n in names}
            for i, f in enumerate(frames):
                step(passes * len(frames) + i)
                scene.frame_set(int(f))
                world = np.array(rig.matrix_world)
                for n in names:
                    pose_bone = rig.pose.bones[n]
                    chains[n][i] = world @ np.array(pose_bone.matrix) @ np.linalg.inv(np.array(pose_bone.matrix_basis))
            basis_rot = {n: np.swapaxes(rotation_part(chains[n]), -1, -2) @ wanted_world_rot[n] for n in names}
            error = {n: _max_angle_deg(_keyed_rotations(channels, rig.pose.bones[n]), basis_rot[n]) for n in names}
            off = [n for n in names if error[n] > tolerance_deg]
            if not off or passes == max_passes:
                break
            level = min(depth[n] for n in off)
            for n in (n for n in off if depth[n] == level):
                pose_bone = rig.pose.bones[n]
                values = rotation_keys(make_continuous(rotmat_to_quat(basis_rot[n])), pose_bone.rotation_mode)
                path = pose_bone.path_from_id(rotation_channel(pose_bone.rotation_mode)[0])
                for c in range(values.shape[-1]):
                    keyframes.replace_fcurve_values(channels, path, c, values[:, c])
                if n == root_bone:
                    head = np.concatenate([root_world, np.ones((len(frames), 1))], -1)
                    loc = np.einsum("tab,tb->ta", np.linalg.inv(chains[n]), head)[:, :3]
                    for c in range(3):
                        keyframes.replace_fcurve_values(channels, pose_bone.path_from_id("location"), c, loc[:, c])
            passes += 1
    scene.frame_set(frame_before)
    return passes, {n: error[n] for n in off}


def _keyed_rotations(channels, pose_bone) -> np.ndarray:
    """-> rotations (T, 3, 3) of a bone's rotation keys, in its rotation mode."""
    prop, size = rotation_channel(pose_bone.rotation_mode)
    path = pose_bone.path_from_id(prop)
    values = np.stack([keyframes.read_fcurve(channels, path, c)[1] for c in range(size)], -1)
    return rotation_matrices(values, pose_bone.rotation_mode)


def _max_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    cos = (np.trace(np.swapaxes(Ra, -1, -2) @ Rb, axis1=-2, axis2=-1) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max())


def write_pose_keys(
    armature_obj,
    channels,
    frames: np.ndarray,
    rotations: dict[str, np.ndarray],
    locations: dict[str, np.ndarray],
    scales: dict[str, np.ndarray] | None = None,
) -> None:
    """Keys on ``channels``: sign-continuous quaternions (T, 4) per bone in ``rotations``, written in
    each bone's own rotation mode (the mode stays, so the rig's other actions still play), locations
    and scales (T, 3). An array of one row is one key at the first frame: a constant curve."""
    for bone, quats in rotations.items():
        pose_bone = armature_obj.pose.bones[bone]
        values = rotation_keys(quats, pose_bone.rotation_mode)
        path = pose_bone.path_from_id(rotation_channel(pose_bone.rotation_mode)[0])
        for c in range(values.shape[-1]):
            keyframes.write_fcurve(channels, path, c, frames[: len(values)], values[:, c], group=bone)
    for prop, per_bone in (("location", locations), ("scale", scales or {})):
        for bone, values in per_bone.items():
            path = armature_obj.pose.bones[bone].path_from_id(prop)
            for c in range(3):
                keyframes.write_fcurve(channels, path, c, frames[: len(values)], values[:, c], group=bone)
