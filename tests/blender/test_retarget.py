"""Retarget the SMPL walk onto generated rigs with other names, rest poses, rolls and proportions:
bone directions match the source within 0.01° per frame, the root scale from the legs' chain
lengths keeps planted feet still, and the foot lock holds them on another foot geometry. The rig
stays as it was: keys in each bone's own rotation mode, constraints and drivers reported rather than
changed, and what cannot be baked exactly (bone options, linked rigs) refused before anything changes."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy")

from vibe_blender import keyframes  # noqa: E402
from vibe_blender.core.errors import VibeError  # noqa: E402
from vibe_blender.core.retarget_map import PRESETS, auto_map, preset_map  # noqa: E402
from vibe_blender.core.retarget_math import EULER_ORDERS, rotation_keys  # noqa: E402
from vibe_blender.retarget import MAX_RETARGET_FRAMES, retarget, rotation_channel  # noqa: E402
from vibe_blender.retarget_settings import _is_target_rig  # noqa: E402

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


def test_the_foot_lock_finds_the_same_contacts_in_a_centimetre_scene():
    """Characters scaled x100 (unit scale 0.01, as for Unreal): the contacts were found on world
    speeds and heights taken for metres, so fewer, or none with a capture's jitter."""
    found = {}
    for scale in (1.0, 100.0):
        rigs.reset_scene()
        source, frames, stance = rigs.smpl_source(T=60)
        target = rigs.target_rig(
            "Target", PRESETS["UE5_MANNEQUIN"], leg_scale=1.15, foot_scale=0.7, a_pose_deg=30, roll_seed=8
        )
        source.scale = target.scale = (scale, scale, scale)
        bpy.context.view_layer.update()
        mapping = auto_map([b.name for b in target.data.bones])
        report = retarget(source, target, mapping, fps=rigs.walk.FPS)
        ankles = [mapping["left_ankle"], mapping["right_ankle"]]
        found[scale] = report["contact_frames"], rigs.planted_slide_mm(target, ankles, frames, stance) / scale
    print(f"contact frames, planted slide (mm/frame in metres): x1 {found[1.0]}, x100 {found[100.0]}")
    assert found[100.0][0] == found[1.0][0] >= stance.sum()
    assert found[100.0][1] == pytest.approx(found[1.0][1], abs=1e-3)


def test_rig_without_mapped_legs_scales_the_root_by_hip_height_and_skips_the_foot_lock():
    rigs.reset_scene()
    source, _, _ = rigs.smpl_source(T=20)
    target = rigs.target_rig("Target", PRESETS["UE5_MANNEQUIN"], leg_scale=1.2)
    upper = {j: b for j, b in PRESETS["UE5_MANNEQUIN"].items() if not j.endswith(("_knee", "_ankle", "_foot"))}
    report = retarget(source, target, upper)
    assert report["root_scale_from"] == "hip height" and report["contact_frames"] == 0
    assert 1.0 < report["root_scale"] < 1.2  # the hips' height grows less than the legs
    assert retarget(source, target, upper, scale_root=False)["root_scale"] == 1.0


def _pose_in_world(obj, bone_names, frames):
    """-> world matrices (T, B, 4, 4) of pose bones, as Blender evaluates the rig."""
    out = []
    for f in frames:
        bpy.context.scene.frame_set(int(f))
        out.append([np.array(obj.matrix_world) @ np.array(obj.pose.bones[b].matrix) for b in bone_names])
    return np.array(out)


@pytest.mark.parametrize("turn_deg", [180, 90, -30])
@pytest.mark.parametrize("turned", ["target", "source"])
def test_a_rig_turned_in_the_scene_keeps_its_own_facing(turn_deg, turned):
    """The same skeleton as the source, its object turned about Z (to face the camera): every bone
    points, relative to the rig's own hips, where the source's does, and the hips travel along the
    rig's own forward. Before: the rest correction compared world directions, so at 180° the left arm
    and thigh pointed through the body to the other side, and the hips walked the source's way."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=30)
    target = rigs.target_rig("Target", PRESETS["SMPL"])
    (target if turned == "target" else source).rotation_euler.z = np.radians(turn_deg)
    bpy.context.view_layer.update()
    retarget(source, target, dict(PRESETS["SMPL"]), lock_feet=False)
    bones = list(PRESETS["SMPL"])
    src, tgt = _pose_in_world(source, bones, frames), _pose_in_world(target, bones, frames)
    in_hips = lambda pose: np.einsum("tba,tjb->tja", pose[:, 0, :3, :3], pose[:, :, :3, 1])  # pelvis first
    err = rigs.angle_deg(in_hips(src), in_hips(tgt))
    print(f"{turned} turned {turn_deg}°: largest bone direction error in the hips' frame {err.max():.2e}°")
    assert err.max() < 0.01, dict(zip(bones, err.max(axis=0).round(2)))
    own = lambda obj, pose: (pose[:, 0, :3, 3] - pose[0, 0, :3, 3]) @ np.array(obj.matrix_world)[:3, :3]
    np.testing.assert_allclose(own(target, tgt), own(source, src), atol=1e-4)  # in each object's axes
    assert np.linalg.norm(own(source, src)[-1]) > 0.3  # the walk travels


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


@pytest.mark.parametrize("scale", [(-1, 1, 1), (-1, -1, -1), (0, 0, 0)], ids=["mirrored", "negative", "zero"])
@pytest.mark.parametrize("scaled", ["source", "target", "target's parent"])
def test_a_mirrored_or_zero_scaled_rig_is_refused_and_nothing_changes(scaled, scale):
    """Before: a rig mirrored by a negative scale passed the uniform-scale check and was retargeted
    with bones up to 180° off; one scaled to 0 (keyed so, to hide it) failed in numpy ('Singular matrix')."""
    rigs.reset_scene()
    source, _, _ = rigs.smpl_source(T=5)
    target = rigs.target_rig("Target", PRESETS["UE5_MANNEQUIN"])
    own = bpy.data.actions.new("Own")
    target.animation_data_create().action = own
    if scaled == "target's parent":
        parent = bpy.data.objects.new("Mover", None)
        bpy.context.scene.collection.objects.link(parent)
        target.parent, parent.scale = parent, scale
    else:
        (source if scaled == "source" else target).scale = scale
    bpy.context.view_layer.update()
    name = "SMPL" if scaled == "source" else "Target"
    if min(scale) == 0:
        message = f"'{name}' is scaled to zero at this frame.*set its scale back"
    else:
        message = rf"'{name}' is mirrored by a negative scale.*apply the scale \(Object > Apply > Scale\)"
    actions = set(bpy.data.actions)
    with pytest.raises(VibeError, match=message):
        retarget(source, target, PRESETS["UE5_MANNEQUIN"])
    assert target.animation_data.action == own and set(bpy.data.actions) == actions


def _source_and_rigify_rigs(T: int):
    """A new scene with the SMPL walk of T frames, Blender's human meta-rig and the rig Rigify makes
    of it -> (source, frames, meta-rig, generated rig)."""
    import addon_utils

    rigs.reset_scene()
    addon_utils.enable("rigify", default_set=True)
    source, frames, _ = rigs.smpl_source(T=T)
    bpy.ops.object.armature_human_metarig_add()
    metarig = bpy.context.object
    bpy.ops.pose.rigify_generate()
    rig = next(o for o in bpy.data.objects if o.type == "ARMATURE" and o not in (source, metarig))
    return source, frames, metarig, rig


def test_retarget_to_blender_rigify_metarig_and_generated_control_rig():
    """Blender's own human meta-rig, and the rig Rigify generates from it (FK controls hanging from
    constraint-driven helper bones): the controls and the deform bones they drive follow the source."""
    source, frames, metarig, rig = _source_and_rigify_rigs(T=20)
    # lock_feet=False: this test compares bone directions; the foot lock turns the legs away from
    # the source's directions on purpose (the meta-rig's wider hips would otherwise slide its feet)
    report = retarget(source, metarig, auto_map([b.name for b in metarig.data.bones]), lock_feet=False)
    assert report["constraint_passes"] == 0
    assert metarig.pose.bones["shoulder.L"].rotation_mode == "YXZ"  # keyed in its own Euler order
    mapping = auto_map([b.name for b in rig.data.bones])
    assert mapping["left_elbow"] == "forearm_fk.L"  # controls, not DEF bones
    report = retarget(source, rig, mapping, lock_feet=False)
    assert report["fk_switches"] == 4 and report["constraint_passes"] >= 1 and report["unsettled"] == {}
    # the switch is keyed in the new action (it plays after the user goes back to IK) and reported
    switches = [pb for pb in rig.pose.bones if "IK_FK" in pb.keys()]
    channels = keyframes.channels_of(rig)
    assert all(channels.fcurves.find(f'{pb.path_from_id()}["IK_FK"]') for pb in switches) and len(switches) == 4
    assert any(w.startswith("Limbs were switched from IK to FK") for w in report["warnings"])
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


def test_a_rigify_rig_disabled_in_viewports_or_at_rest_is_retargeted_as_shown_and_an_excluded_one_refused():
    """Blender evaluates no constraints of a rig disabled in viewports, at its rest position, or outside
    the view layer: the refinement read unmoved helpers and baked the FK controls 94-101 degrees off."""
    source, frames, _, rig = _source_and_rigify_rigs(T=10)
    mapping = auto_map([b.name for b in rig.data.bones])
    rig.hide_viewport, rig.data.pose_position = True, "REST"
    report = retarget(source, rig, mapping, lock_feet=False)
    assert (rig.hide_viewport, rig.data.pose_position) == (True, "REST")  # put back as they were
    assert report["constraint_passes"] >= 1 and report["unsettled"] == {}
    rig.hide_viewport, rig.data.pose_position = False, "POSE"
    err = _direction_error(source, rig, mapping, frames)
    print(f"Rigify rig retargeted while disabled and at rest: max angle {err.max():.2e} deg")
    assert err.max() < 1.0

    hidden = bpy.data.collections.new("Hidden rig")
    bpy.context.scene.collection.children.link(hidden)
    for collection in list(rig.users_collection):
        collection.objects.unlink(rig)
    hidden.objects.link(rig)
    bpy.context.view_layer.layer_collection.children[hidden.name].exclude = True
    action = rig.animation_data.action
    with pytest.raises(VibeError, match="not in this scene's view layer"):
        retarget(source, rig, mapping, lock_feet=False)
    assert rig.animation_data.action == action  # nothing changed


def test_a_target_in_edit_mode_is_retargeted_with_its_edited_bones():
    """The bones of an armature in Edit Mode are those from before the edit until it leaves it: the
    retarget baked the old arm, 46-122 degrees off once the user left Edit Mode."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=10)
    target = rigs.target_rig("Mixamo", PRESETS["MIXAMO"], a_pose_deg=40, roll_seed=5)
    mapping = auto_map([b.name for b in target.data.bones])
    bpy.context.view_layer.objects.active = target
    bpy.ops.object.mode_set(mode="EDIT")
    arm = target.data.edit_bones["mixamorig:LeftArm"]
    arm.tail = (arm.tail[0], arm.tail[1], arm.tail[2] + 0.3)
    retarget(source, target, mapping, lock_feet=False)
    bpy.ops.object.mode_set(mode="OBJECT")
    assert _direction_error(source, target, mapping, frames).max() < 0.01


def test_a_target_tweaking_an_nla_strip_is_refused_before_anything_changes():
    rigs.reset_scene()
    source, _, _ = rigs.smpl_source(T=10)
    target = rigs.target_rig("UE", PRESETS["UE5_MANNEQUIN"])
    own = bpy.data.actions.new("Idle")
    animation = target.animation_data_create()
    animation.action = own
    target.pose.bones["pelvis"].keyframe_insert("location", frame=1)
    track = animation.nla_tracks.new()
    strip = track.strips.new("Idle", 1, own)
    animation.action = None
    strip.select = track.select = True
    animation.use_tweak_mode = True
    actions = {a.name: (a.users, a.use_fake_user) for a in bpy.data.actions}
    with pytest.raises(VibeError, match="NLA strip open for tweaking"):
        retarget(source, target, auto_map([b.name for b in target.data.bones]))
    assert {a.name: (a.users, a.use_fake_user) for a in bpy.data.actions} == actions


UE5 = PRESETS["UE5_MANNEQUIN"]
MODES = [*EULER_ORDERS, "AXIS_ANGLE", "QUATERNION"]


def _direction_error(source, target, mapping, frames):
    src_axes, _ = rigs.world_bone_axes(source, list(mapping), frames)
    tgt_axes, _ = rigs.world_bone_axes(target, list(mapping.values()), frames)
    return rigs.angle_deg(src_axes, tgt_axes).max(0)


def _use_action(obj, action):
    """Assign an action as a user does (on 4.4+ its slot too) and evaluate the current frame."""
    obj.animation_data.action = action
    if getattr(obj.animation_data, "action_slot", False) is None and action.slots:
        obj.animation_data.action_slot = action.slots[0]
    bpy.context.view_layer.update()


def _poses(obj, frames):
    out = []
    for f in frames:
        bpy.context.scene.frame_set(int(f))
        out.append([np.array(pb.matrix) for pb in obj.pose.bones])
    return np.array(out)


def test_keys_are_written_in_each_bones_own_rotation_mode_and_the_kept_action_still_plays():
    """An animator's rig: bones in every Euler order, axis-angle and quaternion, a hand-keyed action,
    a hand-posed bone outside the mapped chains and a posed unmapped parent. Before: every mapped bone
    was set to quaternion rotation, so the kept action's Euler keys no longer played, and the whole
    pose was reset to rest."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=30)
    target = rigs.target_rig("Target", UE5, a_pose_deg=30, roll_seed=9, root_bone="root")
    mapping = {j: b for j, b in UE5.items() if j != "left_wrist"}  # the left hand stays unmapped
    modes = {pb.name: MODES[i % len(MODES)] for i, pb in enumerate(target.pose.bones)}
    rng = np.random.default_rng(9)
    for pb in target.pose.bones:
        pb.rotation_mode = modes[pb.name]
        for f in (1, 12):  # the rig's own animation, keyed in each bone's mode
            pb.rotation_euler = rng.uniform(-1, 1, 3)
            pb.rotation_quaternion = rng.normal(size=4)
            pb.rotation_axis_angle = (rng.uniform(-2, 2), *rng.normal(size=3))
            pb.location = rng.uniform(-0.05, 0.05, 3)
            pb.keyframe_insert(rotation_channel(pb.rotation_mode)[0], frame=f)
            pb.keyframe_insert("location", frame=f)
    own = target.animation_data.action
    hand = target.pose.bones[UE5["left_wrist"]]
    hand.scale = (1.0, 1.2, 1.0)  # posed by hand, not keyed
    before = _poses(target, [1, 5, 12])
    target.pose.bones["root"].location = (0.3, 0.0, 0.1)  # an unmapped parent of the hips, posed

    report = retarget(source, target, mapping, lock_feet=False)

    assert {pb.name: pb.rotation_mode for pb in target.pose.bones} == modes
    err = _direction_error(source, target, mapping, frames)
    print(f"own rotation modes: max angle {err.max():.2e} deg")
    assert err.max() < 0.01  # as exact as quaternion keys (float32 keys)
    channels = keyframes.channels_of(target)
    for name in mapping.values():
        pb = target.pose.bones[name]
        prop = rotation_channel(pb.rotation_mode)[0]
        values = np.array([keyframes.read_fcurve(channels, pb.path_from_id(prop), c)[1] for c in range(3)])
        assert np.abs(np.diff(values, axis=1)).max() < 0.5, name  # no jumps of 2π between frames
        assert channels.fcurves.find(pb.path_from_id("rotation_quaternion")) is None or pb.rotation_mode == "QUATERNION"
    assert tuple(hand.scale) == pytest.approx((1.0, 1.2, 1.0))
    assert report["kept_action"] == own.name and report["warnings"] == []

    _use_action(target, own)
    np.testing.assert_allclose(_poses(target, [1, 5, 12]), before, atol=1e-5)


def test_a_source_keyed_in_euler_and_axis_angle_rotations_is_read_as_blender_plays_it():
    """Before: a source bone in axis-angle rotation was refused."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=20)
    channels = keyframes.channels_of(source)
    for i, pb in enumerate(source.pose.bones):
        path = keyframes.rotation_path(pb.name)
        quats = np.stack([keyframes.read_fcurve(channels, path, c)[1] for c in range(4)], -1)
        pb.rotation_mode = ("ZXY", "AXIS_ANGLE", "QUATERNION")[i % 3]
        values = rotation_keys(quats, pb.rotation_mode)
        for c in range(values.shape[-1]):
            prop = rotation_channel(pb.rotation_mode)[0]
            if pb.rotation_mode != "QUATERNION":
                keyframes.write_fcurve(channels, pb.path_from_id(prop), c, frames, values[:, c])
    target = rigs.target_rig("Target", UE5, a_pose_deg=20, roll_seed=5)
    retarget(source, target, UE5, lock_feet=False)
    assert _direction_error(source, target, UE5, frames).max() < 0.01


def test_the_source_is_sampled_through_the_one_f_curve_reader_with_its_modifiers(monkeypatch):
    """The source's keys are read in bulk where they are the frames baked (keyframes.sample_fcurve),
    and evaluated where an F-curve modifier changes them, as Blender plays them."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=20)
    channels = keyframes.channels_of(source)
    noise = channels.fcurves.find(keyframes.rotation_path("left_knee"), index=1).modifiers.new("NOISE")
    noise.strength, noise.scale = 0.5, 3.0
    sampled = []
    sample_fcurve = keyframes.sample_fcurve

    def counted(channels, data_path, index, frames):
        sampled.append((data_path, index))
        return sample_fcurve(channels, data_path, index, frames)

    monkeypatch.setattr(keyframes, "sample_fcurve", counted)
    target = rigs.target_rig("Target", UE5, a_pose_deg=20, roll_seed=5)
    retarget(source, target, UE5, lock_feet=False)
    assert {(keyframes.rotation_path(j), c) for j in UE5 for c in range(4)} <= set(sampled)
    assert _direction_error(source, target, UE5, frames).max() < 0.01


def _add_unmapped_bones(rig, count: int) -> None:
    """``count`` bones the map does not name: chains of three hanging from the rig's bones (fingers,
    twist and mechanism bones of a production rig)."""
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    edit_bones = rig.data.edit_bones
    mapped = list(edit_bones)
    previous = None
    for i in range(count):
        bone = edit_bones.new(f"Extra_{i:03d}")
        parent = previous if i % 3 else mapped[(i // 3) % len(mapped)]
        bone.head = parent.tail
        bone.tail = parent.tail + (parent.tail - parent.head).normalized() * 0.03
        bone.parent, previous = parent, bone
    bpy.ops.object.mode_set(mode="OBJECT")


def test_the_memory_and_time_follow_the_mapped_bones_not_the_rigs_size(monkeypatch):
    """Before: every frame held arrays over all the target's bones (on Rigify's 706-bone control rig,
    383 KB a frame, 20 times a plain rig's). Now only the mapped bones and their parents are computed:
    a rig with 300 more bones gets the same keys from arrays of the same size."""
    from vibe_blender import retarget as retarget_module

    widths = []
    for name in ("solve_basis", "pose_from_basis"):
        original = getattr(retarget_module, name)

        def recording(parents, rest, arrays, *args, _original=original):
            widths.append(arrays.shape[1])  # (T, bones, ...)
            return _original(parents, rest, arrays, *args)

        monkeypatch.setattr(retarget_module, name, recording)
    keys, sizes = {}, {}
    for extra in (0, 300):
        rigs.reset_scene()
        source, _, _ = rigs.smpl_source(T=20)
        target = rigs.target_rig("Target", PRESETS["MIXAMO"], roll_seed=1)
        mapping = auto_map([b.name for b in target.data.bones])
        _add_unmapped_bones(target, extra)
        assert len(target.data.bones) == 22 + extra
        widths.clear()
        report = retarget(source, target, mapping)  # the foot lock too
        assert report["contact_frames"] > 0
        channels = keyframes.channels_of(target)
        keys[extra] = {
            (f.data_path, f.array_index): keyframes.read_fcurve(channels, f.data_path, f.array_index)
            for f in channels.fcurves
        }
        sizes[extra] = sorted(set(widths))
    assert keys[0].keys() == keys[300].keys() and not any("Extra" in path for path, _ in keys[300])
    for key, (frames, values) in keys[0].items():
        np.testing.assert_array_equal(keys[300][key][0], frames)
        np.testing.assert_allclose(keys[300][key][1], values, atol=1e-6, err_msg=str(key))
    assert sizes[0] == sizes[300] == [len(mapping)]  # the mapped bones (their parents are mapped too here)


def test_constraints_and_drivers_on_mapped_bones_are_reported_and_left_alone():
    """An IK on the shin, a Copy Location on the head and a driver on a spine bone set those bones
    over their keys. Before: reported as a plain success, and twelve correction passes baked the IK's
    pull into the foot's keys. Muted, zero-influence and target-less constraints and muted drivers
    do not count."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=20)
    target = rigs.target_rig("Target", UE5, a_pose_deg=30)
    goal = bpy.data.objects.new("Goal", None)
    bpy.context.scene.collection.objects.link(goal)
    goal.location = (0.1, -0.3, 0.1)
    bones = target.pose.bones

    def constrain(bone, kind, **options):
        con = bones[UE5[bone]].constraints.new(kind)
        con.target = goal
        for key, value in options.items():
            setattr(con, key, value)
        return con

    ik = constrain("left_knee", "IK", chain_count=2)
    follow = constrain("head", "COPY_LOCATION")
    constrain("right_shoulder", "COPY_ROTATION", enabled=False)
    constrain("right_wrist", "DAMPED_TRACK", influence=0.0)
    constrain("right_elbow", "TRACK_TO", target=None)  # no target: Blender skips it
    spine = bones[UE5["spine2"]].driver_add("rotation_quaternion", 1)
    spine.driver.expression = "0.3"
    bones[UE5["neck"]].driver_add("rotation_quaternion", 2).mute = True
    bones[UE5["left_collar"]].driver_add("rotation_euler", 0).driver.expression = "1"  # a channel it does not read

    report = retarget(source, target, UE5, lock_feet=False)

    assert report["overridden"] == {
        UE5["left_hip"]: [f"Inverse Kinematics constraint '{ik.name}' on '{UE5['left_knee']}'"],
        UE5["left_knee"]: [f"Inverse Kinematics constraint '{ik.name}'"],
        UE5["spine2"]: ["driver on rotation_quaternion[1]"],
        UE5["head"]: [f"Copy Location constraint '{follow.name}'"],
    }
    (warning,) = report["warnings"]
    assert warning.startswith("Keys are written for every mapped bone") and "mute those" in warning
    assert all(f"'{UE5[j]}'" in warning for j in ("left_hip", "left_knee", "spine2", "head"))
    assert report["constraint_passes"] == 0 and report["unsettled"] == {}
    assert ik.enabled and follow.enabled and not spine.mute and ik.chain_count == 2  # the rig is as it was
    err = _direction_error(source, target, UE5, frames)
    assert err[list(UE5).index("left_knee")] > 1.0  # the IK wins until muted
    ik.enabled = follow.enabled = False
    spine.mute = True
    assert _direction_error(source, target, UE5, frames).max() < 0.01  # the keys themselves are right


def test_constraints_and_drivers_on_the_source_are_named_in_a_warning():
    """The retarget reads the source's keys: a Damped Track on its elbow (or a driver on a spine bone)
    that Blender shows is not carried over. Before: nothing was said, and the target's arm was 80° off
    the source as Blender plays it. Muted and zero-influence ones, and bones not read, do not count."""
    rigs.reset_scene()
    source, _, _ = rigs.smpl_source(T=10)
    target = rigs.target_rig("Target", UE5)
    goal = bpy.data.objects.new("Goal", None)
    bpy.context.scene.collection.objects.link(goal)
    track = source.pose.bones["left_elbow"].constraints.new("DAMPED_TRACK")
    track.target = goal
    source.pose.bones["right_elbow"].constraints.new("COPY_ROTATION").influence = 0.0
    source.pose.bones["spine2"].driver_add("rotation_quaternion", 1).driver.expression = "0.3"
    source.pose.bones["neck"].driver_add("rotation_quaternion", 2).mute = True
    only_arm = {j: b for j, b in UE5.items() if j != "spine2"}  # spine2 is still read: spine3's parent

    report = retarget(source, target, only_arm, lock_feet=False)

    (warning,) = report["warnings"]
    assert warning.startswith("Constraints or drivers on the source set the pose of 2 of its bones")
    assert "'left_elbow'" in warning and "'spine2'" in warning and "Bake Action" in warning
    assert report["source_overridden"] == {
        "left_elbow": [f"Damped Track constraint '{track.name}'"],
        "spine2": ["driver on rotation_quaternion[1]"],
    }
    assert track.enabled and track.target == goal  # the source is as it was


def test_parents_whose_constraints_or_drivers_do_not_settle_are_reported_with_the_error_left():
    """An unmapped spine bone turned by a driver that reads its child's key: every correction moves
    the parent again. Before: drivers on parents were not looked at, and the retarget reported plain
    success with the bones off."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=10)
    target = rigs.target_rig("Target", UE5, extra_spine=("spine3",))
    parent, collar = target.pose.bones[UE5["spine3"] + "_extra"], target.pose.bones[UE5["left_collar"]]
    parent.rotation_mode = collar.rotation_mode = "XYZ"
    driver = parent.driver_add("rotation_euler", 0).driver
    var = driver.variables.new()
    var.targets[0].id = target
    var.targets[0].data_path = collar.path_from_id("rotation_euler") + "[0]"
    driver.expression = f"0.5 - 2 * {var.name}"

    report = retarget(source, target, UE5, lock_feet=False)

    assert report["constraint_passes"] == 12 and UE5["left_collar"] in report["unsettled"]
    worst = max(report["unsettled"].values())
    err = _direction_error(source, target, UE5, frames)
    assert worst > 1.0 and err.max() > 1.0
    assert any(w.startswith("The parent bones of") and f"{worst:.2f}°" in w for w in report["warnings"])


def _set_bone_option(rig, option):
    if option == "connected root":
        bpy.context.view_layer.objects.active = rig
        bpy.ops.object.mode_set(mode="EDIT")
        edit_bones = rig.data.edit_bones
        edit_bones["root"].tail = edit_bones[UE5["pelvis"]].head
        edit_bones[UE5["pelvis"]].use_connect = True
        bpy.ops.object.mode_set(mode="OBJECT")
    elif option == "no inherit rotation":
        rig.data.bones[UE5["left_elbow"]].use_inherit_rotation = False
    elif option == "root location not local":
        rig.data.bones[UE5["pelvis"]].use_local_location = False


@pytest.mark.parametrize(
    "option, message",
    [
        ("connected root", r"root bone 'pelvis' of 'Target' is connected.*untick Connected"),
        ("no inherit rotation", r"'lowerarm_l' of 'Target' do not inherit.*tick Inherit Rotation"),
        ("root location not local", r"'pelvis' of 'Target' has Local Location off.*tick Local Location"),
        ("source scale not inherited", r"'left_knee' of 'SMPL' inherit only part.*Inherit Scale to Full"),
    ],
)
def test_bone_options_the_retarget_cannot_reproduce_are_refused_and_nothing_changes(option, message):
    """Before: a connected hips bone lost the root motion (the character walked on the spot), a bone
    that does not inherit rotation was off by up to 76°; all reported success."""
    rigs.reset_scene()
    source, _, _ = rigs.smpl_source(T=10)
    target = rigs.target_rig("Target", UE5, root_bone="root")
    own = bpy.data.actions.new("Own")
    target.animation_data_create().action = own
    for pb in target.pose.bones:
        pb.rotation_mode = "XYZ"
    if option == "source scale not inherited":
        source.data.bones["left_knee"].inherit_scale = "NONE"
        channels = keyframes.channels_of(source)
        keyframes.write_fcurve(channels, 'pose.bones["left_hip"].scale', 2, np.array([1.0, 10.0]), np.array([1.0, 1.3]))
    else:
        _set_bone_option(target, option)
    actions = set(bpy.data.actions)
    with pytest.raises(VibeError, match=message):
        retarget(source, target, UE5)
    assert target.animation_data.action == own and set(bpy.data.actions) == actions and not own.use_fake_user
    assert {pb.rotation_mode for pb in target.pose.bones} == {"XYZ"}


def test_inherit_scale_modes_are_exact_because_the_mapped_chains_are_keyed_at_unit_scale():
    """Every Inherit Scale mode gives the same pose under unscaled parents; a parent left scaled by
    hand is keyed back to scale 1 in the new action."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=20)
    source.data.bones["left_knee"].inherit_scale = "NONE"  # the source's keys scale nothing
    target = rigs.target_rig("Target", UE5, a_pose_deg=20, roll_seed=3)
    for bone, mode in zip(UE5.values(), ["NONE", "ALIGNED", "AVERAGE", "FIX_SHEAR", "NONE_LEGACY"] * 5):
        target.data.bones[bone].inherit_scale = mode
    target.pose.bones[UE5["spine1"]].scale = (1.3, 0.8, 1.1)
    retarget(source, target, UE5, lock_feet=False)
    assert _direction_error(source, target, UE5, frames).max() < 0.01


def test_a_linked_rig_is_refused_and_its_library_override_keeps_the_new_action(tmp_path):
    """Before: a linked rig took the action and reported success, and the action was gone after
    saving and reopening the file."""
    rigs.reset_scene()
    rig = rigs.target_rig("Target", UE5)
    collection = bpy.data.collections.new("Rig")
    collection.objects.link(rig)
    library = tmp_path / "rig.blend"
    bpy.data.libraries.write(str(library), {collection})
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=10)
    with bpy.data.libraries.load(str(library), link=True) as (_, data_to):
        data_to.collections = ["Rig"]
    instance = bpy.data.objects.new("RigInstance", None)
    instance.instance_type, instance.instance_collection = "COLLECTION", data_to.collections[0]
    bpy.context.scene.collection.objects.link(instance)
    linked = bpy.data.objects["Target"]
    assert linked.library is not None
    with pytest.raises(VibeError, match=r"linked from .*make a library override first \(Object > Library Override"):
        retarget(source, linked, UE5)
    assert linked.animation_data is None and not _is_target_rig(None, linked) and _is_target_rig(None, source)

    data_to.collections[0].override_hierarchy_create(bpy.context.scene, bpy.context.view_layer)
    override = next(o for o in bpy.data.objects if o.type == "ARMATURE" and o.override_library is not None)
    assert _is_target_rig(None, override)
    retarget(source, override, UE5, lock_feet=False)
    saved = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(saved))
    bpy.ops.wm.open_mainfile(filepath=str(saved))
    source = bpy.data.objects["SMPL"]
    override = next(o for o in bpy.data.objects if o.type == "ARMATURE" and o.override_library is not None)
    assert override.animation_data.action.name == "Target_retarget"
    assert _direction_error(source, override, UE5, frames).max() < 0.01


def test_a_source_whose_motion_plays_from_nothing_the_retarget_reads_is_refused_saying_where_it_is():
    """Before: a source action assigned without a slot (4.4+: the Action editor leaves it empty when the
    slot names another object) was baked as the frozen current pose, without a word; motion pushed down
    to the NLA was 'no animation'."""
    rigs.reset_scene()
    source, _, _ = rigs.smpl_source(T=5)
    target = rigs.target_rig("Target", UE5)
    action = source.animation_data.action
    if keyframes.LAYERED_ACTIONS:
        source.animation_data.action_slot = None
        with pytest.raises(VibeError, match=f"The action '{action.name}' of 'SMPL' has no slot for it"):
            retarget(source, target, UE5, lock_feet=False)
        source.animation_data.action_slot = action.slots[0]
    empty = bpy.data.actions.new("Empty")
    _use_action(source, empty)
    if keyframes.LAYERED_ACTIONS and source.animation_data.action_slot is None:
        source.animation_data.action_slot = empty.slots.new(id_type="OBJECT", name="SMPL")
    with pytest.raises(VibeError, match="The action 'Empty' of 'SMPL' has no keys to retarget"):
        retarget(source, target, UE5, lock_feet=False)  # (4.2 baked frame 0 of an empty action)
    _use_action(source, action)
    track = source.animation_data.nla_tracks.new()
    track.strips.new(action.name, 1, action)
    source.animation_data.action = None
    with pytest.raises(VibeError, match="The motion of 'SMPL' is in NLA strips.*tweak mode"):
        retarget(source, target, UE5, lock_feet=False)
    assert target.animation_data is None or target.animation_data.action is None  # nothing changed


def test_a_muted_source_curve_is_read_as_blender_plays_it_not_as_keyed():
    """Before: the knee followed its muted keys (Blender plays the value the bone holds)."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=12)
    channels = keyframes.channels_of(source)
    for index in range(4):
        channels.fcurves.find(keyframes.rotation_path("left_knee"), index=index).mute = True
    knee = source.pose.bones["left_knee"]
    knee.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)  # the value it holds: what plays
    target = rigs.target_rig("Target", UE5)
    retarget(source, target, UE5, lock_feet=False)
    assert _direction_error(source, target, UE5, frames).max() < 0.01  # as played, knee straight
    tgt_channels = keyframes.channels_of(target)
    calf = target.pose.bones[UE5["left_knee"]]
    prop = rotation_channel(calf.rotation_mode)[0]
    keyed = np.array([keyframes.read_fcurve(tgt_channels, calf.path_from_id(prop), c)[1] for c in range(3)])
    assert np.ptp(keyed, axis=1).max() < 1e-4  # the same every frame: the source knee does not move


def test_the_frames_retargeted_are_those_of_the_sources_own_keys_in_a_shared_action():
    """On 4.4+ an action's frame range spans every slot: a source sharing its action with a longer
    motion of another object was baked over that object's frames too."""
    if not keyframes.LAYERED_ACTIONS:
        pytest.skip("one action holds one ID's keys before Blender 4.4")
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=10)
    other = bpy.data.objects.new("Prop", None)
    bpy.context.scene.collection.objects.link(other)
    action = source.animation_data.action
    other.animation_data_create().action = action
    other.animation_data.action_slot = action.slots.new(id_type="OBJECT", name="Prop")
    other.location = (0.0, 0.0, 0.0)
    other.keyframe_insert("location", frame=400)
    assert action.frame_range[1] >= 400  # the action's own range: both objects'
    target = rigs.target_rig("Target", UE5)
    report = retarget(source, target, UE5, lock_feet=False)
    assert keyframes.keyed_range(target) == (frames[0], frames[-1]), report


def test_the_kept_action_of_a_renamed_rig_finds_its_slot_when_assigned_again():
    """4.4+: the new action's slot was named after the object, which Blender then took as the slot to
    look for: the rig's own action, made when it had another name, played nothing when assigned again."""
    rigs.reset_scene()
    source, _, _ = rigs.smpl_source(T=8)
    target = rigs.target_rig("Armature", UE5)
    target.pose.bones[UE5["head"]].keyframe_insert("location", frame=1)
    own = target.animation_data.action
    target.name = "Hero"  # as after an FBX import
    report = retarget(source, target, UE5, lock_feet=False)
    assert report["kept_action"] == own.name
    target.animation_data.action = own  # as the Action editor assigns it: no slot picked by hand
    if keyframes.LAYERED_ACTIONS:
        assert target.animation_data.action_slot is not None
    assert keyframes.channels_of(target) is not None


def test_the_correction_passes_of_a_constrained_rig_move_blenders_progress_counter(monkeypatch):
    """Each pass evaluates every frame (several ms a frame on a Rigify rig: minutes for a long take), with
    nothing shown before; the counter now moves frame by frame, pass after pass."""
    import contextlib

    from vibe_blender import retarget as retarget_module

    counted = []

    @contextlib.contextmanager
    def counter(steps):
        counted.append(("begin", steps))
        yield lambda done: counted.append(done)

    source, frames, _, rig = _source_and_rigify_rigs(T=6)
    monkeypatch.setattr(retarget_module, "progress_counter", counter)
    report = retarget(source, rig, auto_map([b.name for b in rig.data.bones]), lock_feet=False)
    assert report["constraint_passes"] >= 1
    steps = [c for c in counted if not isinstance(c, tuple)]
    assert counted[0] == ("begin", len(frames) * 13)
    assert steps == sorted(steps) and len(steps) == len(frames) * (report["constraint_passes"] + 1)


def test_only_the_rigify_limbs_whose_fk_controls_are_mapped_are_switched_to_fk():
    """Before: every IK_FK switch was set to FK and keyed, so an arm left unmapped jumped to the pose of
    its FK controls, which nothing keys."""
    source, _, _, rig = _source_and_rigify_rigs(T=6)
    mapping = {j: b for j, b in auto_map([b.name for b in rig.data.bones]).items() if "shoulder" not in j}
    mapping = {j: b for j, b in mapping.items() if not any(p in j for p in ("elbow", "wrist", "collar"))}
    before = {pb.name: pb["IK_FK"] for pb in rig.pose.bones if "IK_FK" in pb.keys()}
    report = retarget(source, rig, mapping, lock_feet=False)
    switched = {pb.name: pb["IK_FK"] for pb in rig.pose.bones if "IK_FK" in pb.keys()}
    assert report["fk_switches"] == 2 and switched["thigh_parent.L"] == switched["thigh_parent.R"] == 1.0
    assert switched["upper_arm_parent.L"] == before["upper_arm_parent.L"]
    channels = keyframes.channels_of(rig)
    assert channels.fcurves.find('pose.bones["upper_arm_parent.L"]["IK_FK"]') is None


def _heights(obj, bones, frames):
    """(T, len(bones)) world heights of the bones' heads over ``frames``."""
    heights = []
    for frame in frames:
        bpy.context.scene.frame_set(int(frame))
        heights.append([(obj.matrix_world @ obj.pose.bones[b].head).z for b in bones])
    return np.array(heights)


def test_a_character_the_add_on_imported_is_retargeted_onto_the_floor_it_walks_on(reference_dir, body_model):
    """The add-on's characters keep the rest pelvis at the armature's origin, the legs hanging below,
    and their pelvis keys lift them onto the floor: the root motion was measured from the rest hips,
    so the target was lifted by a hip height once more and floated."""
    from vibe_blender.importer import ImportOptions, import_motion_file

    rigs.reset_scene()
    ((source, _), *_) = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    target = rigs.target_rig("Target", PRESETS["MIXAMO"])
    mapping = preset_map("MIXAMO")
    report = retarget(source, target, mapping, lock_feet=False)
    assert report["root_scale"] == pytest.approx(1.0, abs=0.05)  # proportions alike: heights alike
    first, last = source.animation_data.action.frame_range
    frames = np.arange(int(first), int(last) + 1)
    joints = ("left_ankle", "right_ankle", "pelvis")
    source_z = _heights(source, joints, frames)
    target_z = _heights(target, [mapping[j] for j in joints], frames)
    np.testing.assert_allclose(target_z[:, 2], source_z[:, 2], atol=0.08)  # hips over the same floor
    lowest = [np.percentile(z[:, :2].min(axis=1), 5) for z in (source_z, target_z)]
    assert abs(lowest[1] - lowest[0]) < 0.08, lowest  # feet on it, not a hip height over it
    # onto another character the add-on built, which hangs below its origin as well: the same heights
    # (lifting the source alone sank it a hip height under the floor)
    ((smpl_target, _), *_) = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    retarget(source, smpl_target, preset_map("SMPL"), lock_feet=False)
    np.testing.assert_allclose(_heights(smpl_target, joints, frames), source_z, atol=1e-3)
