"""Live capture in Blender through the REAL server (the add-on's own, from the main .venv), on the
bundled clip: the characters follow the stream from the timer step, a recording becomes the usual
character with one key per received frame, and a server that dies mid-stream is reported while the
recording so far is kept. The server's folders are isolated (XDG_* in a temp dir)."""

import threading
import time
from pathlib import Path

import bpy
import numpy as np
import pytest

from vibe_blender import keyframes, live, preferences, server_control
from vibe_blender.core.errors import VibeError
from vibe_blender.core.local_server import free_port, venv_program
from vibe_blender.core.model_data import read_body_model
from vibe_blender.core.skeleton import CAMERA_TO_BLENDER, bone_basis_quats, root_locations
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


def pose_of(armature_obj) -> tuple[np.ndarray, np.ndarray]:
    """-> (24, 4) the pose bones' quaternions, (3,) the pelvis bone's location."""
    bones = armature_obj.pose.bones
    return (
        np.array([tuple(bones[n].rotation_quaternion) for n in JOINT_NAMES]),
        np.array(bones[JOINT_NAMES[0]].location),
    )


def draw_live_panel() -> list:
    """The Live panel's layout calls (name, args, kwargs), drawn with a recording layout."""
    from test_jobs import _RecordingLayout

    from vibe_blender.live_panels import VIEW3D_PT_vibe_live

    calls = []
    VIEW3D_PT_vibe_live.draw(type("P", (), {"layout": _RecordingLayout(calls)})(), bpy.context)
    return calls


def rotation_keys(armature_obj, bone: str) -> np.ndarray:
    frames, _ = keyframes.read_fcurve(keyframes.channels_of(armature_obj), keyframes.rotation_path(bone), 0)
    return frames


def test_the_armature_follows_the_stream_and_a_recording_keys_every_received_frame(addon):
    session = live.start_live(str(CLIP), dict(PARAMS, max_frames=30), use_timer=False)
    live.start_recording()  # before the first frame: the whole session is recorded
    with pytest.raises(VibeError, match="already running"):
        live.start_live(str(CLIP), use_timer=False)
    first_seen = {}  # track id -> (rotations, pelvis location) when its character appeared
    deadline = time.monotonic() + 120
    drawn_streaming = False
    while live.live_tick() is not None:
        if session.state == "streaming" and not drawn_streaming:
            calls = draw_live_panel()
            assert ("operator", ("vibe_mocap.live_stop",), {"icon": "PAUSE"}) in calls
            assert ("operator", ("vibe_mocap.live_record_stop",), {"icon": "SNAP_FACE"}) in calls
            drawn_streaming = True
        for tid, character in session.characters.items():
            first_seen.setdefault(tid, pose_of(bpy.data.objects[character.armature_name]))
        assert session.state != "failed" and time.monotonic() < deadline, session.message
        time.sleep(0.02)
    assert session.state == "ended", session.message
    assert session.frames_shown >= 2 and session.characters

    characters = live.stop_recording()
    take = session.last_take
    assert 0 < len({f for ids in take.frame_ids.values() for f in ids}) <= session.connection.frames_received
    assert session.last_result_path.is_file()
    # The walker (the longest track) moved with the stream: its live armature now holds exactly the
    # last frame received for it, which differs from the one it appeared with.
    walker = max(take.track_ids, key=lambda t: len(take.frame_ids[t]))
    armature = bpy.data.objects[session.characters[walker].armature_name]
    character = session.characters[walker]
    expected = (
        bone_basis_quats(take.pose[walker][-1][None], rest_quats(armature), CAMERA_TO_BLENDER)[0],
        root_locations(
            take.trans_cam_m[walker][-1][None], character.J0, character.q_rest[0], CAMERA_TO_BLENDER, character.offset
        )[0],
    )
    now = pose_of(armature)
    np.testing.assert_allclose(now[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(now[1], expected[1], atol=1e-5)
    assert np.linalg.norm(now[1] - first_seen[walker][1]) > 0.01  # the pelvis moved by more than 1 cm

    assert len(characters) == len(take.track_ids)
    first_frame = min(min(ids) for ids in take.frame_ids.values())
    for tid in take.track_ids:
        arm, mesh = next(c for c in characters if c[0].name.startswith(f"track_{tid}"))
        assert mesh.type == "MESH" and mesh.parent == arm
        assert mesh.data.shape_keys is not None and len(mesh.data.shape_keys.key_blocks) >= 11
        received = np.asarray(take.frame_ids[tid])
        for bone in (JOINT_NAMES[0], JOINT_NAMES[5]):
            keys = rotation_keys(arm, bone)
            assert len(keys) == len(received) == len(set(received.tolist()))  # exactly one key per frame
            np.testing.assert_array_equal(keys, received - first_frame + 1)


def test_stop_ends_the_session_on_the_server_and_keeps_the_characters(addon, monkeypatch):
    stopped = threading.Event()  # holds the connecting thread until Stop was pressed

    def read_body_model_after_stop(path):
        stopped.wait(10)
        return read_body_model(path)

    monkeypatch.setattr(live, "read_body_model", read_body_model_after_stop)
    session = live.start_live(str(CLIP), dict(PARAMS, max_frames=10_000), use_timer=False)
    assert session.state == "connecting"
    assert bpy.ops.vibe_mocap.live_stop() == {"FINISHED"}  # while connecting: it never starts
    stopped.set()
    tick_until(lambda: live.live_tick() is None, 60)
    session.connector.join(30)
    assert session.state == "ended" and session.connection is None and session.body_model is not None
    assert session.message == "Stopped before the live session started."
    monkeypatch.undo()

    settings = bpy.context.scene.vibe_live  # the panel's way: the clip plays at its own speed
    settings.source, settings.detector = str(CLIP), "hog"
    assert bpy.ops.vibe_mocap.live_start() == {"FINISHED"}
    assert bpy.app.timers.is_registered(live.live_tick)  # Blender would call the step from now on
    session = live.current_session()
    tick_until(lambda: session.state == "streaming" and session.characters)
    names = [c.armature_name for c in session.characters.values()]
    live.stop_live()
    tick_until(lambda: live.live_tick() is None, 30)
    assert session.state == "ended" and not session.connection.error
    status = session.connection.client.live_status(session.connection.live_id)
    assert status["status"] == "stopped"  # the server's session stopped too
    assert all(name in bpy.data.objects for name in names)


def test_a_source_the_server_refuses_is_reported(addon, tmp_path):
    session = live.start_live(str(tmp_path / "no-such-video.mp4"), use_timer=False)
    tick_until(lambda: live.live_tick() is None, 60)
    assert session.state == "failed"
    assert "not found" in session.message and "no-such-video.mp4" in session.message  # the server's reason
    assert bpy.ops.vibe_mocap.live_stop() == {"FINISHED"}  # nothing left to stop: no error


def test_a_server_dying_mid_stream_is_reported_and_the_recording_is_kept(addon):
    session = live.start_live(str(CLIP), dict(PARAMS, max_frames=10_000), use_timer=False)
    live.start_recording()
    tick_until(lambda: session.state == "streaming" and session.connection.frames_received >= 10 and session.characters)
    server = server_control.local_server()
    assert server.snapshot().state == "ready"
    server._process.kill()
    tick_until(lambda: live.live_tick() is None, 60)
    assert session.state == "lost"
    assert "lost" in session.message and "recording so far is kept" in session.message
    calls = draw_live_panel()
    assert any(name == "label" and kw.get("icon") == "ERROR" and "lost" in kw["text"] for name, _, kw in calls)
    assert ("operator", ("vibe_mocap.live_record_stop",), {"icon": "SNAP_FACE"}) in calls  # still recording

    characters = live.stop_recording()
    take = session.last_take
    assert take.rows >= 1 and session.last_result_path.is_file()
    assert len(characters) == len(take.track_ids)
    for tid in take.track_ids:
        arm, mesh = next(c for c in characters if c[0].name.startswith(f"track_{tid}"))
        assert mesh.data.shape_keys is not None
        assert len(rotation_keys(arm, JOINT_NAMES[0])) == len(take.frame_ids[tid])


def test_bad_requests_give_one_clear_message(addon):
    bpy.context.scene.vibe_live.source = "  "
    with pytest.raises(RuntimeError, match="Choose a live source"):
        bpy.ops.vibe_mocap.live_start()
    session = live.current_session()
    if session is not None and session.state not in live.FINAL_STATES:
        live.stop_live()
        tick_until(lambda: live.live_tick() is None, 30)
    with pytest.raises(RuntimeError, match="Start a live session first"):
        bpy.ops.vibe_mocap.live_record()
    with pytest.raises(RuntimeError, match="Nothing was recorded"):
        bpy.ops.vibe_mocap.live_record_stop()
