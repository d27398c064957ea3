"""Retarget the SMPL walk onto generated rigs with other names, rest poses, rolls and proportions:
bone directions match the source within 0.01° per frame, the root scale from the legs' chain
lengths keeps planted feet still, and the foot lock holds them on another foot geometry."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy")

from vibe_blender.core.errors import VibeError  # noqa: E402
from vibe_blender.core.retarget_map import PRESETS, auto_map, preset_map  # noqa: E402
from vibe_blender.retarget import MAX_RETARGET_FRAMES, retarget  # noqa: E402

_spec = importlib.util.spec_from_file_location("retarget_rigs", Path(__file__).with_name("retarget_rigs.py"))
rigs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rigs)

FBX_LIKE = np.diag([0.01, 0.01, 0.01, 1.0]) @ np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])
FBX_LIKE[:3, 3] = [1.5, 0.0, 0.0]
CUSTOM = {
    "pelvis": "Pelvis",
    "spine1": "Spine_A",
    "spine2": "Spine_B",
    "spine3": "Chest",
    "neck": "Neck",
    "head": "Head",
}
for _s, _side in (("L", "left"), ("R", "right")):
    CUSTOM.update(
        {
            f"{_side}_hip": f"{_s}_Thigh",
            f"{_side}_knee": f"{_s}_Calf",
            f"{_side}_ankle": f"{_s}_Foot",
            f"{_side}_foot": f"{_s}_Toe",
            f"{_side}_collar": f"{_s}_Clavicle",
            f"{_side}_shoulder": f"{_s}_UpperArm",
            f"{_side}_elbow": f"{_s}_Forearm",
            f"{_side}_wrist": f"{_s}_Hand",
        }
    )

CASES = {
    # name: (bone names, rig options)
    "mixamo_apose_fbx_scaled": (
        PRESETS["MIXAMO"],
        dict(leg_scale=1.2, arm_scale=0.9, a_pose_deg=45, roll_seed=1, matrix_world=FBX_LIKE),
    ),
    "ue5_root_extra_spine": (
        PRESETS["UE5_MANNEQUIN"],
        dict(
            leg_scale=0.85,
            arm_scale=1.1,
            a_pose_deg=30,
            roll_seed=2,
            root_bone="root",
            extra_spine=("spine1", "spine2"),
        ),
    ),
    "rigify_deform": (PRESETS["RIGIFY_DEFORM"], dict(leg_scale=1.05, roll_seed=3)),
    "custom_names_auto_map": (CUSTOM, dict(leg_scale=1.1, arm_scale=1.2, a_pose_deg=-10, roll_seed=4)),
    "jnt_suffix_auto_map": ({j: f"{j}_jnt" for j in CUSTOM}, dict(leg_scale=0.9, a_pose_deg=35, roll_seed=6)),
}
RESULTS = {}


@pytest.mark.parametrize("case", list(CASES))
def test_retarget_matches_bone_directions_and_keeps_feet_planted(case):
    names, options = CASES[case]
    rigs.reset_scene()
    source, frames, stance = rigs.smpl_source(T=60)
    target = rigs.target_rig("Target", names, **options)
    bone_names = [b.name for b in target.data.bones]
    parents = {b.name: (b.parent.name if b.parent else None) for b in target.data.bones}
    mapping = auto_map(bone_names, parents)
    assert all(mapping[j] == names[j] for j in names if not j.endswith("_hand")), mapping
    report = retarget(source, target, mapping, lock_feet=False)
    assert report["frames"] == 60 and report["bones"] == len(mapping) and report["root_scale_from"] == "legs"

    src_axes, src_heads = rigs.world_bone_axes(source, list(mapping), frames)
    tgt_axes, tgt_heads = rigs.world_bone_axes(target, list(mapping.values()), frames)
    err = rigs.angle_deg(src_axes, tgt_axes)
    # feet: the ankle of a planted foot stays put and sits at its rest height
    ankles = [list(mapping).index(j) for j in ("left_ankle", "right_ankle")]
    rest_z = np.array(
        [
            (np.array(target.matrix_world) @ np.array([*target.data.bones[mapping[j]].head_local, 1]))[2]
            for j in ("left_ankle", "right_ankle")
        ]
    )
    feet = tgt_heads[:, ankles]
    slide = np.linalg.norm(np.diff(feet[..., :2], axis=0), axis=-1)[stance[1:] & stance[:-1]]
    height = np.abs(feet[..., 2] - rest_z)[stance]
    RESULTS[case] = (err.max(), slide.mean() * 1000, height.max() * 1000)
    print(
        f"{case}: max angle {err.max():.2e} deg, planted-foot slide {slide.mean() * 1000:.2f} mm/frame, "
        f"height error max {height.max() * 1000:.1f} mm, root scale {report['root_scale']:.3f}"
    )
    assert err.max() < 0.01
    assert slide.mean() < 2e-4 and height.max() < 1e-3  # metres: under 0.2 mm/frame, 1 mm


@pytest.mark.parametrize("leg_scale", [0.8, 1.0, 1.15, 1.3])
def test_root_scale_from_leg_chains_keeps_planted_feet_still(leg_scale):
    """Before: the root followed the ratio of hip heights over each rig's lowest bone tip (1.136 for
    legs x1.15; 0.819 for x0.8), and the target's planted ankles slid 0.29-0.58 mm/frame."""
    rigs.reset_scene()
    source, frames, stance = rigs.smpl_source(T=60)
    target = rigs.target_rig("Target", PRESETS["MIXAMO"], leg_scale=leg_scale, a_pose_deg=40, roll_seed=7)
    mapping = auto_map([b.name for b in target.data.bones])
    report = retarget(source, target, mapping, lock_feet=False)
    assert report["root_scale"] == pytest.approx(leg_scale, abs=1e-4)
    src = rigs.planted_slide_mm(source, ["left_ankle", "right_ankle"], frames, stance)
    tgt = rigs.planted_slide_mm(target, [mapping["left_ankle"], mapping["right_ankle"]], frames, stance)
    print(f"legs x{leg_scale}: root scale {report['root_scale']:.4f}, slide source {src:.3f} target {tgt:.3f} mm/frame")
    assert tgt <= src + 0.2


def test_foot_lock_holds_the_targets_feet_on_another_foot_geometry():
    """A target whose feet are shorter than its legs' scale: the root scale alone leaves the planted
    ankles sliding; the foot lock (default on) holds them, and touches no bone above the legs."""
    rigs.reset_scene()
    source, frames, stance = rigs.smpl_source(T=60)
    target = rigs.target_rig(
        "Target", PRESETS["UE5_MANNEQUIN"], leg_scale=1.15, foot_scale=0.7, a_pose_deg=30, roll_seed=8
    )
    mapping = auto_map([b.name for b in target.data.bones])
    ankles = [mapping["left_ankle"], mapping["right_ankle"]]
    src = rigs.planted_slide_mm(source, ["left_ankle", "right_ankle"], frames, stance)
    retarget(source, target, mapping, lock_feet=False)
    unlocked = rigs.planted_slide_mm(target, ankles, frames, stance)
    upper = [j for j in mapping if j.split("_")[-1] not in ("hip", "knee")]
    axes_unlocked, _ = rigs.world_bone_axes(target, [mapping[j] for j in upper], frames)
    report = retarget(source, target, mapping, fps=rigs.walk.FPS)
    locked = rigs.planted_slide_mm(target, ankles, frames, stance)
    axes_locked, _ = rigs.world_bone_axes(target, [mapping[j] for j in upper], frames)
    print(
        f"foot x0.7: slide source {src:.3f}, target unlocked {unlocked:.3f}, locked {locked:.3f} mm/frame, "
        f"{report['contact_frames']} contact frames"
    )
    assert unlocked > src + 0.3  # the case the lock is for
    assert locked <= src + 0.2 and report["contact_frames"] >= stance.sum()
    assert rigs.angle_deg(axes_unlocked, axes_locked).max() < 0.01  # ankles, toes, spine, arms: unchanged


def test_rig_without_mapped_legs_scales_the_root_by_hip_height_and_skips_the_foot_lock():
    rigs.reset_scene()
    source, _, _ = rigs.smpl_source(T=20)
    target = rigs.target_rig("Target", PRESETS["UE5_MANNEQUIN"], leg_scale=1.2)
    upper = {j: b for j, b in PRESETS["UE5_MANNEQUIN"].items() if not j.endswith(("_knee", "_ankle", "_foot"))}
    report = retarget(source, target, upper)
    assert report["root_scale_from"] == "hip height" and report["contact_frames"] == 0
    assert 1.0 < report["root_scale"] < 1.2  # the hips' height grows less than the legs
    assert retarget(source, target, upper, scale_root=False)["root_scale"] == 1.0


def test_the_rigs_own_animation_is_kept_with_a_fake_user():
    rigs.reset_scene()
    source, _, _ = rigs.smpl_source(T=5)
    target = rigs.target_rig("Target", PRESETS["UE5_MANNEQUIN"])
    own = bpy.data.actions.new("HandKeyed")
    target.animation_data_create().action = own
    report = retarget(source, target, PRESETS["UE5_MANNEQUIN"])
    assert report["kept_action"] == "HandKeyed" and target.animation_data.action != own
    assert own.use_fake_user and own.users == 1  # saved with the file, not dropped as an orphan
    first = target.animation_data.action
    assert retarget(source, target, PRESETS["UE5_MANNEQUIN"])["kept_action"] == first.name and first.use_fake_user


def test_retarget_refuses_bad_input():
    rigs.reset_scene()
    source, _, _ = rigs.smpl_source(T=5)
    target = rigs.target_rig("Target", PRESETS["UE5_MANNEQUIN"])
    with pytest.raises(VibeError, match="no bone named 'nope'"):
        retarget(source, target, {"pelvis": "nope"})
    with pytest.raises(VibeError, match="no bone for 'pelvis'"):
        retarget(source, target, {"head": "head"})
    with pytest.raises(VibeError, match="same armature"):
        retarget(source, source, preset_map("SMPL"))
    with pytest.raises(VibeError, match="frame range"):
        retarget(source, target, PRESETS["UE5_MANNEQUIN"], frame_start=10, frame_end=2)
    with pytest.raises(VibeError, match=f"spans {MAX_RETARGET_FRAMES + 1:,} frames.*Retarget a part"):
        retarget(source, target, PRESETS["UE5_MANNEQUIN"], frame_start=0, frame_end=MAX_RETARGET_FRAMES)
    with pytest.raises(VibeError, match="no animation"):
        retarget(target, source, {"pelvis": "pelvis"})
    mesh = bpy.data.objects.new("Mesh", bpy.data.meshes.new("Mesh"))
    with pytest.raises(VibeError, match="armature"):
        retarget(source, mesh, PRESETS["UE5_MANNEQUIN"])


def test_retarget_to_blender_rigify_metarig_and_generated_control_rig():
    """Blender's own human meta-rig, and the rig Rigify generates from it (FK controls hanging from
    constraint-driven helper bones): the controls and the deform bones they drive follow the source."""
    import addon_utils

    rigs.reset_scene()
    addon_utils.enable("rigify", default_set=True)
    source, frames, _ = rigs.smpl_source(T=20)
    bpy.ops.object.armature_human_metarig_add()
    metarig = bpy.context.object
    bpy.ops.pose.rigify_generate()
    rig = next(o for o in bpy.data.objects if o.type == "ARMATURE" and o not in (source, metarig))
    # lock_feet=False: this test compares bone directions; the foot lock turns the legs away from
    # the source's directions on purpose (the meta-rig's wider hips would otherwise slide its feet)
    report = retarget(source, metarig, auto_map([b.name for b in metarig.data.bones]), lock_feet=False)
    assert report["constraint_passes"] == 0
    mapping = auto_map([b.name for b in rig.data.bones])
    assert mapping["left_elbow"] == "forearm_fk.L"  # controls, not DEF bones
    report = retarget(source, rig, mapping, lock_feet=False)
    assert report["fk_switches"] == 4 and report["constraint_passes"] >= 1
    deform = {
        j: "DEF-" + b
        for j, b in preset_map("RIGIFY_METARIG").items()
        if j not in ("pelvis", "neck") and "DEF-" + b in rig.data.bones
    }  # hips/neck DEF bones are bendy
    for obj, bones in ((metarig, auto_map([b.name for b in metarig.data.bones])), (rig, mapping), (rig, deform)):
        src_axes, _ = rigs.world_bone_axes(source, list(bones), frames)
        tgt_axes, _ = rigs.world_bone_axes(obj, list(bones.values()), frames)
        err = rigs.angle_deg(src_axes, tgt_axes)
        print(f"{obj.name} ({len(bones)} bones): max angle {err.max():.2e} deg")
        assert err.max() < 1.0, dict(zip(bones.values(), err.max(0)))
