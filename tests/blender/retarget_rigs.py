"""Test rigs for the retarget / clean-up / export tests: an SMPL-named source character walking
with planted feet, and generated target rigs with other names, rest poses, rolls and proportions.
(A helper module, not a test file: loaded by path from the tests beside it.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from vibe_blender import keyframes
from vibe_blender.core.smpl_model import JOINT_NAMES, PARENTS

_spec = importlib.util.spec_from_file_location("core_walk", Path(__file__).parents[1] / "core" / "test_cleanup.py")
walk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(walk)  # J_REST, clean_walk(), smpl_rest(), LEGS, IDX, FPS

MAIN_CHILD = {0: 3, 9: 12}


def reset_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)


def child_of(j, parents=PARENTS):
    kids = np.flatnonzero(parents == j)
    return MAIN_CHILD.get(j, kids[0] if len(kids) else None)


IDENTITY = np.eye(4)  # read-only default transform (never modified in place)


def build_armature(name, bone_names, parents, heads, tails, rolls=None, matrix_world=IDENTITY):
    """heads/tails (N, 3) world -> armature object whose object transform is matrix_world."""
    inv = np.linalg.inv(matrix_world)
    to_data = lambda p: (np.c_[p, np.ones(len(p))] @ inv.T)[:, :3]
    heads_d, tails_d = to_data(np.asarray(heads)), to_data(np.asarray(tails))
    arm = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, arm)
    bpy.context.scene.collection.objects.link(obj)
    obj.matrix_world = Matrix(np.asarray(matrix_world).tolist())
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    ebs = []
    for j, bone in enumerate(bone_names):
        eb = arm.edit_bones.new(bone)
        eb.head, eb.tail = heads_d[j].tolist(), tails_d[j].tolist()
        eb.roll = 0.0 if rolls is None else float(rolls[j])
        ebs.append(eb)
    for j, p in enumerate(parents):
        if p >= 0:
            ebs[j].parent = ebs[p]
    bpy.ops.object.mode_set(mode="OBJECT")
    for pb in obj.pose.bones:
        pb.rotation_mode = "QUATERNION"
    return obj


def smpl_heads_tails(J):
    tails = J.copy()
    for j in range(24):
        c = child_of(j)
        tails[j] = J[c] if c is not None else J[j] + 0.5 * (J[j] - J[PARENTS[j]])
    return J, tails


def smpl_source(T=60):
    """The SMPL-named character walking with planted feet; -> (object, frames, stance (T, 2))."""
    heads, tails = smpl_heads_tails(walk.J_REST)
    obj = build_armature("SMPL", JOINT_NAMES, PARENTS, heads, tails)
    rest = np.array([np.array(obj.data.bones[n].matrix_local) for n in JOINT_NAMES])
    _, quats, root_loc, stance = walk.clean_walk(T, rest)  # made for Blender's own bone rolls
    frames = np.arange(1, T + 1, dtype=np.float64)
    channels = keyframes.new_channels(obj, "SMPL_motion")
    for j, bone in enumerate(JOINT_NAMES):
        for c in range(4):
            keyframes.write_fcurve(channels, f'pose.bones["{bone}"].rotation_quaternion', c, frames, quats[:, j, c])
    for c in range(3):
        keyframes.write_fcurve(channels, 'pose.bones["pelvis"].location', c, frames, root_loc[:, c])
    return obj, frames, stance


def _ry(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def target_rig(
    name,
    names: dict,
    *,
    leg_scale=1.0,
    arm_scale=1.0,
    a_pose_deg=0.0,
    roll_seed=None,
    matrix_world=IDENTITY,
    root_bone=None,
    extra_spine=(),
    foot_scale=None,
):
    """A humanoid built from the SMPL T-pose with names[joint] bone names (joints without a name are
    left out), legs/arms scaled, arms lowered into an A-pose, random rolls, an optional root bone
    above the hips and unmapped bones inserted after the given spine joints. Feet rest on z = 0.
    foot_scale: the ankle-to-toe offset's own scale (default: the leg's), another foot geometry."""
    J = walk.J_REST
    joints = [j for j in range(24) if JOINT_NAMES[j] in names]
    pos = {0: J[0].copy()}
    legs = {"knee", "ankle", "foot"}
    arms = {"elbow", "wrist", "hand"}
    for j in range(1, 24):
        p = PARENTS[j]
        part = JOINT_NAMES[j].split("_")[-1]
        offset = J[j] - J[p]
        if part in legs:
            offset = offset * (foot_scale if part == "foot" and foot_scale is not None else leg_scale)
        if part in arms:
            offset = offset * arm_scale
            offset = _ry(a_pose_deg if JOINT_NAMES[j].startswith("left") else -a_pose_deg) @ offset
        pos[j] = pos[p] + offset
    bones, parents, heads, tails = [], [], [], []
    index = {}
    if root_bone:
        bones.append(root_bone), parents.append(-1), heads.append(np.zeros(3)), tails.append(np.array([0, 0.2, 0]))
    for j in joints:
        c = child_of(j)
        head = pos[j]
        tail = pos[c] if c is not None and c in joints else head + 0.5 * (head - pos[PARENTS[j]])
        p = PARENTS[j]
        parent = index[p] if p >= 0 else (0 if root_bone else -1)
        if JOINT_NAMES[j] in extra_spine:  # split the bone: an unmapped half after it
            mid = 0.5 * (head + tail)
            index[j] = len(bones)
            bones.append(names[JOINT_NAMES[j]]), parents.append(parent), heads.append(head), tails.append(mid)
            bones.append(names[JOINT_NAMES[j]] + "_extra"), parents.append(len(bones) - 2)
            heads.append(mid), tails.append(tail)
            index[("extra", j)] = len(bones) - 1
            continue
        index[j] = len(bones)
        bones.append(names[JOINT_NAMES[j]]), parents.append(parent), heads.append(head), tails.append(tail)
    # children of split bones hang from the unmapped half
    for j in joints:
        p = PARENTS[j]
        if p >= 0 and ("extra", p) in index:
            parents[index[j]] = index[("extra", p)]
    heads, tails = np.array(heads), np.array(tails)
    body = slice(1 if root_bone else 0, None)
    floor = min(heads[body, 2].min(), tails[body, 2].min())
    heads[:, 2] -= floor
    tails[:, 2] -= floor
    if root_bone:
        heads[0], tails[0] = np.zeros(3), np.array([0, 0.2, 0])
    rolls = None if roll_seed is None else np.random.default_rng(roll_seed).uniform(-np.pi, np.pi, len(bones))
    return build_armature(name, bones, np.array(parents), heads, tails, rolls, matrix_world)


def world_bone_axes(obj, bone_names, frames):
    """-> Y axes (T, B, 3) and heads (T, B, 3) of pose bones in the world, evaluated by Blender."""
    axes, heads = [], []
    for f in frames:
        bpy.context.scene.frame_set(int(f))
        mw = np.array(obj.matrix_world)
        m = np.array([mw @ np.array(obj.pose.bones[b].matrix) for b in bone_names])
        axes.append(m[:, :3, 1] / np.linalg.norm(m[:, :3, 1], axis=-1, keepdims=True))
        heads.append(m[:, :3, 3])
    return np.array(axes), np.array(heads)


def angle_deg(a, b):
    """Angle between unit vectors (..., 3), degrees."""
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, -1)))


def planted_slide_mm(obj, ankle_bones, frames, stance):
    """Mean horizontal travel of the ankles per frame where the walk's foot is planted (frames t-1
    and t both in the stance), millimetres, as Blender evaluates the rig."""
    _, heads = world_bone_axes(obj, ankle_bones, frames)
    return np.linalg.norm(np.diff(heads[..., :2], axis=0), axis=-1)[stance[1:] & stance[:-1]].mean() * 1000
