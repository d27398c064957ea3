"""Export round trips: FBX, BVH and glTF written, read back, world joint positions per frame agree."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy")

from characters import imported_tracks  # noqa: E402
from mathutils import Matrix  # noqa: E402

from vibe_blender import keyframes  # noqa: E402
from vibe_blender.core.errors import VibeError  # noqa: E402
from vibe_blender.core.smpl_model import JOINT_NAMES  # noqa: E402
from vibe_blender.export import FBX_PRESETS, export, export_bvh, export_fbx, export_gltf, staged_export  # noqa: E402
from vibe_blender.visibility import shown  # noqa: E402

_spec = importlib.util.spec_from_file_location("retarget_rigs", Path(__file__).with_name("retarget_rigs.py"))
rigs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rigs)
T = 30


def reference():
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=T)
    _, heads = rigs.world_bone_axes(source, JOINT_NAMES, frames)
    return source, frames, heads


def imported_heads(frames):
    arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    _, heads = rigs.world_bone_axes(arm, JOINT_NAMES, frames)
    return heads


def test_fbx_round_trip_within_0_1_mm(tmp_path):
    source, frames, heads = reference()
    path = export_fbx(tmp_path / "walk.fbx", [source])
    rigs.reset_scene()
    bpy.ops.import_scene.fbx(
        filepath=str(path), automatic_bone_orientation=False, ignore_leaf_bones=False, anim_offset=0.0
    )  # the importer's default shifts keys by one frame
    err = np.abs(imported_heads(frames) - heads).max()
    print(f"FBX round trip max joint error {err:.2e} m")
    assert err < 1e-4


@pytest.mark.parametrize("preset", ["UNITY", "UNREAL"])
def test_fbx_presets_write_files_that_import(tmp_path, preset):
    source, frames, heads = reference()
    path = export_fbx(tmp_path / f"walk_{preset}.fbx", [source], preset=preset)
    rigs.reset_scene()
    bpy.ops.import_scene.fbx(
        filepath=str(path),
        anim_offset=0.0,
        ignore_leaf_bones=False,
        axis_forward=FBX_PRESETS[preset]["axis_forward"],
        axis_up=FBX_PRESETS[preset]["axis_up"],
    )
    err = np.abs(imported_heads(frames) - heads).max()
    print(f"FBX {preset} round trip max joint error {err:.2e} m")
    assert err < 1e-4
    assert not any(b.name.endswith("_end") for b in bpy.data.armatures[0].bones)  # leaf bones off


def test_bvh_is_z_up_and_round_trips(tmp_path):
    source, frames, heads = reference()
    path = export_bvh(tmp_path / "walk.bvh", source)
    text = path.read_text()
    assert "HIERARCHY" in text and f"Frames: {T}" in text
    rigs.reset_scene()
    # the file is in Blender's axes: import it with up = Z, forward = Y (no conversion)
    bpy.ops.import_anim.bvh(filepath=str(path), axis_forward="Y", axis_up="Z", rotate_mode="NATIVE")
    err = np.abs(imported_heads(frames) - heads).max()
    print(f"BVH round trip max joint error {err:.2e} m")
    assert err < 1e-4
    # a Y-up reader (Blender's importer defaults) sees the character lying down: file y is up there
    rigs.reset_scene()
    bpy.ops.import_anim.bvh(filepath=str(path))
    lying = imported_heads(frames)
    np.testing.assert_allclose(lying, np.stack([heads[..., 0], -heads[..., 2], heads[..., 1]], -1), atol=1e-4)


def test_gltf_writes_a_glb_with_the_animation(tmp_path):
    source, frames, heads = reference()
    path = export_gltf(tmp_path / "walk.glb", [source], fmt="glb")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"glTF"
    rigs.reset_scene()
    bpy.ops.import_scene.gltf(filepath=str(path))
    err = np.abs(imported_heads(frames) - heads).max()
    print(f"glTF round trip max joint error {err:.2e} m")
    assert err < 1e-4


def glb_animations(path) -> list[str]:
    """The animations' names in a .glb (its first chunk is the JSON)."""
    import json
    import struct

    data = path.read_bytes()
    (length,) = struct.unpack_from("<I", data, 12)
    return [a.get("name", "") for a in json.loads(data[20 : 20 + length]).get("animations", [])]


def test_gltf_holds_the_characters_own_motion_only(tmp_path):
    """Every action in the file that fits the rig became a clip of it: another person's motion, the
    rig's kept previous action."""
    source, _, _ = reference()
    other = source.animation_data.action.copy()
    other.name, other.use_fake_user = "Other_person_motion", True
    path = export_gltf(tmp_path / "walk.glb", [source], fmt="glb")
    assert len(glb_animations(path)) == 1, glb_animations(path)


def test_export_errors(tmp_path):
    rigs.reset_scene()
    with pytest.raises(VibeError, match="no armature"):
        export_fbx(tmp_path / "x.fbx")
    with pytest.raises(VibeError, match="Unknown FBX preset"):
        export_fbx(tmp_path / "x.fbx", preset="MAYA")
    with pytest.raises(VibeError, match="Unknown export format"):
        export(tmp_path / "x.abc", "abc")
    with pytest.raises(VibeError, match="no armature"):
        export(tmp_path / "x.bvh", "bvh", [])


def test_command_line_exports_from_a_blend_file(tmp_path):
    reference()
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    root = Path(__file__).resolve().parents[2]
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "vibe_blender.export", *a], cwd=root, capture_output=True, text=True, timeout=120
    )
    done = run(str(blend), "-o", str(tmp_path / "cli.fbx"), "--preset", "unreal", "--object", "SMPL")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli.fbx").stat().st_size > 1000
    bad = run(str(tmp_path / "missing.blend"), "-o", str(tmp_path / "x.fbx"))
    assert bad.returncode == 1 and "does not exist" in bad.stderr
    blend_bytes = blend.read_bytes()
    over_input = run(str(blend), "-o", str(blend), "--format", "glb")
    assert over_input.returncode == 1 and "is the same file as the .blend file" in over_input.stderr
    assert blend.read_bytes() == blend_bytes


def _saved_scene(tmp_path, armatures=1) -> Path:
    """A .blend file holding the walking SMPL armature (and copies of it: SMPL.001, ...)."""
    source, _, _ = reference()
    for _ in range(armatures - 1):
        bpy.context.scene.collection.objects.link(source.copy())
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    return blend


def test_command_line_bvh_without_object_takes_the_only_armature(tmp_path):
    """Before: 'name exactly one armature (got 0)', though no --object means the file's characters."""
    from vibe_blender.export import main

    assert main([str(_saved_scene(tmp_path)), "-o", str(tmp_path / "walk.bvh")]) == 0
    assert (tmp_path / "walk.bvh").read_text().startswith("HIERARCHY")


def test_command_line_bvh_names_the_armatures_to_pick_from(tmp_path, capsys):
    from vibe_blender.export import main

    assert main([str(_saved_scene(tmp_path, armatures=2)), "-o", str(tmp_path / "walk.bvh")]) == 1
    error = capsys.readouterr().err
    assert "2 armatures are in the scene (SMPL, SMPL.001)" in error and "--object" in error
    assert not (tmp_path / "walk.bvh").exists()


@pytest.mark.parametrize("output, got", [("walk", "has no suffix"), ("walk.txt", "ends in '.txt'")])
def test_command_line_says_the_output_needs_a_suffix_or_format(tmp_path, capsys, output, got):
    """Before: "Unknown export format ''", naming neither the suffixes nor --format."""
    from vibe_blender.export import main

    assert main([str(_saved_scene(tmp_path)), "-o", str(tmp_path / output)]) == 1
    error = capsys.readouterr().err
    assert got in error and "end it in .fbx, .bvh, .glb, .gltf, or give --format" in error


def test_command_line_takes_the_add_ons_fbx_presets_and_says_what_each_is_for(tmp_path, capsys):
    """Before: the add-on's (and the docs') "Blender" preset was "default" on the command line, and its
    help said only "FBX only"."""
    from vibe_blender.export import main
    from vibe_blender.retarget_settings import FBX_ITEMS

    assert main([str(_saved_scene(tmp_path)), "-o", str(tmp_path / "walk.fbx"), "--preset", "blender"]) == 0
    # the earlier name still works: scripts written for it go on
    assert main([str(tmp_path / "scene.blend"), "-o", str(tmp_path / "old.fbx"), "--preset", "default"]) == 0
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "{blender,unity,unreal,default}" in help_text and "; default: blender" in help_text
    for _, name, use in FBX_ITEMS:
        assert f"{name.lower()} ({use})" in help_text
    with pytest.raises(SystemExit) as exit_status:  # a usage error, as the docs say
        main([str(tmp_path / "scene.blend"), "-o", str(tmp_path / "walk.fbx"), "--preset", "maya"])
    assert exit_status.value.code == 2 and "invalid choice: 'maya'" in capsys.readouterr().err


def _read_back(path):
    """Object names of a fresh scene holding the FBX or glTF file at ``path``."""
    rigs.reset_scene()
    if path.suffix == ".fbx":
        bpy.ops.import_scene.fbx(filepath=str(path))
    else:
        bpy.ops.import_scene.gltf(filepath=str(path))
    return {o.name for o in bpy.data.objects if o.type in ("ARMATURE", "MESH")}


def _visibility_state(objects):
    state = [(o.name, o.hide_get(), o.hide_viewport, o.hide_render, o.hide_select, o.select_get()) for o in objects]
    animation = [o.animation_data for o in objects if o.animation_data and o.animation_data.action]
    mutes = [f.mute for a in animation for f in keyframes.channels_of(a.id_data).fcurves]
    return state, mutes, bpy.context.view_layer.objects.active


@pytest.mark.parametrize("suffix", [".fbx", ".glb"])
def test_every_body_is_exported_whatever_its_visibility_at_the_current_frame(empty_scene, body_model, tmp_path, suffix):
    """At frame 1 the second person has not been seen yet (the body is hidden by its keys) and the
    user hid the first one's armature: both characters are still written whole, and put back as they were."""
    (a, a_body), (b, b_body) = imported_tracks(body_model, [range(0, 20), range(30, 50)], correctives="off")
    empty_scene.frame_set(1)
    a.hide_set(True)
    b.select_set(True)
    assert b_body.hide_viewport and b_body.hide_render
    before = _visibility_state([a, a_body, b, b_body])
    path = export(tmp_path / f"both{suffix}", suffix[1:])
    assert _visibility_state([a, a_body, b, b_body]) == before
    assert {"P0", "P0_body", "P1", "P1_body"} <= _read_back(path)


@pytest.mark.parametrize("suffix", [".fbx", ".glb"])
def test_the_exporters_leave_the_bodies_as_they_were(empty_scene, body_model, tmp_path, suffix):
    """Blender's glTF exporter runs Mesh.validate() on each mesh it writes, which deletes faces it finds
    invalid: the placeholder body's repeated faces (576) were deleted from the character in the scene."""
    (_, body), *_ = imported_tracks(body_model, [range(0, 20)], correctives="off")
    before = (len(body.data.polygons), len(body.data.loops), len(body.data.vertices))
    export(tmp_path / f"p0{suffix}", suffix[1:])
    assert (len(body.data.polygons), len(body.data.loops), len(body.data.vertices)) == before == (13776, 41328, 6890)


def test_shown_puts_everything_back_when_the_export_fails(empty_scene, body_model):
    ((a, body),) = imported_tracks(body_model, [range(30, 50)], correctives="off")
    collection = a.users_collection[0]
    layer_collection = bpy.context.view_layer.layer_collection.children[collection.name]
    layer_collection.hide_viewport = collection.hide_select = True
    empty_scene.frame_set(1)
    before = _visibility_state([a, body]), layer_collection.hide_viewport, collection.hide_select
    with pytest.raises(RuntimeError, match="exporter failed"):
        with shown([a, body]):
            assert body.visible_get() and a.visible_get()
            empty_scene.frame_set(2)  # the exporter steps through frames: the keys must not hide the body
            assert body.visible_get()
            raise RuntimeError("exporter failed")
    assert (_visibility_state([a, body]), layer_collection.hide_viewport, collection.hide_select) == before


def test_characters_in_an_excluded_collection_are_named_not_a_traceback(empty_scene, body_model, tmp_path):
    (a, a_body), (b, b_body) = imported_tracks(body_model, [range(0, 20), range(30, 50)], correctives="off")
    stash = bpy.data.collections.new("Stash")
    empty_scene.collection.children.link(stash)
    for obj in (b, b_body):
        for collection in obj.users_collection:
            collection.objects.unlink(obj)
        stash.objects.link(obj)
    bpy.context.view_layer.layer_collection.children["Stash"].exclude = True
    messages = []
    path = export_fbx(tmp_path / "seen.fbx", report=messages.append)
    assert messages == [
        "Left out P1, P1_body: in collections excluded from the view layer (include them with the "
        "checkbox in the Outliner to export them)."
    ]
    assert _read_back(path) == {"P0", "P0_body"}


@pytest.mark.parametrize("fmt", ["fbx", "bvh", "glb"])
def test_a_file_the_exporter_cannot_write_is_one_sentence_not_a_traceback(fmt):
    """Before: Blender's exporter raised its RuntimeError (a traceback) for a file it could not write."""
    source, _, _ = reference()
    path = Path(f"/proc/vibe_export_test.{fmt}")  # no file can be made in /proc, not even by root
    with pytest.raises(VibeError, match=r"^Blender's .* exporter could not write '/proc/vibe_export_test.*choose"):
        export(path, fmt, [source])


@pytest.mark.parametrize("fmt", ["fbx", "bvh", "glb"])
def test_a_failed_export_leaves_the_earlier_file_whole(tmp_path, fmt):
    """The exporters wrote straight onto the file: a full disk left a cut-off file where a good one was."""
    source, _, _ = reference()
    path = export(tmp_path / f"walk.{fmt}", fmt, [source])
    earlier = path.read_bytes()
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file: not the private mode of a temp file

    def full_disk_halfway(filepath, **options):  # as an exporter meets a full disk
        Path(filepath).write_bytes(earlier[: len(earlier) // 3])
        raise RuntimeError("Error: [Errno 28] No space left on device")

    with pytest.raises(VibeError, match="disk has free space"):
        staged_export(fmt.upper(), path, full_disk_halfway, fmt=fmt)
    assert path.read_bytes() == earlier and sorted(p.name for p in tmp_path.iterdir()) == [path.name]

    def interrupted(filepath, **options):  # Ctrl-C inside the exporter's Python, as Blender reports it
        Path(filepath).write_bytes(b"half")
        raise RuntimeError("Error: Python: Traceback (most recent call last):\n  ...\nKeyboardInterrupt\n")

    with pytest.raises(KeyboardInterrupt):
        staged_export(fmt.upper(), path, interrupted, fmt=fmt)
    assert path.read_bytes() == earlier and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_failed_export_leaves_no_file_the_exporter_named_after_the_staged_one(tmp_path):
    """Before: only the staged name was removed; the glTF exporter, given a name not ending in its
    suffix, adds it (and writes the .bin beside): a failed export left those hidden files behind."""
    source, _, _ = reference()
    path = export(tmp_path / "walk.fbx", "fbx", [source])
    earlier = path.read_bytes()

    def adds_its_suffix_then_fails(filepath, **options):
        Path(filepath + ".gltf").write_text("{}")
        Path(filepath).with_suffix(".bin").write_bytes(b"data")
        raise RuntimeError("Error: [Errno 28] No space left on device")

    with pytest.raises(VibeError, match="disk has free space"):
        staged_export("glTF", path, adds_its_suffix_then_fails, fmt="fbx")
    assert path.read_bytes() == earlier and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("fmt, magic", [("glb", b"glTF"), ("gltf", b"{"), ("bvh", b"HIERARCHY")])
def test_command_line_writes_the_format_given_under_a_name_that_names_none(tmp_path, fmt, magic):
    """Before: the staged name ended in the output's suffix ('.v2'), to which the glTF exporter added
    its own: 'could not write', and the file it wrote was left behind, hidden."""
    from vibe_blender.export import main

    blend = _saved_scene(tmp_path)
    assert main([str(blend), "-o", str(tmp_path / "take.v2"), "--format", fmt]) == 0
    assert (tmp_path / "take.v2").read_bytes().startswith(magic)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(["scene.blend", "take.v2", *(["take.v2.bin"] if fmt == "gltf" else [])])


@pytest.mark.parametrize("output, fmt", [("x.fbx", "glb"), ("y.fbx", "bvh"), ("z.glb", "gltf"), ("w.BVH", "fbx")])
def test_command_line_refuses_a_format_the_outputs_suffix_does_not_name(tmp_path, capsys, output, fmt):
    """Before: '-o x.fbx --format glb' failed with a false 'check that the folder is writable' and left
    the glTF exporter's hidden files; '-o y.fbx --format bvh' wrote a BVH named y.fbx."""
    from vibe_blender.export import main

    blend = _saved_scene(tmp_path)
    with pytest.raises(SystemExit) as exit_status:  # a usage error, as a flag it does not offer
        main([str(blend), "-o", str(tmp_path / output), "--format", fmt])
    error = capsys.readouterr().err
    assert exit_status.value.code == 2 and f"argument --format: {fmt} does not match the output" in error
    assert f"end the output in .{fmt}, or leave --format out" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.blend"]


def test_a_gltf_comes_with_its_bin_and_never_replaces_a_bin_of_the_users(tmp_path):
    source, _, _ = reference()
    path = export_gltf(tmp_path / "walk.gltf", [source], fmt="gltf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.bin", "walk.gltf"]
    assert '"uri":"walk.bin"' in path.read_text().replace(" ", "")
    export_gltf(path, [source], fmt="gltf")  # its own pair again: replaced
    theirs = tmp_path / "other" / "scene.bin"
    theirs.parent.mkdir()
    theirs.write_bytes(b"the user's own data")
    with pytest.raises(VibeError, match=r"writes 'scene.bin' beside it, and .*scene.bin' is already there"):
        export_gltf(theirs.with_suffix(".gltf"), [source], fmt="gltf")
    assert theirs.read_bytes() == b"the user's own data" and sorted(p.name for p in theirs.parent.iterdir()) == [
        "scene.bin"
    ]


def test_command_line_names_a_file_that_is_not_a_blend_file(tmp_path):
    not_blend = tmp_path / "notes.blend"
    not_blend.write_text("not a blend file")
    done = subprocess.run(
        [sys.executable, "-m", "vibe_blender.export", str(not_blend), "-o", str(tmp_path / "x.glb")],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"error: Blender cannot open '{not_blend}': it is not a .blend file" in done.stderr


def test_fbx_keeps_keys_moved_past_the_end_of_the_scene(tmp_path):
    """Before: the FBX exporter baked the scene's frames 1..30 only, and an Offset of +20 lost the last 20."""
    from vibe_blender.cleanup_ops import trim_and_offset

    source, frames, heads = reference()
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, T
    assert trim_and_offset(source, offset=20) == T
    path = export_fbx(tmp_path / "offset.fbx", [source])
    assert (scene.frame_start, scene.frame_end) == (1, T)  # put back
    rigs.reset_scene()
    bpy.ops.import_scene.fbx(
        filepath=str(path), automatic_bone_orientation=False, ignore_leaf_bones=False, anim_offset=0.0
    )
    arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    assert arm.animation_data.action.frame_range[1] == T + 20.0  # the scene's frames 1..20 are in it too
    np.testing.assert_allclose(imported_heads(np.asarray(frames) + 20), heads, atol=1e-4)


def test_fbx_export_says_keys_before_frame_0_are_left_out(tmp_path):
    """A scene cannot start before frame 0: a negative Offset's first keys were lost without a word."""
    from vibe_blender.cleanup_ops import trim_and_offset

    source, _, _ = reference()
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, T
    trim_and_offset(source, offset=-10)
    said = []
    export_fbx(tmp_path / "early.fbx", [source], report=said.append)
    assert any("Keys before frame 0 (from frame -9) are not in the FBX" in line for line in said), said
    assert (scene.frame_start, scene.frame_end) == (1, T)


def _bvh_channels(text: str) -> dict:
    """Each joint's CHANNELS line in a BVH's hierarchy: {name: ['Xposition', ...]}."""
    found = re.findall(r"(?:ROOT|JOINT) (\S+)\s*\{\s*OFFSET[^\n]*\n\s*CHANNELS \d+ ([^\n]*)", text)
    return {name: channels.split() for name, channels in found}


def test_bvh_keeps_the_hips_travel_under_a_root_bone(tmp_path):
    """Before: only the top bone had position channels, and the retarget keys the root motion on the
    hips, which hang from a UE / Rigify `root` bone: the BVH walked in place (1.2 m of travel lost)."""
    from vibe_blender.core.retarget_map import PRESETS
    from vibe_blender.retarget import retarget

    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=T)
    target = rigs.target_rig("UE", PRESETS["UE5_MANNEQUIN"], root_bone="root")
    retarget(source, target, dict(PRESETS["UE5_MANNEQUIN"]), lock_feet=False)
    _, want = rigs.world_bone_axes(target, ["pelvis"], frames)
    path = export_bvh(tmp_path / "ue.bvh", target)
    channels = _bvh_channels(path.read_text())
    assert channels["pelvis"][:3] == ["Xposition", "Yposition", "Zposition"], channels["pelvis"]
    rigs.reset_scene()
    bpy.ops.import_anim.bvh(filepath=str(path), axis_forward="Y", axis_up="Z", rotate_mode="NATIVE")
    arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    _, got = rigs.world_bone_axes(arm, ["pelvis"], frames)
    assert np.linalg.norm(want[-1, 0] - want[0, 0]) > 0.5  # the walk travels
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("suffix", [".fbx", ".glb"])
def test_meshes_the_rig_deforms_come_along_parented_or_not(tmp_path, suffix):
    """Before: only the rig's direct children were exported: a body deformed by the rig's Armature
    modifier but not parented to it, and a mesh under an Empty child of the rig, were left out
    without a word."""
    source, _, _ = reference()

    def mesh(name, parent=None):
        bpy.ops.mesh.primitive_cube_add(size=0.2)
        obj = bpy.context.object
        obj.name, obj.parent = name, parent
        obj.modifiers.new("Armature", "ARMATURE").object = source
        return obj

    mesh("Body_modifier_only")
    holder = bpy.data.objects.new("Meshes", None)
    bpy.context.scene.collection.objects.link(holder)
    holder.parent = source
    mesh("Cloth_under_empty", holder)
    mesh("Parented", source)
    bpy.ops.mesh.primitive_cube_add(size=0.2)
    bpy.context.object.name = "Unrelated"
    path = export(tmp_path / f"rig{suffix}", suffix[1:], [source])
    read_back = _read_back(path)
    assert {"Body_modifier_only", "Cloth_under_empty", "Parented"} <= read_back and "Unrelated" not in read_back


def test_bvh_says_the_object_transform_is_left_out(tmp_path):
    """Blender's BVH writer uses the armature's own space: a rig imported from FBX (turned 90° about X,
    scale 0.01) is written Y up in centimetres. Before: nothing said so, and the docs said "Z up"."""
    from vibe_blender.core.retarget_map import PRESETS

    rigs.reset_scene()
    fbx_like = np.diag([0.01, 0.01, 0.01, 1.0]) @ np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])
    rig = rigs.target_rig("Rig", PRESETS["MIXAMO"], matrix_world=fbx_like)
    said = []
    path = export(tmp_path / "fbx_like.bvh", "bvh", [rig], report=said.append)
    assert len(said) == 1 and "'Rig' is moved, turned or scaled" in said[0] and "centimetres" in said[0], said
    offset = re.search(r"ROOT \S+\s*\{\s*OFFSET ([^\n]*)", path.read_text()).group(1)
    hips = np.array(rig.data.bones[PRESETS["MIXAMO"]["pelvis"]].head_local)
    np.testing.assert_allclose([float(v) for v in offset.split()], hips, atol=1e-3)  # armature space
    assert hips[1] > 80  # Y up, centimetres
    # an armature with no object transform is written as the scene shows it, without a word
    said.clear()
    rig.matrix_world = Matrix.Identity(4)
    export(tmp_path / "plain.bvh", "bvh", [rig], report=said.append)
    assert said == []
