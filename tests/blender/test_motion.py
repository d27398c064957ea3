"""Motion: bulk keys on 4.2's and 5.x's action APIs, continuity, gaps, fps, camera, other formats."""

import dataclasses
import os
import sys

import bpy
import numpy as np
import pytest
from blender_eval import evaluated_joints, evaluated_vertices

from vibe_blender import keyframes
from vibe_blender.animation import animate_character
from vibe_blender.core.errors import VibeError
from vibe_blender.core.motion import ground_offset
from vibe_blender.core.readers import read_motion_file
from vibe_blender.importer import ImportOptions, import_motion, import_motion_file

pytestmark = pytest.mark.blender
REAL_VIDEO = "asl-walk.mkv"


@pytest.fixture
def imported(empty_scene, reference_dir, body_model):
    return import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())


def _rotation_curves(armature_obj, bone):
    channels = keyframes.channels_of(armature_obj)
    return np.stack(
        [keyframes.read_fcurve(channels, f'pose.bones["{bone}"].rotation_quaternion', c)[1] for c in range(4)], -1
    )


def test_action_layout_matches_the_blender_version(imported):
    armature_obj, _ = imported[0]
    action = armature_obj.animation_data.action
    if bpy.app.version >= (4, 4, 0):
        assert armature_obj.animation_data.action_slot is not None and len(action.layers) == 1
        if bpy.app.version >= (5, 0, 0):
            assert not hasattr(action, "fcurves")  # removed in 5.0
    else:
        assert len(action.fcurves) == 24 * 4 + 3
    channels = keyframes.channels_of(armature_obj)
    assert len(channels.fcurves) == 24 * 4 + 3
    assert {g.name for g in channels.groups} == {b.name for b in armature_obj.data.bones}


def test_keys_are_at_video_frames_with_sign_continuity(imported):
    arm2, _ = imported[1]
    channels = keyframes.channels_of(arm2)
    frames, _ = keyframes.read_fcurve(channels, 'pose.bones["pelvis"].rotation_quaternion', 0)
    np.testing.assert_array_equal(frames, [1, 2, 3, 7, 8, 9])  # frame ids 0 1 2 6 7 8, +1
    for bone in ("pelvis", "left_knee", "right_wrist"):
        q = _rotation_curves(arm2, bone)
        assert np.all(np.sum(q[1:] * q[:-1], -1) >= 0)


def test_gaps_hold_and_hide_instead_of_sliding(imported, empty_scene):
    arm2, mesh2 = imported[1]
    fcurve = keyframes.channels_of(arm2).fcurves.find('pose.bones["pelvis"].rotation_quaternion', index=0)
    assert [k.interpolation for k in fcurve.keyframe_points] == [
        "LINEAR",
        "LINEAR",
        "CONSTANT",
        "LINEAR",
        "LINEAR",
        "LINEAR",
    ]
    empty_scene.frame_set(3)
    last_seen = evaluated_joints(arm2)
    assert not mesh2.hide_render and not mesh2.hide_viewport
    for frame in (4, 5, 6):  # no detection here
        empty_scene.frame_set(frame)
        assert mesh2.hide_render and mesh2.hide_viewport
        np.testing.assert_allclose(evaluated_joints(arm2), last_seen, atol=1e-6)
    empty_scene.frame_set(7)
    assert not mesh2.hide_render
    mesh1 = imported[0][1]  # frames 0-4 of a 10-frame video
    empty_scene.frame_set(5)
    assert not mesh1.hide_render
    empty_scene.frame_set(6)
    assert mesh1.hide_render and mesh1.hide_viewport  # gone after the track ends


def test_a_track_seen_in_every_frame_is_never_hidden(empty_scene, reference_dir, body_model):
    ((_, mesh_obj),) = import_motion_file(reference_dir / "amass.npz", body_model, ImportOptions())
    assert mesh_obj.animation_data is None


def test_scene_fps_frame_range_and_camera(imported, empty_scene, reference_dir, body_model):
    render = empty_scene.render
    assert render.fps == 30 and render.fps / render.fps_base == pytest.approx(29.97)  # the video's rate
    assert (empty_scene.frame_start, empty_scene.frame_end) == (1, 10)
    camera = empty_scene.camera
    assert camera is not None and camera.type == "CAMERA"
    assert (render.resolution_x, render.resolution_y) == (640, 480)
    assert camera.data.lens == pytest.approx(600.0 / 640 * 36)  # focal 600 px on a 640 px image
    np.testing.assert_allclose(np.array(camera.matrix_world)[:3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-6)
    # The camera sits where the video's camera was: above the floor (z = 0) that the lowest feet touch.
    motion = read_motion_file(reference_dir / "result.npz")
    offset = ground_offset(body_model, motion.tracks)
    np.testing.assert_allclose(camera.location, offset, atol=1e-6)
    assert offset[2] > 0.5
    lowest = []
    for (_, mesh_obj), track in zip(imported, motion.tracks):
        for frame_id in track.frame_ids:
            empty_scene.frame_set(int(frame_id) + 1)
            lowest.append(evaluated_vertices(mesh_obj)[:, 2].min())
    assert min(lowest) < 1e-5  # someone touches the floor


def test_video_background(empty_scene, reference_dir, body_model, real_data_dir):
    import_motion_file(
        reference_dir / "result.npz", body_model, ImportOptions(video_path=str(real_data_dir / REAL_VIDEO))
    )
    camera = empty_scene.camera.data
    assert camera.show_background_images and len(camera.background_images) == 1
    clip = camera.background_images[0].clip
    assert clip is not None and clip.size[0] > 0 and clip.frame_duration > 1


def test_in_place_root_motion(empty_scene, reference_dir, body_model):
    characters = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions(root_motion="in_place"))
    for frame in (1, 3, 5):
        empty_scene.frame_set(frame)
        np.testing.assert_allclose(evaluated_joints(characters[0][0])[0, :2], 0.0, atol=1e-6)


def test_official_pkl_import(empty_scene, body_model, official_pkl):
    ((armature_obj, mesh_obj),) = import_motion_file(official_pkl, body_model, ImportOptions(fps=25))
    assert armature_obj.name == "track_1"
    assert (empty_scene.frame_start, empty_scene.frame_end, empty_scene.render.fps) == (1, 32, 25)
    assert (empty_scene.render.resolution_x, empty_scene.render.resolution_y) == (256, 192)
    q = _rotation_curves(armature_obj, "pelvis")
    assert q.shape == (32, 4) and np.all(np.isfinite(q))


def test_a_file_whose_name_is_not_utf8_imports_under_a_name_blender_holds(
    empty_scene, body_model, official_pkl, tmp_path
):
    """The name reaches Python with lone surrogates, which Blender's names refused halfway through."""
    named = tmp_path / os.fsdecode(b"take\xff.pkl")
    named.write_bytes(official_pkl.read_bytes())
    ((armature_obj, _),) = import_motion_file(named, body_model, ImportOptions(fps=25))
    assert armature_obj.users_collection[0].name == "Mocap take "


def test_a_file_with_more_people_than_max_characters_imports_the_longest(empty_scene, reference_dir, body_model):
    motion = read_motion_file(reference_dir / "result.npz")
    base = motion.tracks[0]  # 5 frames
    motion.tracks = [  # four people seen in 2, 5, 3 and 5 frames
        dataclasses.replace(
            base, name=f"person_{i}", frame_ids=base.frame_ids[:n], pose=base.pose[:n], trans_m=base.trans_m[:n]
        )
        for i, n in enumerate((2, 5, 3, 5))
    ]
    messages = []
    characters = import_motion(motion, body_model, ImportOptions(max_characters=2), report=messages.append)
    assert [armature.name for armature, _ in characters] == ["person_1", "person_3"]
    assert "holds 4 people; importing the 2 seen in the most frames" in messages[0]
    assert "person_0" not in bpy.data.objects and "person_2" not in bpy.data.objects
    with pytest.raises(VibeError, match="Max characters must be at least 1"):
        import_motion(motion, body_model, ImportOptions(max_characters=0))


def test_motion_past_blenders_timeline_or_memory_is_refused_before_anything_is_built(
    empty_scene, reference_dir, body_model
):
    from vibe_blender.importer import BLENDER_MAX_FRAME, MAX_PERSON_FRAMES

    motion = read_motion_file(reference_dir / "result.npz")
    late = dataclasses.replace(motion.tracks[0], frame_ids=motion.tracks[0].frame_ids + BLENDER_MAX_FRAME)
    objects = len(bpy.data.objects)
    with pytest.raises(VibeError, match="past the end of Blender's timeline"):
        import_motion(dataclasses.replace(motion, tracks=[late], frame_count=2 * BLENDER_MAX_FRAME), body_model)
    T = MAX_PERSON_FRAMES // 2 + 1
    long = dataclasses.replace(
        motion.tracks[0], frame_ids=np.arange(T), pose=np.zeros((T, 72)), trans_m=np.zeros((T, 3))
    )
    with pytest.raises(VibeError, match=f"holds {2 * T:,} frames of motion over 2 people.*Lower 'Max characters'"):
        import_motion(dataclasses.replace(motion, tracks=[long, long], frame_count=T), body_model)
    # one person: fewer characters cannot help, so the message does not suggest it
    T = MAX_PERSON_FRAMES + 1
    alone = dataclasses.replace(
        motion.tracks[0], frame_ids=np.arange(T), pose=np.zeros((T, 72)), trans_m=np.zeros((T, 3))
    )
    with pytest.raises(VibeError, match=f"holds {T:,} frames of motion over 1 person;") as refused:
        import_motion(dataclasses.replace(motion, tracks=[alone], frame_count=T), body_model)
    assert "Max characters" not in str(refused.value)
    assert len(bpy.data.objects) == objects


def test_an_amass_file_longer_than_an_import_takes_is_refused_by_its_reader(
    empty_scene, reference_dir, body_model, monkeypatch
):
    """The import's limit reaches the AMASS reader, which refuses before converting the file's frames."""
    from vibe_blender import importer

    monkeypatch.setattr(importer, "MAX_PERSON_FRAMES", 3)  # the reference clip has 4 frames
    objects = len(bpy.data.objects)
    with pytest.raises(VibeError, match="'amass.npz' holds 4 frames of motion, more than the 3 an import takes"):
        import_motion_file(reference_dir / "amass.npz", body_model, ImportOptions())
    assert len(bpy.data.objects) == objects


def _data_block_counts() -> dict:
    kinds = ("objects", "meshes", "shape_keys", "armatures", "actions", "cameras", "collections", "movieclips")
    return {kind: len(getattr(bpy.data, kind)) for kind in kinds}


def test_an_import_failing_halfway_leaves_no_half_built_characters(empty_scene, reference_dir, body_model, monkeypatch):
    from vibe_blender import importer

    calls = []

    def animate_then_fail(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("out of memory while keying")
        return animate_character(*args, **kwargs)

    bpy.ops.mesh.primitive_cube_add()
    before = _data_block_counts()
    monkeypatch.setattr(importer, "animate_character", animate_then_fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    assert len(calls) == 2  # the first character was built and animated, then removed again
    assert _data_block_counts() == before
    assert [obj.name for obj in bpy.data.objects] == ["Cube"]


def test_an_active_object_hidden_in_edit_mode_does_not_stop_an_import(empty_scene, reference_dir, body_model):
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.object
    bpy.ops.object.mode_set(mode="EDIT")
    cube.hide_viewport = True
    characters = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    assert len(characters) == 2
    assert cube.mode == "OBJECT"  # Blender cannot put a hidden object back in Edit Mode


def test_a_video_longer_than_blenders_timeline_ends_the_scene_at_the_last_motion(
    empty_scene, reference_dir, body_model
):
    from vibe_blender.importer import BLENDER_MAX_FRAME

    motion = read_motion_file(reference_dir / "result.npz")
    import_motion(dataclasses.replace(motion, frame_count=2**31 - 1), body_model, ImportOptions(add_camera=False))
    last = max(int(t.frame_ids[-1]) for t in motion.tracks)
    assert bpy.context.scene.frame_end == 1 + last < BLENDER_MAX_FRAME


def test_a_video_blender_cannot_read_gives_no_background_and_says_so(empty_scene, reference_dir, body_model, tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    messages = []
    options = ImportOptions(video_path=str(tmp_path / "notes.mp4"))
    import_motion_file(reference_dir / "result.npz", body_model, options, report=messages.append)
    assert any("is not a video Blender can read; the camera has no background" in m for m in messages)
    assert not bpy.data.movieclips and not bpy.context.scene.camera.data.background_images


def test_a_video_blender_cannot_read_keeps_the_users_own_clip_of_it(empty_scene, reference_dir, body_model, tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    users_clip = bpy.data.movieclips.load(str(tmp_path / "notes.mp4"))
    users_clip.use_fake_user = True
    options = ImportOptions(video_path=str(tmp_path / "notes.mp4"))
    import_motion_file(reference_dir / "result.npz", body_model, options, report=lambda _: None)
    assert list(bpy.data.movieclips) == [users_clip]
    assert not bpy.context.scene.camera.data.background_images


@pytest.mark.parametrize("given, said", [("clips", "is a folder, not a video file"), ("gone.mp4", "was not found")])
def test_a_video_that_is_no_file_is_named_as_what_it_is(empty_scene, reference_dir, body_model, tmp_path, given, said):
    (tmp_path / "clips").mkdir()
    messages = []
    options = ImportOptions(video_path=str(tmp_path / given))
    import_motion_file(reference_dir / "result.npz", body_model, options, report=messages.append)
    assert f"The video '{tmp_path / given}' {said}; the camera has no background." in messages


def test_keyframe_helper_writes_any_id(empty_scene):
    """The one helper also keys non-armature IDs (shape keys, objects) on every version."""
    empty = bpy.data.objects.new("e", None)
    empty_scene.collection.objects.link(empty)
    channels = keyframes.new_channels(empty, "e_action")
    keyframes.write_fcurve(channels, "location", 2, np.array([1.0, 11.0]), np.array([0.0, 5.0]))
    empty_scene.frame_set(6)
    assert empty.location.z == pytest.approx(2.5)


def test_rewriting_keys_keeps_the_f_curve_with_its_modifiers_and_settings(empty_scene):
    """Before: a rewrite removed the F-curve and made a new one, losing what the user set on it."""
    empty = bpy.data.objects.new("e", None)
    empty_scene.collection.objects.link(empty)
    channels = keyframes.new_channels(empty, "e_action")
    fcurve = keyframes.write_fcurve(channels, "location", 2, np.array([1.0, 11.0]), np.array([0.0, 5.0]), group="Ours")
    fcurve.modifiers.new("CYCLES")  # Cycles must be first in the stack
    limits = fcurve.modifiers.new("LIMITS")
    limits.use_max_y, limits.max_y = True, 4.0
    fcurve.extrapolation, fcurve.color_mode, fcurve.color = "LINEAR", "CUSTOM", (1.0, 0.0, 1.0)
    fcurve.lock = fcurve.mute = fcurve.hide = True
    fcurve.group = channels.groups.new("Mine")
    frames, values = np.array([1.0, 5.0, 21.0]), np.array([0.0, 2.0, 8.0])
    keyframes.rewrite_fcurve(channels, "location", 2, frames, values, group="Ours", interpolation=keyframes.CONSTANT)
    fcurve = channels.fcurves.find("location", index=2)
    assert [m.type for m in fcurve.modifiers] == ["CYCLES", "LIMITS"]
    assert fcurve.modifiers[1].use_max_y and fcurve.modifiers[1].max_y == 4.0
    assert (fcurve.extrapolation, fcurve.color_mode, tuple(fcurve.color)) == ("LINEAR", "CUSTOM", (1.0, 0.0, 1.0))
    assert fcurve.lock and fcurve.mute and fcurve.hide and fcurve.group.name == "Mine"
    assert len(channels.fcurves) == 1
    np.testing.assert_array_equal(keyframes.read_fcurve(channels, "location", 2), (frames, values))
    assert {k.interpolation for k in fcurve.keyframe_points} == {"CONSTANT"}
    assert fcurve.evaluate(21.0) == pytest.approx(4.0)  # the limit still applies to the new keys
    assert fcurve.evaluate(25.0) == pytest.approx(2.0)  # and the cycle repeats them: 25 plays as 5


def test_a_curve_is_sampled_as_blender_plays_it_or_by_its_keys_alone(empty_scene):
    """Keys alone (modifiers muted while sampling) are what a rewrite that keeps the modifiers
    starts from; each modifier's own mute state is given back."""
    empty = bpy.data.objects.new("e", None)
    empty_scene.collection.objects.link(empty)
    channels = keyframes.new_channels(empty, "e_action")
    fcurve = keyframes.write_fcurve(channels, "location", 0, np.array([1.0, 11.0]), np.array([0.0, 10.0]))
    noise = fcurve.modifiers.new("NOISE")
    noise.strength, noise.scale = 2.0, 1.5
    muted_by_user = fcurve.modifiers.new("LIMITS")
    muted_by_user.use_max_y, muted_by_user.max_y, muted_by_user.mute = True, 1.0, True
    frames = np.array([1.0, 3.5, 11.0])
    keys_alone = keyframes.sample_fcurve(channels, "location", 0, frames, through_modifiers=False)
    np.testing.assert_allclose(keys_alone, [0.0, 2.5, 10.0], atol=1e-6)
    played = keyframes.sample_fcurve(channels, "location", 0, frames)
    np.testing.assert_allclose(played, [fcurve.evaluate(f) for f in frames])
    assert np.abs(played - keys_alone).max() > 0.05  # the noise is there when played
    at_keys = keyframes.sample_fcurve(channels, "location", 0, np.array([1.0, 11.0]), through_modifiers=False)
    np.testing.assert_array_equal(at_keys, [0.0, 10.0])
    assert [m.mute for m in fcurve.modifiers] == [False, True]
    assert keyframes.sample_fcurve(channels, "location", 1, frames) is None


def test_which_modifiers_are_baked_by_an_edit_and_dropping_those_baked_in(empty_scene):
    """Every modifier stays but a Cycles (first in the stack) not looping the frames edited, whether
    the keys stay on their frames or move (an Offset moves the modifiers' frames with them). Muted
    ones play no part and stay."""
    empty = bpy.data.objects.new("e", None)
    empty_scene.collection.objects.link(empty)
    channels = keyframes.new_channels(empty, "e_action")
    frames = np.arange(1.0, 21.0)
    loop = keyframes.BAKE_LOOP

    def reason(*types, keys=frames, setup=lambda modifiers: None):
        keyframes.remove_fcurves(channels, "location")
        fcurve = keyframes.write_fcurve(channels, "location", 0, keys, np.zeros(len(keys)))
        for kind in types:
            fcurve.modifiers.new(kind)
        setup(fcurve.modifiers)
        return keyframes.bake_reason(channels, "location", 0, frames)

    def restricted(modifiers):
        modifiers[0].use_restricted_range = True

    assert reason() is reason("LIMITS") is reason("CYCLES", "LIMITS", "LIMITS") is None
    assert reason("CYCLES", keys=np.array([1.0, 7.0, 20.0])) is None
    for kind in ("NOISE", "GENERATOR", "ENVELOPE", "FNGENERATOR", "STEPPED", "LIMITS", "CYCLES"):
        assert reason(kind) is reason(kind, setup=restricted) is None, kind
    assert reason("LIMITS", setup=lambda modifiers: setattr(modifiers[0], "use_max_x", True)) is None
    assert reason("CYCLES", "NOISE") is None
    assert reason("CYCLES", keys=frames[:10]) == reason("CYCLES", "NOISE", keys=frames[5:]) == loop
    assert reason("NOISE", "CYCLES", keys=frames[:10]) is None  # a Cycles not first does not play
    assert reason("CYCLES", keys=frames[:10], setup=lambda modifiers: setattr(modifiers[0], "mute", True)) is None
    assert keyframes.bake_reason(channels, "location", 1, frames) is None  # no such curve
    reason("STEPPED", "NOISE", setup=lambda modifiers: setattr(modifiers[0], "mute", True))
    assert keyframes.drop_modifiers(channels, "location", 0) == 1
    assert [(m.type, m.mute) for m in channels.fcurves.find("location").modifiers] == [("STEPPED", True)]


def test_importing_a_track_again_onto_its_character_keeps_the_users_f_curve_modifiers(
    empty_scene, reference_dir, body_model
):
    """Motion, baked correctives and visibility curves keep their modifiers, and the keys are the
    track's (a modifier's effect is not written into them)."""
    motion = read_motion_file(reference_dir / "result.npz")
    _, (person, body) = import_motion(motion, body_model, ImportOptions(correctives="baked", add_camera=False))
    motion_channels = keyframes.channels_of(person)
    corrective_channels = keyframes.channels_of(body.data.shape_keys)
    curves = {
        "motion": (motion_channels, keyframes.rotation_path("left_knee"), 1),
        "corrective": (corrective_channels, 'key_blocks["Pose000"].value', 0),
        "visibility": (keyframes.channels_of(body), "hide_viewport", 0),
    }
    keys_before = {name: keyframes.read_fcurve(*curve) for name, curve in curves.items()}
    for channels, path, index in curves.values():
        noise = channels.fcurves.find(path, index=index).modifiers.new("NOISE")
        noise.strength = 0.3
    animate_character(
        person, motion.tracks[1], ground_offset_m=motion.ground_offset_m, last_frame_id=motion.frame_count - 1
    )
    for name, (channels, path, index) in curves.items():
        fcurve = channels.fcurves.find(path, index=index)
        assert [(m.type, round(m.strength, 3)) for m in fcurve.modifiers] == [("NOISE", 0.3)], name
        np.testing.assert_allclose(keyframes.read_fcurve(channels, path, index), keys_before[name], atol=1e-6)
    assert len(motion_channels.fcurves) == 24 * 4 + 3 and len(corrective_channels.fcurves) == 207


def test_a_second_capture_grows_the_scene_and_keeps_its_frame_rate(imported, empty_scene, reference_dir, body_model):
    """The scene follows the first capture (29.97 fps, frames 1-10); a later one at 25 fps that is
    shorter leaves it alone and says its speed is off; a longer one only moves the end."""
    motion = read_motion_file(reference_dir / "result.npz")
    short = dataclasses.replace(motion, fps=25.0, frame_count=6, source_name="short_clip")
    warnings, infos = [], []
    import_motion(short, body_model, ImportOptions(add_camera=False), report=infos.append, warn=warnings.append)
    render = empty_scene.render
    assert (empty_scene.frame_start, empty_scene.frame_end) == (1, 10)
    assert render.fps / render.fps_base == pytest.approx(29.97)
    assert warnings == [
        "short_clip was filmed at 25 fps but the scene, which has animation already, plays at 29.97 fps: its "
        "characters play 1.199x as fast as filmed. Import it into a new scene to keep both right."
    ]
    assert infos and infos[-1].startswith("Imported 2 character(s) from short_clip")
    long = dataclasses.replace(motion, frame_count=40)
    import_motion(long, body_model, ImportOptions(add_camera=False), warn=warnings.append)
    assert (empty_scene.frame_start, empty_scene.frame_end) == (1, 40) and len(warnings) == 1
    empty_scene.frame_start, empty_scene.frame_end = 5, 8
    import_motion(long, body_model, ImportOptions(add_camera=False, set_scene=False), warn=warnings.append)
    assert (empty_scene.frame_start, empty_scene.frame_end) == (5, 8)
    assert warnings[-1].startswith("short_clip's motion is on frames 1..40, outside") is False  # it overlaps 5..8
    assert len(warnings) == 1


def test_a_scene_with_animation_of_its_own_keeps_its_frame_rate_and_is_only_grown(
    empty_scene, reference_dir, body_model
):
    """The user's 24 fps shot (a keyed cube, or characters whose motion went to the NLA): the first
    capture imported into it set 29.97 fps and frames 1..10 without a word."""
    empty_scene.render.fps, empty_scene.render.fps_base = 24, 1.0
    empty_scene.frame_start, empty_scene.frame_end = 1, 250
    bpy.ops.mesh.primitive_cube_add()
    bpy.context.object.keyframe_insert("location", frame=1)
    warnings = []
    import_motion_file(reference_dir / "result.npz", body_model, ImportOptions(), warn=warnings.append)
    render = empty_scene.render
    assert (render.fps, empty_scene.frame_start, empty_scene.frame_end) == (24, 1, 250)
    assert any(
        "which has animation already, plays at 24 fps: its characters play 0.8008x as fast" in w for w in warnings
    )


def test_import_without_set_scene_says_what_does_not_fit_the_scene(empty_scene, reference_dir, body_model):
    empty_scene.render.fps, empty_scene.render.fps_base = 24, 1.0
    empty_scene.frame_start, empty_scene.frame_end = 1001, 1100
    warnings = []
    import_motion_file(reference_dir / "result.npz", body_model, ImportOptions(set_scene=False), warn=warnings.append)
    assert any("whose frame rate 'Set scene' (off) left as it was, plays at 24 fps" in w for w in warnings)
    assert any("motion is on frames 1..10, outside the scene's 1001..1100: turn on 'Set scene'" in w for w in warnings)


def test_import_says_what_the_capture_warned_of(empty_scene, reference_dir, body_model, tmp_path):
    """A capture's warnings (the video broke off, YOLO fell back to HOG) are in its result's meta:
    the add-on showed none of them, so a Blender user never learnt why the tracks were poor."""
    from vibe_blender.core.result_file import WARNINGS_META_KEY, load_result, save_result

    result = load_result(reference_dir / "result.npz")
    said = ["yolov3.weights is not in the model data\x07, so people were found with HOG"]
    result.meta[WARNINGS_META_KEY] = "\n".join(said + [f"warning {i}" for i in range(20)])
    with open(tmp_path / "warned.npz", "wb") as file:
        save_result(file, result)
    warnings = []
    import_motion_file(tmp_path / "warned.npz", body_model, ImportOptions(), warn=warnings.append)
    from_capture = [w for w in warnings if ", when captured: " in w]
    name = result.video.name
    assert (
        from_capture[0]
        == f"{name}, when captured: yolov3.weights is not in the model data , so people were found with HOG"
    )
    assert len(from_capture) == 8  # a file's thousands of lines are not all shown
    warnings.clear()
    import_motion_file(reference_dir / "result.npz", body_model, ImportOptions(), warn=warnings.append)
    assert not [w for w in warnings if ", when captured: " in w]


def test_import_selects_what_it_made_and_leaves_the_playhead(empty_scene, reference_dir, body_model):
    """Blender's importers select what they import: G or Delete right after acted on the user's object."""
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.object
    empty_scene.frame_set(4)
    characters = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    made = [armature for armature, _ in characters] + [empty_scene.camera]  # (a body hidden on this frame cannot be)
    assert all(obj.select_get() for obj in made) and not cube.select_get()
    assert bpy.context.view_layer.objects.active == characters[0][0]
    assert empty_scene.frame_current == 4


@pytest.mark.skipif(sys.platform != "linux", reason="file permissions as on Linux")
def test_a_video_blender_may_not_read_leaves_a_camera_without_background(reference_dir, tmp_path):
    """Blender's clip loader raised once the characters were built: a traceback, and half an import
    left in the scene. Run in a Blender that may not read the video (root's power to read dropped)."""
    from hostile_files import CAN_READ_PROBE, CAN_STILL_READ, run_probe, unreadable_copy, without_read_override
    from testdata import REAL_CLIPS

    video = unreadable_copy(REAL_CLIPS / "asl-walk.mkv", tmp_path)
    script = CAN_READ_PROBE + (
        "from vibe_blender.core.smpl_model import load_body_model\n"
        "from vibe_blender.importer import ImportOptions, import_motion_file\n"
        "model = load_body_model(sys.argv[2] + '/body_model.npz')\n"
        "made = import_motion_file(sys.argv[2] + '/result.npz', model, ImportOptions(video_path=sys.argv[1]),"
        " report=lambda m: None, warn=print)\n"
        "import bpy\n"
        "print(len(made), bpy.context.scene.camera.data.show_background_images)\n"
    )
    preexec = without_read_override if os.geteuid() == 0 else None
    said = run_probe(script, video, reference_dir, preexec_fn=preexec, timeout_s=300).stdout.splitlines()
    if said == ["READABLE"]:
        pytest.skip(CAN_STILL_READ)
    assert f"The video '{video}' cannot be read (Permission denied); the camera has no background." in said
    assert said[-1] == "2 False"


def test_the_camera_follows_the_units_and_is_left_out_in_place(empty_scene, reference_dir, body_model):
    """In centimetres the camera clipped a person 10 m away; with root motion 'In place' the camera sat
    inside the body, which no longer moves as filmed."""
    empty_scene.unit_settings.scale_length = 0.01
    import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    assert (empty_scene.camera.data.clip_start, empty_scene.camera.data.clip_end) == pytest.approx((10.0, 100_000.0))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    warnings = []
    import_motion_file(
        reference_dir / "result.npz", body_model, ImportOptions(root_motion="in_place"), warn=warnings.append
    )
    assert bpy.context.scene.camera is None
    assert "No camera was added: with root motion 'In place'" in warnings[-1]


def test_characters_have_their_real_size_in_a_scene_counted_in_centimetres(empty_scene, reference_dir, body_model):
    ((in_metres, _), _) = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    empty_scene.frame_set(3)
    joints_m, camera_m = evaluated_joints(in_metres), np.array(empty_scene.camera.location)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.unit_settings.scale_length = 0.01  # 1 Blender unit = 1 cm
    ((in_cm, mesh), _) = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    scene.frame_set(3)
    np.testing.assert_allclose(evaluated_joints(in_cm), 100 * joints_m, atol=1e-3)
    np.testing.assert_allclose(np.array(scene.camera.location), 100 * camera_m, atol=1e-4)
    assert np.ptp(evaluated_vertices(mesh)[:, 2]) > 100  # a body over a metre tall, in centimetres


def test_import_shows_progress_per_character(empty_scene, reference_dir, body_model, monkeypatch):
    from vibe_blender import progress_counter

    calls = []

    class WindowManager:
        def progress_begin(self, first, last):
            calls.append(("begin", first, last))

        def progress_update(self, value):
            calls.append(("update", value))

        def progress_end(self):
            calls.append(("end",))

    monkeypatch.setattr(progress_counter, "_window_manager", WindowManager)
    import_motion_file(reference_dir / "result.npz", body_model, ImportOptions())
    assert calls == [("begin", 0, 2), ("update", 1), ("update", 2), ("end",)]
    calls.clear()
    with pytest.raises(VibeError):
        import_motion_file(reference_dir / "result.npz", body_model, ImportOptions(root_motion="sideways"))
    assert calls == []  # refused before anything is built: no counter left on the cursor
