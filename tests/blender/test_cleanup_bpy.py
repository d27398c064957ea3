"""Clean-up on a character's keys in Blender: jitter and foot slide halve, trim/offset, merge, and
what follows the keys on an imported character (its body's visibility and baked correctives)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy")

from characters import imported_tracks, linked_clip  # noqa: E402

from vibe_blender import keyframes  # noqa: E402
from vibe_blender.animation import corrective_path  # noqa: E402
from vibe_blender.cleanup_ops import (  # noqa: E402
    LOC_PATH,
    clean_up_character,
    clean_up_characters,
    measure_character,
    merge_characters,
    read_motion,
    trim_and_offset,
    trim_and_offset_characters,
    write_motion,
)
from vibe_blender.core.errors import VibeError  # noqa: E402
from vibe_blender.core.smpl_model import JOINT_NAMES  # noqa: E402

_spec = importlib.util.spec_from_file_location("retarget_rigs", Path(__file__).with_name("retarget_rigs.py"))
rigs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rigs)


def noisy_character(T=90, seed=0):
    rigs.reset_scene()
    source, frames, stance = rigs.smpl_source(T=T)
    f, q, loc = read_motion(source)
    q, loc = rigs.walk.noisy(q, loc, np.random.default_rng(seed))
    pelvis_rest = np.array(source.data.bones["pelvis"].matrix_local)[:3, :3]
    loc = loc + np.array([0.0, 0.0, 0.05]) @ pelvis_rest  # float 5 cm above the floor (world up, bone-local)
    write_motion(source, f, q, loc)
    return source


def test_clean_up_character_halves_jitter_and_slide_and_snaps_by_a_vertical_shift():
    source = noisy_character()
    bpy.context.scene.render.fps = 30
    report = clean_up_character(source, strength=0.5)
    print("clean-up report", report)
    assert report["jitter_after"] <= 0.5 * report["jitter_before"]
    assert report["slide_after_mm"] <= 0.5 * report["slide_before_mm"]
    assert report["ground_shift_m"] < -0.01  # brought back down towards the floor
    f, q, loc = read_motion(source)
    unsnapped = noisy_character()
    clean_up_character(unsnapped, strength=0.5, snap_to_ground=False, fps=30)  # the same contacts as above
    shift = loc - read_motion(unsnapped)[2]  # pelvis location is bone-local: compare lengths
    np.testing.assert_allclose(np.linalg.norm(shift, axis=-1), abs(report["ground_shift_m"]), atol=1e-4)  # float32 keys
    assert len(f) == 90 and np.allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-5)


def test_smoothing_one_bone_group_leaves_the_others():
    source = noisy_character()
    _, q0, _ = read_motion(source)
    clean_up_character(source, strength=1.0, bone_group="ARMS", lock_feet=False, snap_to_ground=False)
    _, q1, _ = read_motion(source)
    changed = np.abs(q1 - q0).max(axis=(0, 2)) > 1e-4
    from vibe_blender.core.smpl_model import JOINT_NAMES

    assert changed[JOINT_NAMES.index("left_elbow")] and not changed[JOINT_NAMES.index("left_knee")]
    with pytest.raises(VibeError, match="bone group"):
        clean_up_character(source, bone_group="TAIL")


def test_trim_offset_and_merge():
    source = noisy_character(T=40)
    other = rigs.build_armature(
        "SMPL2",
        [b.name for b in source.data.bones],
        [
            (-1 if b.parent is None else [x.name for x in source.data.bones].index(b.parent.name))
            for b in source.data.bones
        ],
        [b.head_local for b in source.data.bones],
        [b.tail_local for b in source.data.bones],
    )
    f, q, loc = read_motion(source)
    write_motion(other, f[30:] + 20, q[30:], loc[30:])  # the same person found again later
    assert trim_and_offset(source, start=5, end=24, offset=-4) == 20
    assert read_motion(source)[0][[0, -1]].tolist() == [1.0, 20.0]
    assert merge_characters(source, other) == 30
    frames = read_motion(source)[0]
    assert frames[-1] == 60.0 and "SMPL2" not in bpy.data.objects
    with pytest.raises(VibeError, match="leaves no frame"):
        trim_and_offset(source, start=500)
    empty = rigs.build_armature("Empty", ["pelvis"], [-1], [[0, 0, 0]], [[0, 0, 1]])
    with pytest.raises(VibeError, match="not an animated SMPL character"):
        read_motion(empty)


def arm_rotations_and_pelvis(armature_obj, frame):
    """-> armature-space rotations of the pose (24, 3, 3) (pose · rest⁻¹) and the pelvis's world place."""
    bpy.context.scene.frame_set(frame)
    rotations = [
        np.array(pb.matrix.to_3x3()) @ np.array(armature_obj.data.bones[pb.name].matrix_local.to_3x3()).T
        for pb in armature_obj.pose.bones
    ]
    return np.array(rotations), np.array(armature_obj.matrix_world @ armature_obj.pose.bones["pelvis"].head)


def corrective_values(mesh_obj, frame):
    bpy.context.scene.frame_set(frame)
    return np.array([k.value for k in mesh_obj.data.shape_keys.key_blocks if k.name.startswith("Pose")])


def hidden_at(mesh_obj, frames):
    out = []
    for frame in frames:
        bpy.context.scene.frame_set(frame)
        out.append(mesh_obj.hide_viewport and mesh_obj.hide_render)
    return out


def test_merge_moves_the_other_track_onto_the_kept_body(empty_scene, body_model):
    (a, a_body), (b, b_body) = imported_tracks(body_model, [range(0, 20), range(30, 50)])
    b_rotations, b_pelvis = arm_rotations_and_pelvis(b, 41)
    b_correctives = corrective_values(b_body, 41)
    actions = sorted(x.name for x in bpy.data.actions if x.users)
    assert merge_characters(a, b) == 40
    # B's frames keep their pose on A's body (another shape, so other rest bones): every bone turns as
    # it did and the pelvis is where it was; the baked correctives are keyed on those frames too
    a_rotations, a_pelvis = arm_rotations_and_pelvis(a, 41)
    np.testing.assert_allclose(a_rotations, b_rotations, atol=1e-5)
    np.testing.assert_allclose(a_pelvis, b_pelvis, atol=1e-5)
    np.testing.assert_allclose(corrective_values(a_body, 41), b_correctives, atol=1e-5)
    # the kept body shows on the merged frames and hides in the gap between the tracks
    assert hidden_at(a_body, [1, 20, 21, 30, 31, 50, 51]) == [False, False, True, True, False, False, True]
    assert sorted(x.name for x in bpy.data.actions if x.users) == [n for n in actions if not n.startswith("P1")]


def test_trim_and_offset_move_the_bodys_visibility_and_correctives(empty_scene, body_model):
    ((b, body),) = imported_tracks(body_model, [range(30, 50)])
    before = corrective_values(body, 41)
    assert trim_and_offset(b, start=31, end=45, offset=-30) == 15  # Blender frames 31..45 -> 1..15
    assert hidden_at(body, [1, 15, 16, 40]) == [False, False, True, True]
    correctives = keyframes.channels_of(body.data.shape_keys)
    np.testing.assert_array_equal(
        keyframes.read_fcurve(correctives, 'key_blocks["Pose000"].value', 0)[0], np.arange(1, 16)
    )
    np.testing.assert_allclose(corrective_values(body, 11), before, atol=1e-5)


def test_clean_up_keeps_each_run_apart_and_the_hold_before_a_gap(empty_scene, body_model):
    """Keys on both sides of a gap are no neighbours: a pose held still within each run stays as it is
    (it would be blended with the pose after the gap), the last key before the gap still holds, and
    the keys are rewritten in the character's own actions (none left behind, none added)."""
    pose = np.zeros((40, 72))
    pose[:20, 3 * 18 + 2], pose[20:, 3 * 18 + 2] = -1.2, 1.2  # the left elbow differs across the gap
    ((person, body),) = imported_tracks(body_model, [np.r_[0:20, 40:60]], pose=pose)
    actions = sorted(a.name for a in bpy.data.actions)
    f0, q0, _ = read_motion(person)
    clean_up_character(person, strength=1.0, lock_feet=False, snap_to_ground=False, fps=30)
    f1, q1, _ = read_motion(person)
    np.testing.assert_array_equal(f1, f0)
    assert np.abs(q1 - q0).max() < 1e-5
    fcurve = keyframes.channels_of(person).fcurves.find(keyframes.rotation_path("left_elbow"), index=0)
    assert fcurve.keyframe_points[19].interpolation == "CONSTANT"
    assert {k.interpolation for k in list(fcurve.keyframe_points)[20:]} == {"LINEAR"}
    assert sorted(a.name for a in bpy.data.actions) == actions and all(a.users for a in bpy.data.actions)
    assert hidden_at(body, [20, 21, 40, 41]) == [False, True, True, False]


def test_several_characters_are_cleaned_all_or_none(empty_scene, body_model):
    (a, _), (b, _) = imported_tracks(body_model, [range(0, 20), range(30, 50)], correctives="off")
    still = rigs.build_armature("Still", [b.name for b in a.data.bones], [-1] * 24, [(0, 0, 0)] * 24, [(0, 0, 1)] * 24)
    keys_before = [read_motion(obj)[1].copy() for obj in (a, b)]
    with pytest.raises(VibeError, match="^Still: .*not an animated SMPL character.*No character was changed"):
        clean_up_characters([a, b, still], strength=1.0, lock_feet=False, snap_to_ground=False, fps=30)
    with pytest.raises(VibeError, match="^P1: Trimming to frames 1..5 leaves no frame"):
        trim_and_offset_characters([a, b], start=1, end=5)
    for obj, keys in zip((a, b), keys_before):
        np.testing.assert_array_equal(read_motion(obj)[1], keys)
    assert trim_and_offset_characters([a, b], end=40) == [20, 10]


def test_trimming_a_linked_duplicate_leaves_the_other_ones_keys(empty_scene, body_model):
    """Alt+D shares the action: rewriting one character's keys gives it its own copy first."""
    ((person, _),) = imported_tracks(body_model, [range(0, 40)], correctives="off")
    twin = person.copy()  # a linked duplicate: the same action, the same slot
    bpy.context.scene.collection.objects.link(twin)
    assert twin.animation_data.action == person.animation_data.action
    frames, quats, loc = (x.copy() for x in read_motion(twin))
    assert trim_and_offset(person, start=5, end=20, offset=3) == 16
    assert read_motion(person)[0][[0, -1]].tolist() == [8.0, 23.0]
    assert twin.animation_data.action != person.animation_data.action
    np.testing.assert_array_equal(read_motion(twin)[0], frames)
    np.testing.assert_array_equal(read_motion(twin)[1], quats)
    np.testing.assert_array_equal(read_motion(twin)[2], loc)
    if keyframes.LAYERED_ACTIONS:  # the copy animates the character through the slot it had
        assert person.animation_data.action_slot.identifier == twin.animation_data.action_slot.identifier
    bpy.context.scene.frame_set(10)
    posed = np.array(person.pose.bones["left_elbow"].rotation_quaternion)
    keyed = quats[frames.tolist().index(10.0 - 3), JOINT_NAMES.index("left_elbow")]
    np.testing.assert_allclose(posed, keyed, atol=1e-6)


def test_a_body_seen_throughout_keeps_the_hiding_its_user_set(empty_scene, body_model):
    ((person, body),) = imported_tracks(body_model, [range(0, 60)], correctives="off")
    assert keyframes.channels_of(body) is None  # seen in every frame: no visibility keys
    body.hide_render = True
    assert trim_and_offset(person, offset=0) == 60
    assert body.hide_render and not body.hide_viewport


def test_clean_up_works_on_the_keys_under_the_users_f_curve_modifiers_and_keeps_them():
    """Before: the modifiers were lost, and their effect was written into the keys. Now the keys
    are cleaned as if there were no modifier, and each modifier applies once, over the new keys."""
    plain = noisy_character(T=40)
    clean_up_character(plain, strength=0.5, fps=30)
    expected = read_motion(plain)
    source = noisy_character(T=40)  # the same noisy motion, now with modifiers on two curves
    channels = keyframes.channels_of(source)
    knee_path, root_path = keyframes.rotation_path("left_knee"), keyframes.location_path("pelvis")
    knee = channels.fcurves.find(knee_path, index=1)
    noise = knee.modifiers.new("NOISE")
    noise.strength, noise.scale = 0.2, 3.0
    frames = read_motion(source)[0]
    noise_before = [knee.evaluate(f) for f in frames] - keyframes.read_fcurve(channels, knee_path, 1)[1]
    root = channels.fcurves.find(root_path, index=0)
    root.modifiers.new("CYCLES")
    root.extrapolation, root.mute = "LINEAR", True
    messages = []
    clean_up_character(source, strength=0.5, fps=30, warn=messages.append)
    assert messages == []  # nothing baked: Noise and a Cycles looping every frame stay
    for got, want in zip(read_motion(source), expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    knee, root = channels.fcurves.find(knee_path, index=1), channels.fcurves.find(root_path, index=0)
    assert [(m.type, round(m.strength, 3)) for m in knee.modifiers] == [("NOISE", 0.2)]
    noise_after = [knee.evaluate(f) for f in frames] - keyframes.read_fcurve(channels, knee_path, 1)[1]
    np.testing.assert_allclose(noise_after, noise_before, atol=1e-6)  # applied once, as before
    assert [m.type for m in root.modifiers] == ["CYCLES"] and root.extrapolation == "LINEAR" and root.mute


def test_a_body_seen_throughout_keeps_a_visibility_curve_that_carries_the_users_modifiers(empty_scene, body_model):
    """Its other visibility curve goes, as it would without modifiers; this one keeps one "shown" key."""
    ((person, body),) = imported_tracks(body_model, [np.r_[0:20, 40:60]], correctives="off")
    channels = keyframes.channels_of(body)
    channels.fcurves.find("hide_viewport").modifiers.new("LIMITS")
    empty_scene.frame_start, empty_scene.frame_end = 1, 20
    assert trim_and_offset(person, end=20) == 20  # the first run: seen in every frame of the scene
    hide_viewport = channels.fcurves.find("hide_viewport")
    assert [m.type for m in hide_viewport.modifiers] == ["LIMITS"]
    np.testing.assert_array_equal(keyframes.read_fcurve(channels, "hide_viewport", 0), ([1.0], [0.0]))
    assert channels.fcurves.find("hide_render") is None
    assert hidden_at(body, [1, 20]) == [False, False] and not body.hide_render


def looped_wrist(armature_obj, first=1, span=10):
    """The user's wave on the left wrist: keys on frames first..first+span-1 only, looped by a Cycles
    modifier on each channel; -> its data path."""
    channels = keyframes.channels_of(armature_obj)
    path = keyframes.rotation_path("left_wrist")
    angle = 0.8 * np.sin(2 * np.pi * np.arange(span) / (span - 1))
    for c, values in enumerate([np.cos(angle / 2), np.sin(angle / 2), 0 * angle, 0 * angle]):
        keyframes.rewrite_fcurve(channels, path, c, np.arange(first, first + span, dtype=np.float64), values)
        channels.fcurves.find(path, index=c).modifiers.new("CYCLES")
    return path


def played(armature_obj, frames, bone="left_wrist", attribute="rotation_quaternion"):
    """(T, n) a pose bone's rotation (or location) as Blender plays it on frames (T,)."""
    values = []
    for frame in frames:
        bpy.context.scene.frame_set(int(frame))
        values.append(np.array(getattr(armature_obj.pose.bones[bone], attribute)))
    return np.array(values)


def modifiers(armature_obj, path, index):
    return list(keyframes.channels_of(armature_obj).fcurves.find(path, index=index).modifiers)


def modifier_types(armature_obj, path, index):
    return [m.type for m in modifiers(armature_obj, path, index)]


@pytest.mark.parametrize(
    "edit, shift, rewrites_the_wrist",
    [
        (lambda obj, warn: trim_and_offset(obj, warn=warn), 0, False),  # keeps every frame: changes nothing
        (lambda obj, warn: trim_and_offset(obj, offset=5, warn=warn), 5, True),
        (lambda obj, warn: clean_up_character(obj, bone_group="LEGS", fps=30, warn=warn), 0, False),  # not the arms
    ],
    ids=["trim keeping every frame", "offset", "clean up the legs"],
)
def test_a_bone_looped_over_fewer_frames_than_the_character_plays_as_before_an_edit(edit, shift, rewrites_the_wrist):
    """Before: the wave was read beyond its 10 keys as its last key held, written so over the
    character's 60 frames, and Cycles then looped all 60: the loop was gone. Now an edit that moves
    the wrist's keys reads that curve as Blender plays it, bakes the loop into its keys and removes its
    Cycles, with one warning (which says why: the loop, whether or not the edit moves the keys); an
    edit that leaves the wrist as it was leaves its curve alone, keys and Cycles."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=60)
    path = looped_wrist(source)
    before = played(source, frames)
    keys = [keyframes.read_fcurve(keyframes.channels_of(source), path, c) for c in range(4)]
    assert np.ptp(before[20:, 1]) > 0.5  # it waves on after its keys
    messages = []
    edit(source, messages.append)
    np.testing.assert_allclose(played(source, frames + shift), before, atol=1e-5)
    if not rewrites_the_wrist:
        assert [modifier_types(source, path, c) for c in range(4)] == [["CYCLES"]] * 4 and messages == []
        for c, (key_frames, values) in enumerate(keys):
            np.testing.assert_array_equal(keyframes.read_fcurve(keyframes.channels_of(source), path, c)[0], key_frames)
            np.testing.assert_array_equal(keyframes.read_fcurve(keyframes.channels_of(source), path, c)[1], values)
        return
    assert [modifier_types(source, path, c) for c in range(4)] == [[]] * 4
    assert messages == [
        "F-curve modifiers baked into the keys and removed because the curve's Cycles loop does not span "
        "the new keys: 'SMPL': left_wrist rotation W X Y Z."
    ]


def test_an_offset_moves_a_modifier_on_a_frame_range_or_stepping_time_with_the_keys():
    """Before that, an offset moved the keys but a Noise restricted to frames 20..30 stayed there,
    shaking other motion, and Stepped kept its steps on the old frames; then both were baked into
    the keys and removed, with a warning. Now they stay, their frames moved with the keys, and the
    character plays as before, later; a muted modifier stays muted, moved too."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=40)
    channels = keyframes.channels_of(source)
    location = keyframes.location_path("pelvis")
    shake = channels.fcurves.find(location, index=2).modifiers.new("NOISE")
    shake.strength, shake.scale = 0.2, 2.0
    shake.use_restricted_range, shake.frame_start, shake.frame_end = True, 20.0, 30.0
    channels.fcurves.find(location, index=0).modifiers.new("STEPPED").frame_step = 4.0
    channels.fcurves.find(location, index=0).modifiers.new("NOISE").mute = True
    before = played(source, frames, "pelvis", "location")
    messages = []
    assert trim_and_offset(source, offset=7, warn=messages.append) == 40
    np.testing.assert_allclose(played(source, frames + 7, "pelvis", "location"), before, atol=1e-5)
    assert [modifier_types(source, location, c) for c in range(3)] == [["STEPPED", "NOISE"], [], ["NOISE"]]
    stepped, muted = modifiers(source, location, 0)
    assert (stepped.frame_offset, muted.mute, muted.offset) == (7.0, True, 7.0)
    assert (shake.frame_start, shake.frame_end) == (27.0, 37.0) and messages == []


def test_an_offset_moves_a_noise_over_the_whole_timeline_and_keeps_limits_on_values():
    """Before that, a Noise stayed where it was on the timeline while an Offset moved the keys under
    it, so the pelvis played another shake; then it was baked in and removed. Now its time moves
    with the keys and the character plays as before, later; Limits on values stay as they were."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=40)
    channels = keyframes.channels_of(source)
    location = keyframes.location_path("pelvis")
    shake = channels.fcurves.find(location, index=2).modifiers.new("NOISE")
    shake.strength, shake.scale = 0.2, 2.0
    sideways = keyframes.read_fcurve(channels, location, 0)[1]
    limits = channels.fcurves.find(location, index=0).modifiers.new("LIMITS")
    limits.use_max_y, limits.max_y = True, float(np.median(sideways))
    before = played(source, frames, "pelvis", "location")
    assert np.sum(np.isclose(before[:, 0], limits.max_y, atol=1e-6)) >= 10  # it clamps
    messages = []
    assert trim_and_offset(source, offset=7, warn=messages.append) == 40
    np.testing.assert_allclose(played(source, frames + 7, "pelvis", "location"), before, atol=1e-5)
    assert [modifier_types(source, location, c) for c in range(3)] == [["LIMITS"], [], ["NOISE"]]
    assert modifiers(source, location, 2)[0].offset == 7.0 and messages == []


def stepped_and_shaken(armature_obj):
    """The user's modifiers on the timeline's frames: the left knee animated on threes (Stepped),
    and a Noise shaking the pelvis height on frames 20..30 only; -> their data paths."""
    channels = keyframes.channels_of(armature_obj)
    knee, location = keyframes.rotation_path("left_knee"), keyframes.location_path("pelvis")
    for c in range(4):
        channels.fcurves.find(knee, index=c).modifiers.new("STEPPED").frame_step = 3.0
    shake = channels.fcurves.find(location, index=2).modifiers.new("NOISE")
    shake.strength, shake.scale = 0.2, 2.0
    shake.use_restricted_range, shake.frame_start, shake.frame_end = True, 20.0, 30.0
    return knee, location


@pytest.mark.parametrize(
    "edit, unchanged",
    [
        (lambda obj, warn: clean_up_character(obj, strength=0.5, fps=30, warn=warn), slice(0)),
        (lambda obj, warn: trim_and_offset(obj, start=9, end=36, warn=warn), slice(8, 36)),  # 9 steps to 9
    ],
    ids=["clean up", "trim"],
)
def test_an_edit_that_keeps_the_keys_on_their_frames_keeps_stepped_and_frame_range_modifiers(edit, unchanged):
    """Before: Clean Up and Trim baked Stepped and a Noise on a frame range into the keys, removed
    them and said they could not stay; Clean Up then smoothed the steps into ramps and the shake
    away. Keys that stay on their frames keep them: the character plays as the same edit of its keys
    alone under the same modifiers, and Trim plays as before on the frames it keeps."""
    frames = np.arange(1, 41)
    plain = noisy_character(T=40)
    edit(plain, print)
    stepped_and_shaken(plain)
    expected = [played(plain, frames, "left_knee"), played(plain, frames, "pelvis", "location")]
    source = noisy_character(T=40)
    knee, location = stepped_and_shaken(source)
    before = [played(source, frames, "left_knee"), played(source, frames, "pelvis", "location")]
    messages = []
    edit(source, messages.append)
    after = [played(source, frames, "left_knee"), played(source, frames, "pelvis", "location")]
    for got, want in zip(after, expected):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert messages == []
    assert [modifier_types(source, knee, c) for c in range(4)] == [["STEPPED"]] * 4
    assert [modifier_types(source, location, c) for c in range(3)] == [[], [], ["NOISE"]]
    assert np.mean(np.all(np.abs(np.diff(after[0], axis=0)) < 1e-7, axis=1)) > 0.6  # on threes, still
    for got, was in zip(after, before):
        np.testing.assert_allclose(got[unchanged], was[unchanged], atol=1e-5)


def test_a_cycles_looping_the_characters_frames_stays_and_loops_the_edited_keys():
    """Inside the span of its keys a Cycles plays them as they are: such a curve is edited as its
    keys, and its loop moves with them (and loops the trimmed keys), without a warning."""
    rigs.reset_scene()
    source, frames, _ = rigs.smpl_source(T=40)
    location = keyframes.location_path("pelvis")
    keyframes.channels_of(source).fcurves.find(location, index=1).modifiers.new("CYCLES")
    later = np.arange(1, 100)
    before = played(source, later, "pelvis", "location")
    messages = []
    assert trim_and_offset(source, offset=10, warn=messages.append) == 40
    np.testing.assert_allclose(played(source, later + 10, "pelvis", "location"), before, atol=1e-6)
    assert trim_and_offset(source, end=30, warn=messages.append) == 20
    assert modifier_types(source, location, 1) == ["CYCLES"] and messages == []
    looped = played(source, np.arange(11, 70), "pelvis", "location")[:, 1]
    np.testing.assert_allclose(looped[20:39], looped[1:20], atol=1e-6)  # frames 31.. play 12.. again


def test_merge_keeps_the_other_tracks_motion_as_it_played():
    """The other track and its F-curves go: it is read as Blender plays it, its loop included
    (before: as its keys alone, so its wrist held still after its 4 keys)."""
    source = noisy_character(T=40)
    bones = source.data.bones
    names = [b.name for b in bones]
    parents = [-1 if b.parent is None else names.index(b.parent.name) for b in bones]
    other = rigs.build_armature("SMPL2", names, parents, [b.head_local for b in bones], [b.tail_local for b in bones])
    f, q, loc = read_motion(source)
    write_motion(other, f[30:] + 20, q[30:], loc[30:])  # frames 51..60
    looped_wrist(other, first=51, span=4)
    before = played(other, range(51, 61))
    messages = []
    assert merge_characters(source, other, warn=messages.append) == 50
    np.testing.assert_allclose(played(source, range(51, 61)), before, atol=1e-5)
    assert messages == []


@pytest.fixture
def registered_operators():
    from vibe_blender import retarget_operators, retarget_settings

    rigs.reset_scene()
    modules = (retarget_settings, retarget_operators)
    for module in modules:
        module.register()
    yield bpy.context.scene.vibe_retarget
    for module in reversed(modules):
        module.unregister()


def test_the_trim_operator_warns_of_modifiers_baked_into_the_keys(registered_operators, capfd):
    source, _, _ = rigs.smpl_source(T=30)
    looped_wrist(source)
    bpy.context.view_layer.objects.active = source
    source.select_set(True)
    registered_operators.trim, registered_operators.trim_start, registered_operators.trim_end = True, 1, 29
    capfd.readouterr()
    assert bpy.ops.vibe_mocap.trim_offset() == {"FINISHED"}  # cuts frame 30: the wrist's keys are rewritten
    printed = "".join(capfd.readouterr())  # Blender prints the reports of an operator run without a window
    assert "Warning: F-curve modifiers baked into the keys" in printed and "left_wrist rotation W X Y Z" in printed


def test_baked_correctives_on_a_body_without_their_shape_keys_is_one_clear_message(empty_scene, body_model):
    ((person, body),) = imported_tracks(body_model, [range(0, 20)])
    body.shape_key_clear()
    keys = read_motion(person)[1].copy()
    with pytest.raises(VibeError, match="lacks 207 of their shape keys.*import the character again"):
        trim_and_offset(person, start=5)
    np.testing.assert_array_equal(read_motion(person)[1], keys)  # nothing changed


def test_a_body_missing_its_correctives_leaves_every_character_as_it_was(empty_scene, body_model):
    """Before: the bodies' shape keys were checked only while writing, so P0 was trimmed before P1 failed."""
    (a, _), (b, b_body) = imported_tracks(body_model, [range(0, 20), range(30, 50)])
    b_body.shape_key_clear()
    before = [[x.copy() for x in read_motion(obj)] for obj in (a, b)]
    with pytest.raises(VibeError, match="^P1: .*lacks 207 of their shape keys.*No character was changed"):
        trim_and_offset_characters([a, b], start=5, offset=2)
    with pytest.raises(VibeError, match="^P1: .*lacks 207 of their shape keys.*No character was changed"):
        clean_up_characters([a, b], strength=1.0, lock_feet=False, snap_to_ground=False, fps=30)
    for obj, motion in zip((a, b), before):
        for now, then in zip(read_motion(obj), motion):
            np.testing.assert_array_equal(now, then)


def test_merge_keeps_the_users_objects_parented_to_the_other_track_in_place(empty_scene, body_model):
    """Before: every child of the merged-from track was deleted with it, a hat on its head too."""
    (a, _), (b, b_body) = imported_tracks(body_model, [range(0, 20), range(30, 50)], correctives="off")
    body_name = b_body.name
    hat = bpy.data.objects.new("Hat", bpy.data.meshes.new("Hat"))
    empty_scene.collection.objects.link(hat)
    hat.parent, hat.parent_type, hat.parent_bone = b, "BONE", "head"
    empty_scene.frame_set(41)
    placed = np.array(hat.matrix_world)
    messages = []
    assert merge_characters(a, b, warn=messages.append) == 40
    assert "P1" not in bpy.data.objects and body_name not in bpy.data.objects  # its body goes with it
    assert hat.name in bpy.data.objects and (hat.parent, hat.parent_type, hat.parent_bone) == (a, "BONE", "head")
    bpy.context.view_layer.update()
    np.testing.assert_allclose(np.array(hat.matrix_world), placed, atol=1e-5)
    assert messages == ["Deleted 'P1' but kept its children 'Hat': now parented to 'P0', in place."]


def test_merge_keeps_clothing_deformed_by_the_other_track_and_objects_on_its_body(empty_scene, body_model):
    """Clothing deformed by the other track lost its deformer (its rest pose), and an object parented
    to the other track's body lost its parent."""
    (a, _), (b, b_body) = imported_tracks(body_model, [range(0, 20), range(30, 50)], correctives="off")
    shirt = bpy.data.objects.new("Shirt", b_body.data.copy())
    empty_scene.collection.objects.link(shirt)
    shirt.modifiers.new("Armature", "ARMATURE").object = b
    badge = bpy.data.objects.new("Badge", None)
    empty_scene.collection.objects.link(badge)
    badge.parent = b_body
    messages = []
    merge_characters(a, b, warn=messages.append)
    assert shirt.modifiers["Armature"].object == a and badge.parent == a
    assert "'Badge'" in messages[0]


def test_the_merge_operator_takes_the_active_body_for_its_character(registered_operators, body_model):
    """Before: an active body mesh (not its armature) made Merge fail with an AttributeError."""
    (a, a_body), (b, _) = imported_tracks(body_model, [range(0, 20), range(30, 50)], correctives="off")
    bpy.context.view_layer.objects.active = a_body
    registered_operators.merge_from = b
    assert bpy.ops.vibe_mocap.merge_tracks() == {"FINISHED"}
    assert len(read_motion(a)[0]) == 40 and "P1" not in bpy.data.objects


def test_the_trim_operator_by_default_only_offsets_and_reports_frames_it_cuts(registered_operators, capfd):
    """Before: End defaulted to 250, and an Offset of +5 on frames 241..270 silently kept 10 of them."""
    source, _, _ = rigs.smpl_source(T=30)
    trim_and_offset(source, offset=240)
    bpy.context.view_layer.objects.active = source
    source.select_set(True)
    registered_operators.frame_offset = 5
    capfd.readouterr()
    assert bpy.ops.vibe_mocap.trim_offset() == {"FINISHED"}
    assert read_motion(source)[0][[0, -1]].tolist() == [246.0, 275.0]
    assert "Trimmed" not in "".join(capfd.readouterr())  # nothing cut, nothing to say
    # keys before frame 1 too: Start (default 1) cut them where only an offset was asked for
    registered_operators.frame_offset = -260
    assert bpy.ops.vibe_mocap.trim_offset() == {"FINISHED"}
    assert read_motion(source)[0][[0, -1]].tolist() == [-14.0, 15.0]
    registered_operators.frame_offset = 250
    assert bpy.ops.vibe_mocap.trim_offset() == {"FINISHED"}
    assert read_motion(source)[0][[0, -1]].tolist() == [236.0, 265.0]
    assert "Trimmed" not in "".join(capfd.readouterr())
    registered_operators.trim, registered_operators.trim_end, registered_operators.frame_offset = True, 255, 0
    assert bpy.ops.vibe_mocap.trim_offset() == {"FINISHED"}
    assert len(read_motion(source)[0]) == 20
    assert "Trimmed: 'SMPL' keeps 20 of 30 frames." in "".join(capfd.readouterr())


def test_measure_reads_the_active_character_and_clean_up_reports_each(registered_operators, body_model, capfd):
    """Before: Measure read the first selected character, and Clean Up showed only the last one's figures."""
    (a, _), (b, _) = imported_tracks(body_model, [range(0, 20), range(30, 50)], correctives="off")
    a.select_set(True)
    b.select_set(True)
    active, other = (b, a) if bpy.context.selected_objects[0] == a else (a, b)
    bpy.context.view_layer.objects.active = active
    assert bpy.ops.vibe_mocap.measure_motion() == {"FINISHED"}
    figures = measure_character(active)
    assert registered_operators.jitter_before == pytest.approx(figures["jitter"], rel=1e-5)
    assert measure_character(other)["jitter"] != pytest.approx(figures["jitter"], rel=1e-3)
    registered_operators.lock_feet = registered_operators.snap_to_ground = False  # these walks have no contacts
    capfd.readouterr()
    assert bpy.ops.vibe_mocap.clean_up() == {"FINISHED"}
    printed = "".join(capfd.readouterr())
    assert "Cleaned 2 character(s): 'P0': foot slide" in printed and "; 'P1': foot slide" in printed


def saved_and_reopened(tmp_path):
    saved = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(saved))
    bpy.ops.wm.open_mainfile(filepath=str(saved))


def test_a_linked_character_is_refused_and_its_library_override_keeps_the_edit(tmp_path, empty_scene, body_model):
    """Before: Clean Up, Trim/Offset and Merge on a character linked from another file reported
    success and left its keys wrecked in memory, and the edit was gone once the file was saved and
    opened again. The override, whose action is the library's, gets its own copy and keeps it."""
    linked_clip(tmp_path, body_model)
    a, b = bpy.data.objects["P0"], bpy.data.objects["P1"]
    assert a.library is not None and a.animation_data.action.library is not None
    keys = [read_motion(obj) for obj in (a, b)]
    refused = r"'P0' is linked from .*clip\.blend.*make a library override first \(Object > Library Override > Make\)"
    with pytest.raises(VibeError, match=refused):
        trim_and_offset(a, offset=5)
    with pytest.raises(VibeError, match=refused):
        clean_up_characters([a], lock_feet=False, snap_to_ground=False, fps=30)
    with pytest.raises(VibeError, match="^P1: 'P1' is linked from .*No character was changed"):
        trim_and_offset_characters([b, a], offset=5)
    with pytest.raises(VibeError, match=refused.replace("P0", "P1")):
        merge_characters(b, a)
    for obj, (frames, quats, loc) in zip((a, b), keys):
        np.testing.assert_array_equal(read_motion(obj)[0], frames)
        np.testing.assert_array_equal(read_motion(obj)[1], quats)
        np.testing.assert_array_equal(read_motion(obj)[2], loc)
    assert "P1" in bpy.data.objects

    bpy.data.collections["Mocap clip"].override_hierarchy_create(bpy.context.scene, bpy.context.view_layer)
    override = next(o for o in bpy.data.objects if o.name == "P0" and o.override_library is not None)
    assert trim_and_offset(override, offset=5) == 30
    saved_and_reopened(tmp_path)
    override = next(o for o in bpy.data.objects if o.name == "P0" and o.override_library is not None)
    assert read_motion(override)[0][[0, -1]].tolist() == [6.0, 35.0]


def test_a_character_playing_an_action_linked_from_another_file_keeps_its_edit(tmp_path, empty_scene, body_model):
    """Before: the keys were rewritten in the linked action itself (no other user to copy it for),
    so the trim was gone once the file was saved and opened again. It gets its own copy now, and
    the library's action stays as it was."""
    library = linked_clip(tmp_path, body_model, spans=[range(0, 30)])
    bpy.ops.wm.read_factory_settings(use_empty=True)
    ((person, _),) = imported_tracks(body_model, [range(0, 30)], correctives="off")
    with bpy.data.libraries.load(str(library), link=True) as (_, data_to):
        data_to.actions = ["P0_motion"]
    person.animation_data.action = data_to.actions[0]
    if keyframes.LAYERED_ACTIONS:
        person.animation_data.action_slot = data_to.actions[0].slots[0]
    assert trim_and_offset(person, offset=5) == 30
    saved_and_reopened(tmp_path)
    assert read_motion(bpy.data.objects["P0"])[0][[0, -1]].tolist() == [6.0, 35.0]
    assert bpy.data.objects["P0"].animation_data.action.library is None


def tweaked(armature_obj):
    """Push the character's action onto an NLA strip and open that strip for tweaking."""
    animation = armature_obj.animation_data
    track = animation.nla_tracks.new()
    strip = track.strips.new("Take", 1, animation.action)
    animation.action = None
    strip.select = track.select = True
    animation.use_tweak_mode = True


def test_a_character_tweaking_an_nla_strip_is_refused_before_any_character_changes(registered_operators, body_model):
    """Before: the operators failed with a raw AttributeError (the action of a tweaked strip cannot
    be replaced) after the characters before it had been rewritten, and no undo step was pushed."""
    (a, _), (b, _) = imported_tracks(body_model, [range(0, 30), range(40, 60)], correctives="off")
    tweaked(b)
    keys = [read_motion(obj) for obj in (a, b)]
    with pytest.raises(VibeError, match="^P1: 'P1' has an NLA strip open for tweaking.*Tab in the NLA editor"):
        trim_and_offset_characters([a, b], offset=4)
    with pytest.raises(VibeError, match="^P1: 'P1' has an NLA strip open for tweaking"):
        clean_up_characters([a, b], lock_feet=False, snap_to_ground=False, fps=30)
    with pytest.raises(VibeError, match="'P1' has an NLA strip open for tweaking"):
        merge_characters(b, a)
    with pytest.raises(VibeError, match="'P1' has an NLA strip open for tweaking"):
        merge_characters(a, b)
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj in (a, b))
    bpy.context.view_layer.objects.active = a
    registered_operators.frame_offset = 4
    with pytest.raises(RuntimeError, match="^Error: P1: 'P1' has an NLA strip open for tweaking"):
        bpy.ops.vibe_mocap.trim_offset()  # its one report (an ERROR raises, run without a window)
    for obj, (frames, quats, loc) in zip((a, b), keys):
        np.testing.assert_array_equal(read_motion(obj)[0], frames)
        np.testing.assert_array_equal(read_motion(obj)[1], quats)
        np.testing.assert_array_equal(read_motion(obj)[2], loc)
    assert "P0" in bpy.data.objects and "P1" in bpy.data.objects


def test_a_key_that_is_not_a_number_is_named_and_nothing_is_cleaned(empty_scene, body_model):
    """Before: one NaN key (set from a script or a driver) was spread by Clean Up over the whole root
    motion, which was reported as cleaned, with a jitter of nan."""
    ((person, _),) = imported_tracks(body_model, [range(0, 30)], correctives="off")
    knee = keyframes.channels_of(person).fcurves.find(keyframes.rotation_path("left_knee"), index=1)
    knee.keyframe_points[3].co.y = float("nan")
    frame = knee.keyframe_points[3].co.x
    loc = keyframes.read_fcurve(keyframes.channels_of(person), LOC_PATH, 0)[1]
    named = rf"'P0' has a left_knee rotation X that is not a number at frame {frame:g}"
    with pytest.raises(VibeError, match=named):
        clean_up_character(person, lock_feet=False, fps=30)
    with pytest.raises(VibeError, match=named):
        measure_character(person)
    np.testing.assert_array_equal(keyframes.read_fcurve(keyframes.channels_of(person), LOC_PATH, 0)[1], loc)


def curve_keys(id_block, path, index):
    """-> [(frame, value, interpolation)] of one F-curve's keys, None without that curve."""
    fcurve = keyframes.channels_of(id_block).fcurves.find(path, index=index)
    if fcurve is None:
        return None
    return [(round(k.co.x, 4), round(k.co.y, 6), k.interpolation) for k in fcurve.keyframe_points]


def test_smoothing_the_legs_leaves_the_curves_of_the_other_bones_as_the_user_made_them(empty_scene, body_model):
    """Before: with Bones = Legs every bone's curves were cleared and keyed again, linear, on the
    pelvis's frames: the user's interpolation and extra keys on the wrist were lost."""
    ((person, _),) = imported_tracks(body_model, [range(0, 30)], correctives="off")
    wrist = keyframes.channels_of(person).fcurves.find(keyframes.rotation_path("right_wrist"), index=1)
    for key in wrist.keyframe_points:
        key.interpolation = "BEZIER"
    wrist.keyframe_points.insert(45, 0.3), wrist.keyframe_points.insert(10.5, 0.2)
    before = curve_keys(person, keyframes.rotation_path("right_wrist"), 1)
    knee = curve_keys(person, keyframes.rotation_path("left_knee"), 1)
    clean_up_character(person, strength=1.0, bone_group="LEGS", lock_feet=False, snap_to_ground=False, fps=30)
    assert curve_keys(person, keyframes.rotation_path("right_wrist"), 1) == before
    assert curve_keys(person, keyframes.rotation_path("left_knee"), 1) != knee  # the legs were smoothed


def test_a_bone_without_keys_keeps_the_pose_it_was_given_by_hand(empty_scene, body_model):
    """Before: clean-up keyed a bone whose rotation curves the user had deleted at rest, on every frame."""
    ((person, _),) = imported_tracks(body_model, [range(0, 30)], correctives="off")
    keyframes.remove_fcurves(keyframes.channels_of(person), keyframes.rotation_path("left_wrist"))
    wrist = person.pose.bones["left_wrist"]
    wrist.rotation_quaternion = (0.7071, 0.7071, 0.0, 0.0)
    clean_up_character(person, strength=0.5, lock_feet=False, snap_to_ground=False, fps=30)
    trim_and_offset(person, start=3, end=25, offset=2)
    assert keyframes.channels_of(person).fcurves.find(keyframes.rotation_path("left_wrist"), index=0) is None
    bpy.context.scene.frame_set(10)
    np.testing.assert_allclose(wrist.rotation_quaternion, (0.7071, 0.7071, 0.0, 0.0), atol=1e-6)


def euler_elbow(person):
    """The user turns the left elbow to Euler XYZ and keys it there: bent on frame 15 only."""
    elbow = person.pose.bones["left_elbow"]
    elbow.rotation_mode = "XYZ"
    for frame, bend in ((1, 0.0), (15, 1.2), (30, 0.0)):
        elbow.rotation_euler = (0.0, 0.0, bend)
        elbow.keyframe_insert("rotation_euler", frame=frame)
    return elbow


def elbow_at(person, frames):
    """(T, 3, 3) the left elbow's rotation (its pose-bone basis) as Blender plays it."""
    out = []
    for frame in frames:
        bpy.context.scene.frame_set(frame)
        out.append(np.array(person.pose.bones["left_elbow"].matrix_basis.to_3x3()))
    return np.array(out)


def test_a_bone_keyed_in_euler_keeps_its_mode_and_its_motion(empty_scene, body_model):
    """Before: every bone was set to quaternion and keyed from its quaternion curves, so an elbow the
    user had keyed in Euler lost its motion (it played the import's quaternions again)."""
    ((person, _),) = imported_tracks(body_model, [range(0, 30)], correctives="off")
    elbow = euler_elbow(person)
    before = elbow_at(person, range(1, 31))
    trim_and_offset(person, offset=5)
    assert elbow.rotation_mode == "XYZ"
    np.testing.assert_allclose(elbow_at(person, range(6, 36)), before, atol=1e-5)
    clean_up_character(person, strength=0.1, bone_group="ARMS", lock_feet=False, snap_to_ground=False, fps=30)
    assert elbow.rotation_mode == "XYZ"
    np.testing.assert_allclose(elbow_at(person, range(6, 36)), before, atol=0.02)  # lightly smoothed
    euler = keyframes.read_fcurve(keyframes.channels_of(person), keyframes.rotation_path("left_elbow", "XYZ"), 2)
    assert euler[0].tolist() == list(range(6, 36)) and euler[1].max() == pytest.approx(1.2, abs=0.02)


def test_an_offset_moves_the_other_keys_of_the_character_and_its_actions_frame_range(empty_scene, body_model):
    """Before: only the motion's curves moved; the user's scale and custom property keys, the body's
    own shape keys and the action's manual frame range (which export takes) stayed where they were."""
    ((person, body),) = imported_tracks(body_model, [range(0, 30)])
    head = person.pose.bones["head"]
    for frame, size in ((20, 1.0), (40, 1.5)):
        head.scale = (size, size, size)
        head.keyframe_insert("scale", frame=frame)
    person["glow"] = 0.0
    person.keyframe_insert('["glow"]', frame=12)
    shape = body.data.shape_keys.key_blocks["Shape000"]
    shape.keyframe_insert("value", frame=5)
    action = person.animation_data.action
    action.use_frame_range, action.frame_start, action.frame_end = True, 1, 30
    trim_and_offset(person, offset=10)
    assert [k[0] for k in curve_keys(person, 'pose.bones["head"].scale', 0)] == [30.0, 50.0]
    assert [k[0] for k in curve_keys(person, '["glow"]', 0)] == [22.0]
    assert [k[0] for k in curve_keys(body.data.shape_keys, 'key_blocks["Shape000"].value', 0)] == [15.0]
    assert tuple(action.frame_range) == (11.0, 40.0) and keyframes.keyed_range(person) == (11.0, 40.0)
    assert read_motion(person)[0][[0, -1]].tolist() == [11.0, 40.0]


# A modifier of each kind with settings on the timeline's frames: {name: (type, settings)}.
TIMED_MODIFIERS = {
    "restricted": ("NOISE", dict(scale=4.0, strength=0.5, offset=2.0, use_restricted_range=True)),
    "limits": ("LIMITS", dict(use_min_x=True, use_max_x=True, min_x=18.0, max_x=33.0)),
    "stepped": ("STEPPED", dict(frame_step=3.0, frame_offset=1.0, use_frame_start=True, use_frame_end=True)),
    "envelope": ("ENVELOPE", {}),
    "function": ("FNGENERATOR", dict(phase_multiplier=0.3, phase_offset=0.5, use_additive=True)),
    "polynomial": ("GENERATOR", dict(poly_order=2, use_additive=True)),
    "factorised": ("GENERATOR", dict(mode="POLYNOMIAL_FACTORISED", poly_order=2, use_additive=True)),
    "cycles": ("CYCLES", dict(use_restricted_range=True)),
    "noise_alone": ("NOISE", dict(scale=3.0, offset=-4.0)),
}


def add_timed_modifier(fcurve, name: str, **settings):
    """Add the TIMED_MODIFIERS ``name`` (``settings`` added) to ``fcurve``; -> the modifier."""
    kind, values = TIMED_MODIFIERS[name]
    modifier = fcurve.modifiers.new(kind)
    for attribute, value in {**values, **settings}.items():
        setattr(modifier, attribute, value)
    # the restricted range, or the Stepped's own range (the same names); a Cycles' past the keys
    modifier.frame_end, modifier.frame_start = (48.0, 35.0) if kind == "CYCLES" else (35.0, 15.0)
    modifier.blend_in, modifier.blend_out = 3.0, 4.0
    if kind == "GENERATOR":
        modifier.coefficients = (0.1, 0.02, 0.001) if modifier.mode == "POLYNOMIAL" else (0.05, -1.0, -0.02, 0.6)
    for frame, low, high in ((15.0, -1.0, 1.0), (25.0, 0.5, 3.0), (35.0, -2.0, 0.0)) if kind == "ENVELOPE" else ():
        point = modifier.control_points.add(frame)
        point.min, point.max = low, high
    return modifier


def modified_curves(id_block):
    """A custom property of ``id_block`` for each kind of modifier setting on the timeline's frames,
    keyed on frames 10..40 (but 'noise_alone', whose modifier alone plays); -> their data paths."""
    for name in TIMED_MODIFIERS:
        for frame, value in ((10, 0.0), (20, 1.0), (26, -0.5), (40, 2.0)) if name != "noise_alone" else ():
            id_block[name] = value
            id_block.keyframe_insert(f'["{name}"]', frame=frame)
    id_block["noise_alone"] = 0.0
    channels = keyframes.channels_of(id_block)
    channels.fcurves.new('["noise_alone"]')
    for name in TIMED_MODIFIERS:
        add_timed_modifier(channels.fcurves.find(f'["{name}"]'), name)
    return [f'["{name}"]' for name in TIMED_MODIFIERS]


@pytest.mark.parametrize("offset", [40, -35])
def test_an_offset_moves_the_frames_the_modifiers_of_the_other_keys_play_on(empty_scene, body_model, offset):
    """Before: the other keys moved but their modifiers' frames (a restricted range, a Limits' frame
    bounds, a Stepped's offset and range, a Noise's time, an Envelope's points, a Generator's
    argument) did not, nor a curve that only has a modifier: those curves played something else.
    The offsets are longer than the ranges, so a start set past its end would be clamped."""
    ((person, _),) = imported_tracks(body_model, [range(0, 30)], correctives="off")
    paths = modified_curves(person)
    frames = np.arange(0.0, 50.0, 0.75)

    def played(shift):
        fcurves = keyframes.channels_of(person).fcurves
        return {path: [fcurves.find(path).evaluate(f + shift) for f in frames] for path in paths}

    before = played(0)
    trim_and_offset(person, offset=offset)
    after = played(offset)
    assert [path for path in paths if not np.allclose(after[path], before[path], atol=1e-4)] == []


# Where each kind of timed modifier goes on the character's motion: {name: (data path, channel)}.
ON_THE_MOTION = {
    "stepped": (keyframes.rotation_path("left_knee"), 0),
    "restricted": (keyframes.rotation_path("left_knee"), 1),
    "limits": (keyframes.rotation_path("left_knee"), 2),
    "envelope": (keyframes.rotation_path("right_elbow"), 1),
    "function": (keyframes.rotation_path("right_elbow"), 2),
    "noise_alone": (keyframes.rotation_path("right_elbow"), 3),  # here over keys, on every frame
    "polynomial": (LOC_PATH, 0),
    "factorised": (LOC_PATH, 1),
    "cycles": (LOC_PATH, 2),
}


def with_timed_modifiers():
    """A 40-frame character with a modifier of each kind on its motion (a Generator on the pelvis
    restricted to frames 15..35)."""
    source, _, _ = rigs.smpl_source(T=40)
    channels = keyframes.channels_of(source)
    for name, (path, c) in ON_THE_MOTION.items():
        restricted = {"use_restricted_range": True} if name == "polynomial" else {}
        add_timed_modifier(channels.fcurves.find(path, index=c), name, **restricted)
    return source


@pytest.mark.parametrize("start, end, offset", [(None, None, 40), (None, None, -35), (9, 36, 5)])
def test_an_offset_moves_the_frames_the_modifiers_of_the_motion_play_on(start, end, offset):
    """Before: an Offset baked into the keys every modifier of the motion but a Cycles and Limits on
    values, removed them and warned. Now each stays, its frames moved with the keys: the character
    plays at f + offset what it played at f (with a Trim, what the same Trim alone plays: the
    modifiers keep the frames their keys were made for, moved), each curve at any frame."""
    rigs.reset_scene()
    trimmed, moved = with_timed_modifiers(), with_timed_modifiers()
    messages = []
    trim_and_offset(trimmed, start=start, end=end, warn=messages.append)
    trim_and_offset(moved, start=start, end=end, offset=offset, warn=messages.append)
    frames = np.arange(-5.0, 60.0, 0.75)
    for path, c in ON_THE_MOTION.values():
        want = [keyframes.channels_of(trimmed).fcurves.find(path, index=c).evaluate(f) for f in frames]
        got = [keyframes.channels_of(moved).fcurves.find(path, index=c).evaluate(f + offset) for f in frames]
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"{path}[{c}]")
    for bone, attribute in (("left_knee", "rotation_quaternion"), ("right_elbow", "rotation_quaternion")):
        want = played(trimmed, range(-5, 60), bone, attribute)
        np.testing.assert_allclose(played(moved, range(-5 + offset, 60 + offset), bone, attribute), want, atol=1e-4)
    want = played(trimmed, range(-5, 60), "pelvis", "location")
    np.testing.assert_allclose(played(moved, range(-5 + offset, 60 + offset), "pelvis", "location"), want, atol=1e-4)
    assert messages == []
    for name, (path, c) in ON_THE_MOTION.items():
        assert modifier_types(moved, path, c) == [TIMED_MODIFIERS[name][0]], name
    generator = modifiers(moved, LOC_PATH, 0)[0]  # its restricted range moved with the keys
    assert generator.use_restricted_range and (generator.frame_start, generator.frame_end) == (15 + offset, 35 + offset)


def test_an_offset_moves_the_modifiers_of_the_body_curves_it_writes(empty_scene, body_model):
    """The body's visibility and baked corrective curves are written anew at the moved frames: their
    modifiers stayed on the old frames while every other curve's moved."""
    ((person, body),) = imported_tracks(body_model, [range(10, 40)], correctives="baked")
    curves = [
        keyframes.channels_of(body).fcurves.find("hide_render"),
        keyframes.channels_of(body.data.shape_keys).fcurves.find(corrective_path(0)),
    ]
    for fcurve in curves:
        noise = fcurve.modifiers.new("NOISE")
        noise.use_restricted_range, noise.frame_start, noise.frame_end = True, 15.0, 25.0
    trim_and_offset(person, offset=7)
    for data in (body, body.data.shape_keys):
        (noise,) = [m for f in keyframes.channels_of(data).fcurves for m in f.modifiers]
        assert (noise.frame_start, noise.frame_end, noise.offset) == (22.0, 32.0, 7.0)


def test_a_motion_keyed_on_twos_is_refused_and_kept(empty_scene, body_model):
    """Before: keys two frames apart were taken for gaps: a Trim that cut nothing made every key
    constant and hid the body between them, and Clean Up measured no jitter."""
    ((person, body),) = imported_tracks(body_model, [range(0, 30)], correctives="off")
    channels = keyframes.channels_of(person)
    for fcurve in channels.fcurves:
        for key in fcurve.keyframe_points:
            key.co.x = 1 + (key.co.x - 1) * 2
        fcurve.update()
    keys = curve_keys(person, keyframes.rotation_path("left_knee"), 1)
    bake = r"keys of 'P0' are 2 frames apart; clean-up works on one key a frame: bake the action first"
    with pytest.raises(VibeError, match=bake):
        trim_and_offset(person, start=1, end=59)
    with pytest.raises(VibeError, match=bake):
        clean_up_character(person, lock_feet=False, fps=30)
    assert curve_keys(person, keyframes.rotation_path("left_knee"), 1) == keys
    for fcurve in channels.fcurves:
        for key in fcurve.keyframe_points:
            key.co.x += 0.5
        fcurve.update()
    with pytest.raises(VibeError, match=r"'P0' has a pelvis rotation key between frames \(at frame 1.5\)"):
        measure_character(person)


def test_a_character_without_an_action_of_its_own_is_told_where_its_motion_is(empty_scene, body_model):
    """Before: a motion in an NLA strip (or, on 4.4+, an action without a slot for the character) was
    refused as 'not an animated SMPL character'."""
    (a, _), (b, _) = imported_tracks(body_model, [range(0, 30), range(0, 30)], correctives="off")
    animation = b.animation_data
    animation.nla_tracks.new().strips.new("Take", 1, animation.action)
    animation.action = None
    with pytest.raises(VibeError, match="motion of 'P1' is in NLA strips.*assign the strip's action"):
        clean_up_character(b, lock_feet=False, fps=30)
    if keyframes.LAYERED_ACTIONS:
        a.animation_data.action_slot = None
        with pytest.raises(VibeError, match="action 'P0_motion' of 'P0' has no slot for it.*pick its slot"):
            trim_and_offset(a, offset=3)
