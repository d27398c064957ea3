"""The character: bones, names, shape keys, correctives, and re-fitting bones to a new shape."""

import bpy
import numpy as np
import pytest
from blender_eval import evaluated_joints, evaluated_vertices

from vibe_blender.animation import refit_bones
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
    with pytest.raises(Exception, match="correctives"):
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
