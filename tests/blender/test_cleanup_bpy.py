"""Clean-up on a character's keys in Blender: jitter and foot slide halve, trim/offset, merge."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy")

from vibe_blender.cleanup_ops import clean_up_character, merge_characters, read_motion, trim_and_offset, write_motion  # noqa: E402
from vibe_blender.core.errors import VibeError  # noqa: E402

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
