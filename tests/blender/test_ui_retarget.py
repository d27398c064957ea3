"""The Retarget / Clean Up / Export operators and panels register and drive the workflow end to end."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy")

from vibe_blender import retarget_operators, retarget_panels, retarget_settings  # noqa: E402
from vibe_blender.core.retarget_map import PRESETS  # noqa: E402

_spec = importlib.util.spec_from_file_location("retarget_rigs", Path(__file__).with_name("retarget_rigs.py"))
rigs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rigs)


@pytest.fixture
def registered():
    rigs.reset_scene()
    modules = (retarget_settings, retarget_operators, retarget_panels)
    for module in modules:
        module.register()
    yield bpy.context.scene.vibe_retarget
    for module in reversed(modules):
        module.unregister()


def test_workflow_through_the_operators(registered, tmp_path):
    s = registered
    source, frames, _ = rigs.smpl_source(T=40)
    target = rigs.target_rig("Mixamo", PRESETS["MIXAMO"], a_pose_deg=40, roll_seed=5)
    s.source, s.target = source, target
    assert bpy.ops.vibe_mocap.fill_bone_map() == {"FINISHED"}
    assert {r.joint: r.bone for r in s.rows}["left_knee"] == "mixamorig:LeftLeg"
    assert s.map_summary.startswith("22 of 22 body joints mapped from Mixamo") and s.map_missing == ""
    assert bpy.ops.vibe_mocap.save_bone_map(filepath=str(tmp_path / "mixamo.json")) == {"FINISHED"}
    s.rows.clear()
    assert bpy.ops.vibe_mocap.load_bone_map(filepath=str(tmp_path / "mixamo.json")) == {"FINISHED"}
    assert len(retarget_settings.current_map(bpy.context)) == len(PRESETS["MIXAMO"])
    assert bpy.ops.vibe_mocap.retarget() == {"FINISHED"}
    assert target.animation_data.action is not None

    # clean-up works on the selected character(s)
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj == source)
    bpy.context.view_layer.objects.active = source
    assert bpy.ops.vibe_mocap.measure_motion() == {"FINISHED"}
    assert s.slide_before_mm >= 0 and s.slide_after_mm == -1.0
    assert bpy.ops.vibe_mocap.clean_up() == {"FINISHED"}
    assert s.jitter_after >= 0 and s.slide_after_mm >= 0
    s.trim, s.trim_start, s.trim_end, s.frame_offset = True, 5, 30, 10
    assert bpy.ops.vibe_mocap.trim_offset() == {"FINISHED"}
    from vibe_blender.cleanup_ops import read_motion

    assert read_motion(source)[0][[0, -1]].tolist() == [15.0, 40.0]

    out = tmp_path / "walk.bvh"
    assert bpy.ops.vibe_mocap.export(filepath=str(out), export_format="bvh") == {"FINISHED"}
    assert out.is_file()
    # panels draw without errors is checked by Blender only with a UI; here: they are registered
    assert hasattr(bpy.types, "VIEW3D_PT_vibe_retarget") and hasattr(bpy.types, "VIEW3D_PT_vibe_cleanup")


def test_the_exported_file_takes_the_extension_of_the_format_picked(registered, tmp_path):
    """Before: switching the Format in the file browser left the path's first extension (walk.fbx),
    and Export appended the new one, writing walk.fbx.bvh."""
    browser = SimpleNamespace(filepath=str(tmp_path / "walk.fbx"), filename_ext=".fbx", check_extension=True)
    browser.export_format = "bvh"  # switched in the browser's sidebar; it then calls check
    assert retarget_operators.VIBE_OT_export.check(browser, bpy.context)
    assert browser.filepath == str(tmp_path / "walk.bvh")
    rigs.smpl_source(T=5)
    assert bpy.ops.vibe_mocap.export(filepath=str(tmp_path / "run.fbx"), export_format="bvh") == {"FINISHED"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.bvh"]
    from vibe_blender.export import with_format_suffix

    assert with_format_suffix("a/walk.GLB", "fbx") == "a/walk.fbx"
    assert with_format_suffix("a/walk.BVH", "bvh") == "a/walk.BVH"  # already right: kept as typed
    assert with_format_suffix("a/take.v2", "bvh") == "a/take.v2.bvh"  # not a format's: kept


def test_operators_report_errors(registered):
    with pytest.raises(RuntimeError, match="Pick the source character"):
        bpy.ops.vibe_mocap.retarget()
    with pytest.raises(RuntimeError, match="Pick the target armature"):
        bpy.ops.vibe_mocap.fill_bone_map()
    source, _, _ = rigs.smpl_source(T=10)
    target = rigs.target_rig("UE", PRESETS["UE5_MANNEQUIN"])
    registered.source, registered.target = source, target
    registered.rows.clear()
    with pytest.raises(RuntimeError, match="no bone for 'pelvis'"):
        bpy.ops.vibe_mocap.retarget()


def test_a_map_naming_a_bone_blender_cannot_hold_leaves_the_rows_as_they_were(registered, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "vibe-retarget-map", "version": 1, "bones": {"pelvis": "\\ud800"}}')
    retarget_settings.fill_rows(bpy.context, PRESETS["MIXAMO"])
    with pytest.raises(RuntimeError, match="cannot be a Blender bone's name"):
        bpy.ops.vibe_mocap.load_bone_map(filepath=str(bad))
    assert retarget_settings.current_map(bpy.context) == {j: b for j, b in PRESETS["MIXAMO"].items() if b}


def test_a_loaded_map_is_checked_against_the_target_and_another_target_forgets_the_summary(registered, tmp_path):
    """Before: Load left the last Fill's '22 of 22 ... Mixamo' (a check mark) over a map made for another
    rig, whose missing bones surfaced only at Retarget."""
    s = registered
    s.target = rigs.target_rig("Mixamo", PRESETS["MIXAMO"])
    assert bpy.ops.vibe_mocap.fill_bone_map() == {"FINISHED"} and s.map_missing == ""
    ue5_map = tmp_path / "ue5.json"
    from vibe_blender.core.retarget_map import save_map

    save_map(ue5_map, PRESETS["UE5_MANNEQUIN"])
    assert bpy.ops.vibe_mocap.load_bone_map(filepath=str(ue5_map)) == {"FINISHED"}
    assert s.map_summary.startswith("0 of 22 body joints mapped from the saved map 'ue5'")
    assert s.map_missing.startswith("pelvis, ")
    s.target = rigs.target_rig("UE", PRESETS["UE5_MANNEQUIN"])
    assert s.map_summary == s.map_missing == ""  # it held for the other rig
    assert bpy.ops.vibe_mocap.load_bone_map(filepath=str(ue5_map)) == {"FINISHED"}
    assert s.map_summary.startswith("22 of 22 body joints mapped from the saved map 'ue5'") and s.map_missing == ""


def test_incomplete_map_shows_the_missing_joints_and_the_foot_lock_toggle(registered):
    """A custom rig whose neck and right elbow have meaningless names: Fill maps the rest and names the
    missing joints; the user picks the elbow in the list and Retarget runs, with and without the lock."""
    s = registered
    source, _, _ = rigs.smpl_source(T=30)
    names = {j: f"{j}_jnt" for j in PRESETS["SMPL"] if not j.endswith("_hand")}
    names["neck"], names["right_elbow"] = "bone_12", "bone_17"
    s.source, s.target = source, rigs.target_rig("Custom", names, leg_scale=1.1, roll_seed=3)
    assert bpy.ops.vibe_mocap.fill_bone_map() == {"FINISHED"}
    assert s.map_missing == "neck, right_elbow" and "20 of 22" in s.map_summary
    next(r for r in s.rows if r.joint == "right_elbow").bone = "bone_17"
    s.lock_target_feet = False
    assert bpy.ops.vibe_mocap.retarget() == {"FINISHED"}
    unlocked = s.target.animation_data.action
    s.lock_target_feet = True
    assert bpy.ops.vibe_mocap.retarget() == {"FINISHED"}
    assert s.target.animation_data.action != unlocked


def test_a_selection_of_bodies_and_other_rigs_works_on_the_characters(registered, body_model, tmp_path):
    """Select All, then Clean Up: a rig beside the characters stopped it ("not an animated SMPL
    character"). Export with a body selected: the body was ignored, so a BVH had no skeleton and a
    glTF held every character."""
    import json
    import struct

    from characters import imported_tracks

    (p0, p0_body), (p1, _) = imported_tracks(body_model, [range(0, 30), range(0, 30)])
    rig = rigs.target_rig("Mixamo", PRESETS["MIXAMO"])
    registered.lock_feet = False  # these characters stand in random poses: no foot contact
    for obj in bpy.context.view_layer.objects:
        obj.select_set(True)
    assert bpy.ops.vibe_mocap.clean_up() == {"FINISHED"}
    assert rig.animation_data is None or rig.animation_data.action is None  # the rig was left alone

    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj == p0_body)
    assert bpy.ops.vibe_mocap.export(filepath=str(tmp_path / "p0.bvh"), export_format="bvh") == {"FINISHED"}
    assert (tmp_path / "p0.bvh").read_text().count("ROOT") == 1
    assert bpy.ops.vibe_mocap.export(filepath=str(tmp_path / "p0.glb"), export_format="glb") == {"FINISHED"}
    data = (tmp_path / "p0.glb").read_bytes()
    nodes = [n["name"] for n in json.loads(data[20 : 20 + struct.unpack_from("<I", data, 12)[0]])["nodes"]]
    assert p0.name in nodes and p1.name not in nodes, nodes


def test_every_operator_reports_errors_through_the_one_helper():
    """Every operator class of the add-on, in whichever module it is."""
    import importlib
    import pkgutil

    import vibe_blender

    found = []
    for info in pkgutil.iter_modules(vibe_blender.__path__):
        module = importlib.import_module(f"vibe_blender.{info.name}")
        for cls in vars(module).values():
            if isinstance(cls, type) and issubclass(cls, bpy.types.Operator) and cls.__module__ == module.__name__:
                found.append(cls)
                assert getattr(cls.execute, "__wrapped__", None) is not None, cls.__name__
    assert {c.__module__.rsplit(".", 1)[1] for c in found} >= {
        "operators",
        "retarget_operators",
        "live_operators",
        "server_operators",
    }


def test_retarget_reports_what_sets_mapped_bones_over_their_keys_as_a_warning(registered, capfd):
    """Before: the operator reported plain success while a driver held a spine bone off the motion."""
    s = registered
    s.source, _, _ = rigs.smpl_source(T=10)
    s.target = rigs.target_rig("UE", PRESETS["UE5_MANNEQUIN"])
    retarget_settings.fill_rows(bpy.context, PRESETS["UE5_MANNEQUIN"])
    s.target.pose.bones["spine_03"].driver_add("rotation_quaternion", 1).driver.expression = "0.3"
    capfd.readouterr()
    assert bpy.ops.vibe_mocap.retarget() == {"FINISHED"}
    printed = "".join(capfd.readouterr())  # Blender prints the reports of an operator run without a window
    assert "Warning: Retargeted 22 bones" in printed
    assert "'spine_03' (driver on rotation_quaternion[1]); mute those" in printed
