"""Live capture in Blender through the REAL server (the add-on's own, from the main .venv), on the
bundled clip: the characters follow the stream from the timer step, a recording becomes the usual
character with one key per received frame, and a server that dies mid-stream is reported while the
recording so far is kept. The server's folders are isolated (XDG_* in a temp dir)."""

import time
from pathlib import Path

import bpy
import numpy as np
import pytest

from vibe_blender import keyframes, live, preferences, server_control
from vibe_blender.core.errors import VibeError
from vibe_blender.core.local_server import free_port, venv_program
from vibe_blender.core.skeleton import CAMERA_TO_BLENDER, bone_basis_quats
from vibe_blender.core.smpl_model import JOINT_NAMES
from vibe_blender.rig_builder import rest_quats

pytestmark = pytest.mark.blender
REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "samples" / "one-person-walk.mp4"
PARAMS = {"detector": "hog", "lossless": True}


@pytest.fixture(scope="module")
def addon(tmp_path_factory):
    """The add-on registered, with isolated user folders and a free loopback URL where nothing
    answers (so the first live session starts the add-on's own server, shared by the tests)."""
    import vibe_blender

    if not venv_program(REPO).is_file():
        pytest.fail("The main .venv's vibe-mocap is missing: run scripts/setup.sh first.")
    base = tmp_path_factory.mktemp("user_dirs")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            mp.setenv(name, str(base / name.lower()))
        mp.setattr(preferences._Defaults, "server_url", f"http://127.0.0.1:{free_port()}")
        vibe_blender.register()
        yield
        server_control.stop_server()
        vibe_blender.unregister()


def tick_until(condition, timeout_s=120.0):
    """Run the Live timer's step as Blender would, until ``condition()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        live.live_tick()
        session = live.current_session()
        assert time.monotonic() < deadline, (session.state, session.message)
        time.sleep(0.02)


def pose_of(armature_obj) -> np.ndarray:
    """(24, 4) the pose bones' quaternions."""
    return np.array([tuple(armature_obj.pose.bones[n].rotation_quaternion) for n in JOINT_NAMES])


def rotation_keys(armature_obj, bone: str) -> np.ndarray:
    frames, _ = keyframes.read_fcurve(keyframes.channels_of(armature_obj), keyframes.rotation_path(bone), 0)
    return frames


def test_the_armature_follows_the_stream_and_a_recording_keys_every_received_frame(addon):
    session = live.start_live(str(CLIP), dict(PARAMS, max_frames=30), use_timer=False)
    live.start_recording()  # before the first frame: the whole session is recorded
    tick_until(lambda: session.characters)
    armature = bpy.data.objects[session.characters[min(session.characters)].armature_name]
    first_pose = pose_of(armature)
    while live.live_tick() is not None:
        assert session.state != "failed", session.message
        time.sleep(0.02)
    assert session.state == "ended", session.message
    assert session.frames_shown >= 2
    assert not np.allclose(pose_of(armature), first_pose, atol=1e-4)  # it moved with the stream

    characters = live.stop_recording()
    take = session.last_take
    assert 0 < len({f for ids in take.frame_ids.values() for f in ids}) <= session.connection.frames_received
    assert session.last_result_path.is_file()
    # The live armature shows the last frame received: its bones hold that frame's rotations.
    track_id = min(session.characters)
    expected = bone_basis_quats(take.pose[track_id][-1][None], rest_quats(armature), CAMERA_TO_BLENDER)[0]
    np.testing.assert_allclose(pose_of(armature), expected, atol=1e-5)

    assert len(characters) == len(take.track_ids)
    for tid in take.track_ids:
        arm, mesh = next(c for c in characters if c[0].name.startswith(f"track_{tid}"))
        assert mesh.type == "MESH" and mesh.parent == arm
        assert mesh.data.shape_keys is not None and len(mesh.data.shape_keys.key_blocks) >= 11
        keys = rotation_keys(arm, JOINT_NAMES[0])
        received = np.asarray(take.frame_ids[tid])
        assert len(keys) == len(received) == len(set(received.tolist()))  # exactly one key per frame
        np.testing.assert_array_equal(keys, received - min(min(v) for v in take.frame_ids.values()) + 1)


def test_a_server_dying_mid_stream_is_reported_and_the_recording_is_kept(addon):
    session = live.start_live(str(CLIP), dict(PARAMS, max_frames=10_000), use_timer=False)
    live.start_recording()
    tick_until(lambda: session.state == "streaming" and session.connection.frames_received >= 3)
    server = server_control.local_server()
    assert server.snapshot().state == "ready"
    server._process.kill()
    tick_until(lambda: live.live_tick() is None, 60)
    assert session.state == "lost"
    assert "lost" in session.message and "recording so far is kept" in session.message

    characters = live.stop_recording()
    take = session.last_take
    assert take.rows >= 3 and session.last_result_path.is_file()
    arm, mesh = characters[0]
    assert mesh.data.shape_keys is not None
    tid = take.track_ids[0]
    assert len(rotation_keys(arm, JOINT_NAMES[0])) == len(take.frame_ids[tid])


def test_bad_requests_give_one_clear_message(addon):
    with pytest.raises(VibeError, match="Choose a live source"):
        live.start_live("  ", use_timer=False)
    session = live.current_session()
    if session is not None and session.state not in live.FINAL_STATES:
        live.stop_live()
        tick_until(lambda: live.live_tick() is None, 30)
    with pytest.raises(VibeError, match="Start a live session first"):
        live.start_recording()
    assert bpy.ops.vibe_mocap.live_record_stop() == {"CANCELLED"}  # nothing recorded: one ERROR report
