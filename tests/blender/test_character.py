"""The character: bones, names, shape keys, correctives, and re-fitting bones to a new shape."""

import bpy
import numpy as np
import pytest
from blender_eval import evaluated_joints, evaluated_vertices

from vibe_blender.animation import refit_bones
from vibe_blender.core.errors import VibeError
from vibe_blender.core.skeleton import CAMERA_TO_BLENDER
from vibe_blender.core.smpl_math import smpl_forward
from vibe_blender.core.smpl_model import JOINT_NAMES, PARENTS
from vibe_blender.importer import ImportOptions, import_motion_file
from vibe_blender.rig_builder import build_character

pytestmark = pytest.mark.blender


def test_bones_are_named_mirrored_parented_and_point_at_children(empty_scene, body_model):
    armature_obj, _ = build_character(body_model, np.zeros(10), "person")
    bones = armature_obj.data.bones
    assert sorted(b.name for b in bones) == sorted(JOINT_NAMES)
    for j, name in enumerate(JOINT_NAMES):
        assert (bones[name].parent.name if bones[name].parent else None) == (JOINT_NAMES[PARENTS[j]] if j else None)
        if name.startswith("left_"):
            assert bpy.utils.flip_name(name) == "right_" + name[5:]  # X-mirror and paste-flipped work
    np.testing.assert_allclose(bones["left_knee"].tail_local, bones["left_ankle"].head_local, atol=1e-6)
    np.testing.assert_allclose(bones["pelvis"].tail_local, bones["spine1"].head_local, atol=1e-6)
    J = body_model.joints_rest(np.zeros(10))
    np.testing.assert_allclose(
        [bones[n].head_local for n in JOINT_NAMES], J @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]).T, atol=1e-6
    )


def test_beta_shape_keys_hold_negative_values(empty_scene, body_model):
    betas = np.array([-2.5, 3.0, -9.0, 0.5, 0, 0, 0, 0, 0, 1.25])
    _, mesh_obj = build_character(body_model, betas, "person")
    keys = mesh_obj.data.shape_keys.key_blocks
    assert [k.name for k in keys] == ["Basis"] + [f"Shape{i:03d}" for i in range(10)]
    for i, beta in enumerate(betas):
        assert (keys[i + 1].slider_min, keys[i + 1].slider_max) == (-10.0, 10.0)
        assert keys[i + 1].value == pytest.approx(beta)
    v = evaluated_vertices(mesh_obj)  # rest pose = SMPL's v_shaped
    np.testing.assert_allclose(
        v, body_model.v_shaped(betas) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]).T, atol=1e-5
    )


def test_corrective_modes(empty_scene, body_model):
    _, off = build_character(body_model, np.zeros(10), "off", correctives="off")
    _, driven = build_character(body_model, np.zeros(10), "drivers", correctives="drivers")
    assert len(off.data.shape_keys.key_blocks) == 11
    keys = driven.data.shape_keys
    assert len(keys.key_blocks) == 11 + 207
    drivers = keys.animation_data.drivers
    assert len(drivers) == 207
    assert all(d.driver.is_simple_expression for d in drivers)  # no Python, no "Auto Run Scripts"
    assert all(d.driver.is_valid for d in drivers)
    with pytest.raises(VibeError, match="correctives"):
        build_character(body_model, np.zeros(10), "bad", correctives="sometimes")


def test_refit_bones_follows_new_betas_and_keeps_the_motion(empty_scene, reference_dir, body_model):
    ((arm, mesh), _) = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    from vibe_blender.core.readers import read_motion_file

    track = read_motion_file(reference_dir / "result.npz").tracks[0]
    frame = 3
    empty_scene.frame_set(frame + 1)
    pelvis_before = evaluated_joints(arm)[0]
    new_betas = track.betas + np.linspace(-1.5, 1.5, 10)
    for i, b in enumerate(new_betas):
        mesh.data.shape_keys.key_blocks[f"Shape{i:03d}"].value = b
    refit_bones(arm)
    empty_scene.frame_set(1)
    empty_scene.frame_set(frame + 1)
    verts, joints = smpl_forward(body_model, track.pose[frame : frame + 1], new_betas, pose_correctives=False)
    shift = pelvis_before - CAMERA_TO_BLENDER @ joints[0, 0]
    np.testing.assert_allclose(evaluated_joints(arm), joints[0] @ CAMERA_TO_BLENDER.T + shift, atol=1e-5)
    np.testing.assert_allclose(evaluated_vertices(mesh), verts[0] @ CAMERA_TO_BLENDER.T + shift, atol=1e-5)
    J_new = body_model.joints_rest(new_betas)
    np.testing.assert_allclose(
        arm.data.bones["left_knee"].head_local, [J_new[4, 0], -J_new[4, 2], J_new[4, 1]], atol=1e-6
    )


def _arm_space_rotations(armature_obj, frame):
    """(24, 3, 3) how far each bone is turned from its rest, in armature space (pose · rest⁻¹)."""
    bpy.context.scene.frame_set(frame)
    return np.array(
        [
            np.array(pb.matrix.to_3x3()) @ np.array(armature_obj.data.bones[pb.name].matrix_local.to_3x3()).T
            for pb in armature_obj.pose.bones
        ]
    )


def _set_betas(mesh_obj, betas):
    for i, b in enumerate(betas):
        mesh_obj.data.shape_keys.key_blocks[f"Shape{i:03d}"].value = b


def test_refit_keeps_a_key_the_user_added_on_one_bone(empty_scene, reference_dir, body_model):
    ((arm, mesh), _) = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    knee = arm.pose.bones["left_knee"]
    knee.rotation_quaternion = (0.9, 0.3, 0.1, 0.0)
    knee.keyframe_insert("rotation_quaternion", frame=100)  # one bone keyed past the motion's end
    before = {frame: _arm_space_rotations(arm, frame) for frame in (4, 100)}
    _set_betas(mesh, np.linspace(-1.5, 1.5, 10))
    refit_bones(arm)
    for frame, rotations in before.items():
        np.testing.assert_allclose(_arm_space_rotations(arm, frame), rotations, atol=1e-4)  # float32 keys


def test_refit_keeps_the_motion_of_a_bone_keyed_in_euler(empty_scene, reference_dir, body_model):
    """A bone the user switched to Euler plays its Euler keys: the refit read and wrote only the
    quaternion curves, so that bone turned away from its motion."""
    ((arm, mesh), _) = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    elbow = arm.pose.bones["left_elbow"]
    elbow.rotation_mode = "ZXY"
    for frame, angles in ((2, (0.3, -0.4, 1.1)), (6, (-0.2, 0.5, 0.7))):
        elbow.rotation_euler = angles
        elbow.keyframe_insert("rotation_euler", frame=frame)
    # on its keys' frames: between them Euler angles interpolate, which the refit's turn does not
    # carry over exactly (quaternion keys it does)
    before = {frame: _arm_space_rotations(arm, frame) for frame in (2, 6)}
    _set_betas(mesh, np.linspace(-1.5, 1.5, 10))
    refit_bones(arm)
    assert elbow.rotation_mode == "ZXY"
    for frame, rotations in before.items():
        np.testing.assert_allclose(_arm_space_rotations(arm, frame), rotations, atol=1e-4)


def test_refit_refuses_a_bone_keyed_apart_and_changes_nothing(empty_scene, reference_dir, body_model):
    from vibe_blender import keyframes
    from vibe_blender.core.errors import VibeError

    ((arm, mesh), _) = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    arm.pose.bones["left_knee"].keyframe_insert("rotation_quaternion", index=0, frame=100)  # W alone
    heads = [tuple(b.head_local) for b in arm.data.bones]
    keys = keyframes.read_fcurve(keyframes.channels_of(arm), keyframes.rotation_path("left_knee"), 1)[1]
    _set_betas(mesh, np.linspace(-1.5, 1.5, 10))
    with pytest.raises(VibeError, match=r"Cannot refit 'track_1': .*left_knee.*\(6 keys, 5 keys, 5 keys, 5 keys\)"):
        refit_bones(arm)
    assert [tuple(b.head_local) for b in arm.data.bones] == heads
    np.testing.assert_array_equal(
        keyframes.read_fcurve(keyframes.channels_of(arm), keyframes.rotation_path("left_knee"), 1)[1], keys
    )


def _driver_armatures(mesh_obj):
    return {v.targets[0].id.name for d in mesh_obj.data.shape_keys.animation_data.drivers for v in d.driver.variables}


def test_the_body_is_the_mesh_the_armature_deforms_whatever_its_name(empty_scene, reference_dir, body_model):
    from vibe_blender.rig_builder import character_mesh

    options = ImportOptions(correctives="drivers", add_camera=False)
    ((arm, mesh), _) = import_motion_file(reference_dir / "result.npz", body_model, options)
    mesh.name = "Bob"
    assert character_mesh(arm) == mesh
    _set_betas(mesh, np.full(10, 0.5))
    refit_bones(arm)  # found by its Armature modifier, not by the name it was built with
    J = body_model.joints_rest(np.full(10, 0.5))
    np.testing.assert_allclose(arm.data.bones["left_knee"].head_local, [J[4, 0], -J[4, 2], J[4, 1]], atol=1e-6)
    # Shift+D on the character: the copy refits its own body and drives its own correctives
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj in (arm, mesh))
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.duplicate()
    copy = bpy.context.view_layer.objects.active
    copy_mesh = character_mesh(copy)
    assert copy != arm and copy_mesh not in (mesh, None)
    _set_betas(copy_mesh, np.full(10, -1.0))
    refit_bones(copy)
    assert _driver_armatures(mesh) == {arm.name} and _driver_armatures(copy_mesh) == {copy.name}
    np.testing.assert_allclose(arm.data.bones["left_knee"].head_local, [J[4, 0], -J[4, 2], J[4, 1]], atol=1e-6)


def test_a_long_name_keeps_the_meshs_suffix_on_every_blender(body_model):
    """Blender 4.2 cuts names at 63 bytes: a long AMASS file name lost the mesh's "_body", so mesh and
    armature had one name (the mesh then got ".001")."""
    name = "CMU_ü" * 20  # 120 bytes, two-byte characters at every cut
    armature_obj, mesh_obj = build_character(body_model, np.zeros(10), name)
    assert mesh_obj.name.endswith("_body") and len(mesh_obj.name.encode()) <= 63
    # both are the name's start, cut between characters (no ".001": the two names differ)
    assert name.startswith(armature_obj.name) and name.startswith(mesh_obj.name.removesuffix("_body"))
    assert len(armature_obj.name.encode()) >= 62


def test_refit_refuses_a_linked_rig_a_renamed_bone_or_a_lost_shape_key_and_changes_nothing(
    empty_scene, tmp_path, body_model
):
    """Before: each of these failed with a raw RuntimeError or KeyError (Edit Mode refused, a bone or
    a Shape key looked up by name); now one message says what is missing or why, and what to do."""
    from characters import imported_tracks, linked_clip

    from vibe_blender.core.errors import VibeError

    linked_clip(tmp_path, body_model, spans=[range(0, 20)])
    with pytest.raises(VibeError, match=r"bones of 'P0' come from '.*clip\.blend'.*Open that file, refit the bones"):
        refit_bones(bpy.data.objects["P0"])
    bpy.data.collections["Mocap clip"].override_hierarchy_create(bpy.context.scene, bpy.context.view_layer)
    override = next(o for o in bpy.data.objects if o.name == "P0" and o.override_library is not None)
    with pytest.raises(VibeError, match=r"bones of 'P0' come from '.*clip\.blend'"):
        refit_bones(override)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    ((arm, mesh),) = imported_tracks(body_model, [range(0, 20)], correctives="off")
    arm.data.bones["left_wrist"].name = "hand.L"
    mesh.shape_key_remove(mesh.data.shape_keys.key_blocks["Shape003"])
    heads = [tuple(b.head_local) for b in arm.data.bones]
    mesh.data.shape_keys.key_blocks["Shape000"].value = 1.5
    lacks = r"Cannot refit 'P0': it lacks the bones left_wrist and the shape keys Shape003 .*import the character again"
    with pytest.raises(VibeError, match=lacks):
        refit_bones(arm)
    assert [tuple(b.head_local) for b in arm.data.bones] == heads and len(arm.data.bones) == 24


def test_refit_from_pose_mode_leaves_the_armature_in_pose_mode(empty_scene, reference_dir, body_model):
    """Before: the refit left an armature it was run on in Pose Mode in Object Mode."""
    ((arm, mesh), _) = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="POSE")
    _set_betas(mesh, np.full(10, 0.5))
    refit_bones(arm)
    assert bpy.context.view_layer.objects.active == arm and arm.mode == "POSE"
    J = body_model.joints_rest(np.full(10, 0.5))
    np.testing.assert_allclose(arm.data.bones["left_knee"].head_local, [J[4, 0], -J[4, 2], J[4, 1]], atol=1e-6)
