"""Retarget an armature's motion onto another humanoid armature and bake it into the target's keys.

Read both rigs (rest matrices, hierarchy, object transforms) and the source's F-curves, evaluate the
source in numpy (no frame stepping), carry every mapped bone's world rotation over with the rest-pose
and roll correction of :mod:`core.retarget_math`, scale the root motion by leg length, lock the
target's feet where the source's feet are planted (:mod:`core.cleanup`), and write one new action on
the target in bulk through the one F-curve helper, :mod:`keyframes`.
"""

from __future__ import annotations

import numpy as np

from . import keyframes
from .core.cleanup import detect_contacts, planted_leg_rotations
from .core.errors import VibeError
from .core.retarget_map import ROOT_JOINT, validate_map
from .core.retarget_math import (
    compose_basis,
    euler_to_rotmat,
    hip_height,
    leg_length,
    leg_scale,
    pose_from_basis,
    quats_to_rotmat,
    rest_offsets,
    retarget_rotations,
    rotation_part,
    scale_root_motion,
    solve_basis,
)
from .core.rotations import make_continuous, quat_to_rotmat, rotmat_to_quat

# Every frame of the range is baked (about 20 KB of memory a frame and mapped rig): a capture of an hour
# at 30 frames/s is 108,000 frames; a gap of millions of frames in a damaged file is refused.
MAX_RETARGET_FRAMES = 200_000


def armature_arrays(armature_obj) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """-> bone names (N,), parents (N,) (-1 for roots), rest (N, 4, 4) armature space, world (4, 4)."""
    if armature_obj is None or armature_obj.type != "ARMATURE":
        raise VibeError("Pick an armature object (the source character and the target rig must both be armatures).")
    bones = armature_obj.data.bones
    names = [b.name for b in bones]
    index = {n: i for i, n in enumerate(names)}
    parents = np.array([index[b.parent.name] if b.parent else -1 for b in bones], dtype=np.int64)
    rest = np.array([np.array(b.matrix_local) for b in bones], dtype=np.float64).reshape(-1, 4, 4)
    world = np.array(armature_obj.matrix_world, dtype=np.float64)
    scale = np.linalg.norm(world[:3, :3], axis=0)
    if np.ptp(scale) > 1e-4 * scale.max():
        raise VibeError(
            f"'{armature_obj.name}' has a non-uniform object scale {tuple(np.round(scale, 4))}; "
            "apply the scale (Ctrl+A > Scale) first."
        )
    return names, parents, rest, world


def action_frame_range(armature_obj) -> tuple[int, int]:
    anim = armature_obj.animation_data
    if anim is None or anim.action is None:
        raise VibeError(f"'{armature_obj.name}' has no animation to retarget; import or key a motion first.")
    start, end = anim.action.frame_range
    return int(round(start)), int(round(end))


def _sample(channels, pose_bone, prop: str, size: int, frames: np.ndarray) -> np.ndarray:
    """(T, size) values of one pose-bone property: its F-curves where keyed, else the current value."""
    path = pose_bone.path_from_id(prop)
    current = np.array(getattr(pose_bone, prop), dtype=np.float64)
    out = np.tile(current, (len(frames), 1))
    if channels is None:
        return out
    for i in range(size):
        fcurve = channels.fcurves.find(path, index=i)
        if fcurve is not None:
            out[:, i] = [fcurve.evaluate(f) for f in frames]
    return out


def sample_basis(armature_obj, frames: np.ndarray) -> np.ndarray:
    """-> pose-bone basis matrices (T, N, 4, 4) from the armature's action at ``frames``."""
    channels = keyframes.channels_of(armature_obj)
    out = []
    for pose_bone in armature_obj.pose.bones:
        loc = _sample(channels, pose_bone, "location", 3, frames)
        scale = _sample(channels, pose_bone, "scale", 3, frames)
        mode = pose_bone.rotation_mode
        if mode == "QUATERNION":
            rot = quats_to_rotmat(_sample(channels, pose_bone, "rotation_quaternion", 4, frames))
        elif mode == "AXIS_ANGLE":
            raise VibeError(
                f"Bone '{pose_bone.name}' uses axis-angle rotation; set it to Quaternion or an Euler "
                "mode before retargeting."
            )
        else:
            rot = euler_to_rotmat(_sample(channels, pose_bone, "rotation_euler", 3, frames), mode)
        out.append(compose_basis(loc, rot, scale))
    return np.stack(out, axis=1)


def world_pose(armature_obj, frames: np.ndarray) -> np.ndarray:
    """-> world matrices (T, N, 4, 4) of every bone at ``frames`` (numpy forward kinematics)."""
    _, parents, rest, world = armature_arrays(armature_obj)
    return world @ pose_from_basis(parents, rest, sample_basis(armature_obj, frames))


def _floor_origin(rest_world: np.ndarray, tails_world: np.ndarray, root: int) -> tuple[np.ndarray, float]:
    """Point on the rig's floor under its rest hips, and the hips' height over that floor."""
    floor_z = float(min(rest_world[:, 2, 3].min(), tails_world[:, 2].min()))
    head = rest_world[root, :3, 3]
    return np.array([head[0], head[1], floor_z]), hip_height(head, floor_z)


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
    fk_switches, kept_action}. The target gets a new action (its previous one, kept_action, is kept in
    the file with a fake user); unmapped target bones are set to their rest pose."""
    s_names, s_parents, s_rest, s_world = armature_arrays(source)
    t_names, t_parents, t_rest, t_world = armature_arrays(target)
    if source == target:
        raise VibeError("Source and target are the same armature; pick the rig to animate as the target.")
    mapping = {s: t for s, t in mapping.items() if t}
    validate_map(mapping, t_names)
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

    # 1. Source motion in the world, by forward kinematics of its keys.
    src_pose = s_world @ pose_from_basis(s_parents, s_rest, sample_basis(source, frames))
    pairs = list(mapping.items())
    si = np.array([s_names.index(s) for s, _ in pairs])
    ti = np.array([t_names.index(t) for _, t in pairs])
    # 2. Rotations: rest-pose and roll correction per pair, then into the target's armature space.
    offsets = rest_offsets(rotation_part(s_world @ s_rest[si]), rotation_part(t_world @ t_rest[ti]))
    target_world_rot = retarget_rotations(rotation_part(src_pose[:, si]), offsets)
    to_target = np.swapaxes(rotation_part(t_world), -1, -2)  # world -> target armature
    target_rot = np.tile(np.eye(3), (len(frames), len(t_names), 1, 1))
    target_rot[:, ti] = to_target @ target_world_rot
    mapped = np.zeros(len(t_names), bool)
    mapped[ti] = True
    # 3. Root motion about the rest hips, scaled by the ratio of leg lengths (hip height without legs).
    s_root, t_root = s_names.index(ROOT_JOINT), t_names.index(mapping[ROOT_JOINT])
    s_rest_world, t_rest_world = s_world @ s_rest, t_world @ t_rest
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
        scale = _floor_origin(t_rest_world, t_tails, t_root)[1] / _floor_origin(s_rest_world, s_tails, s_root)[1]
        scale_from = "hip height"
    hips_world = scale_root_motion(
        src_pose[:, s_root, :3, 3], s_rest_world[s_root, :3, 3], t_rest_world[t_root, :3, 3], scale
    )
    hips_arm = (np.concatenate([hips_world, np.ones((len(frames), 1))], -1) @ np.linalg.inv(t_world).T)[:, :3]
    quats, root_loc = solve_basis(t_parents, t_rest, target_rot, mapped, t_root, hips_arm)
    # 4. Feet: where the source's feet are planted, hold the target's ankles still (leg IK).
    contact_frames = 0
    if lock_feet and sides:
        target_rot, contact_frames = _lock_target_feet(
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
            fps or scene_fps(),
        )
        quats, root_loc = solve_basis(t_parents, t_rest, target_rot, mapped, t_root, hips_arm)
    # 5. Bake, onto a new action: the rig's own animation stays in the file (a fake user keeps it).
    previous = target.animation_data.action if target.animation_data else None
    if previous is not None:
        previous.use_fake_user = True
    fk_switches = use_fk_controls(target)
    bake_pose_keys(
        target,
        frames,
        {t_names[j]: quats[:, j] for j in ti},
        {t_names[t_root]: root_loc},
        action_name or f"{target.name}_retarget",
    )
    # 6. Rigs whose bones hang from constraint-driven helpers (Rigify controls): correct with
    #    Blender's own evaluation, one pass per level of affected bones.
    wanted_world_rot = rotation_part(t_world) @ target_rot[:, ti]
    passes = (
        refine_constrained(
            target, frames, {t_names[j]: wanted_world_rot[:, k] for k, j in enumerate(ti)}, t_names[t_root], hips_world
        )
        if has_constrained_parents(target, [t for _, t in pairs])
        else 0
    )
    return {
        "frames": len(frames),
        "bones": len(pairs),
        "root_scale": float(scale),
        "root_scale_from": scale_from,
        "contact_frames": contact_frames,
        "constraint_passes": passes,
        "fk_switches": fk_switches,
        "kept_action": previous.name if previous is not None else None,
    }


def scene_fps() -> float:
    import bpy

    render = bpy.context.scene.render
    return render.fps / render.fps_base


def _lock_target_feet(
    src_pose, s_names, t_parents, t_rest, t_names, target_rot, quats, root_loc, t_root, mapping, sides, to_target, fps
) -> tuple[np.ndarray, int]:
    """The source's foot contacts -> target_rot with the target's thighs and shins turned so that
    its planted ankles stay still; -> (target_rot, contact frames)."""
    src_ankles = src_pose[:, [s_names.index(f"{side}_ankle") for side in sides]][..., :3, 3]
    contacts = detect_contacts(src_ankles, fps)
    legs = np.array([[t_names.index(mapping[f"{side}_{j}"]) for j in LEG_JOINTS] for side in sides])
    location = np.zeros(quats.shape[:2] + (3,))
    location[:, t_root] = root_loc
    pose = pose_from_basis(t_parents, t_rest, compose_basis(location, quat_to_rotmat(quats)))
    # The knee's bend axis where a leg is straight: the source knee's X axis (SMPL bones bend about X).
    knee_x = src_pose[:, [s_names.index(f"{side}_knee") for side in sides]][..., :3, 0]
    hinges = np.einsum("ab,tfb->tfa", to_target, knee_x)
    leg_rot = planted_leg_rotations(pose[:, legs][..., :3, 3], target_rot[:, legs[:, :2]], contacts, hinges)
    target_rot = target_rot.copy()
    target_rot[:, legs[:, :2]] = leg_rot
    return target_rot, int(contacts.sum())


FK_SWITCH = "IK_FK"  # Rigify limb property: 0 = IK, 1 = FK


def use_fk_controls(rig) -> int:
    """Switch Rigify-style limbs to FK (the retarget keys the FK controls); -> switches changed."""
    changed = 0
    for pose_bone in rig.pose.bones:
        if FK_SWITCH in pose_bone.keys() and pose_bone[FK_SWITCH] != 1.0:
            pose_bone[FK_SWITCH] = 1.0
            changed += 1
    return changed


def has_constrained_parents(rig, bone_names) -> bool:
    """True when a constraint sits on any ancestor of the mapped bones (their parent chain is then
    not the plain rest hierarchy that the numpy solution assumes)."""
    for name in bone_names:
        bone = rig.pose.bones[name].parent
        while bone is not None:
            if any(c.enabled and c.influence > 0 for c in bone.constraints):
                return True
            bone = bone.parent
    return False


def refine_constrained(
    rig,
    frames: np.ndarray,
    wanted_world_rot: dict[str, np.ndarray],
    root_bone: str,
    root_world: np.ndarray,
    tolerance_deg: float = 0.01,
    max_passes: int = 12,
) -> int:
    """Re-solve keyed bones against their parent chains as Blender evaluates them (constraints included).

    Each pass steps through the frames once, reads every mapped bone's evaluated chain
    (pose matrix · basis⁻¹), and rewrites the keys of the shallowest bones still off by more than
    ``tolerance_deg``; their children are fixed in later passes. -> passes that changed keys."""
    import bpy

    scene = bpy.context.scene
    channels = keyframes.channels_of(rig)
    names = list(wanted_world_rot)
    depth = {n: sum(1 for p in rig.pose.bones[n].parent_recursive if p.name in wanted_world_rot) for n in names}
    frame_before = scene.frame_current
    passes = 0
    for _ in range(max_passes):
        chains = {n: np.empty((len(frames), 4, 4)) for n in names}
        for i, f in enumerate(frames):
            scene.frame_set(int(f))
            world = np.array(rig.matrix_world)
            for n in names:
                pose_bone = rig.pose.bones[n]
                chains[n][i] = world @ np.array(pose_bone.matrix) @ np.linalg.inv(np.array(pose_bone.matrix_basis))
        basis_rot = {n: np.swapaxes(rotation_part(chains[n]), -1, -2) @ wanted_world_rot[n] for n in names}
        current = {
            n: quats_to_rotmat(
                np.stack([keyframes.read_fcurve(channels, keyframes.rotation_path(n), c)[1] for c in range(4)], -1)
            )
            for n in names
        }
        off = [n for n in names if _max_angle_deg(current[n], basis_rot[n]) > tolerance_deg]
        if not off:
            break
        level = min(depth[n] for n in off)
        for n in (n for n in off if depth[n] == level):
            quats = make_continuous(rotmat_to_quat(basis_rot[n]))
            for c in range(4):
                keyframes.replace_fcurve_values(channels, keyframes.rotation_path(n), c, quats[:, c])
            if n == root_bone:
                head = np.concatenate([root_world, np.ones((len(frames), 1))], -1)
                loc = np.einsum("tab,tb->ta", np.linalg.inv(chains[n]), head)[:, :3]
                for c in range(3):
                    keyframes.replace_fcurve_values(channels, keyframes.location_path(n), c, loc[:, c])
        passes += 1
    scene.frame_set(frame_before)
    return passes


def _max_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    cos = (np.trace(np.swapaxes(Ra, -1, -2) @ Rb, axis1=-2, axis2=-1) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max())


def bake_pose_keys(
    armature_obj,
    frames: np.ndarray,
    rotations: dict[str, np.ndarray],
    locations: dict[str, np.ndarray],
    action_name: str,
) -> None:
    """A new action on ``armature_obj`` with quaternion keys (T, 4) per bone in ``rotations`` and
    location keys (T, 3) per bone in ``locations``; every other bone is put in its rest pose."""
    for pose_bone in armature_obj.pose.bones:
        pose_bone.location = (0.0, 0.0, 0.0)
        pose_bone.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
        pose_bone.rotation_euler = (0.0, 0.0, 0.0)
        pose_bone.scale = (1.0, 1.0, 1.0)
    channels = keyframes.new_channels(armature_obj, action_name)
    for bone, quats in rotations.items():
        pose_bone = armature_obj.pose.bones[bone]
        pose_bone.rotation_mode = "QUATERNION"
        for c in range(4):
            keyframes.write_fcurve(channels, keyframes.rotation_path(bone), c, frames, quats[:, c], group=bone)
    for bone, loc in locations.items():
        pose_bone = armature_obj.pose.bones[bone]
        for c in range(3):
            keyframes.write_fcurve(channels, keyframes.location_path(bone), c, frames, loc[:, c], group=bone)
