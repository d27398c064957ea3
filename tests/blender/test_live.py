"""Live capture in Blender through the REAL server (the add-on's own, from the main .venv), on the
bundled clip: the characters follow the stream from the timer step, a recording becomes the usual
character keyed on the scene's frames at real speed, and a server that dies mid-stream is reported
while the recording so far is kept. The server's folders are isolated (XDG_* in a temp dir). What the
real server never does (answer slowly, send malformed messages, drop frames by the dozen on cue) runs
against tests/fake_live_server.py and recordings made in code."""

import functools
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import bpy
import numpy as np
import pytest
from blender_eval import evaluated_joints
from fake_live_server import END, HOLD, LIVE_ID, FakeLiveServer, frame_message, moving_take, person

from vibe_blender import keyframes, live, preferences, server_control
from vibe_blender.core import atomic_file, live_client
from vibe_blender.core.client import ServerClient
from vibe_blender.core.errors import VibeError
from vibe_blender.core.live_client import LiveConnection, LiveFrameMessage, LivePersonFrame, LiveTake, take_on_frames
from vibe_blender.core.local_server import free_port, venv_program
from vibe_blender.core.model_data import load_served_body_model
from vibe_blender.core.result_file import MocapResult, Track, VideoInfo, load_result
from vibe_blender.core.skeleton import CAMERA_TO_BLENDER, bone_basis_quats, root_locations
from vibe_blender.core.smpl_model import JOINT_NAMES
from vibe_blender.core.take_files import SAVED_ON_EXIT_NOTE
from vibe_blender.core.take_journal import JOURNAL_FOLDER, TakeJournal, read_journal
from vibe_blender.importer import ImportOptions, import_motion_file
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
        deadline = time.monotonic() + 60
        while server_control.server_status().state == "stopping" and time.monotonic() < deadline:
            time.sleep(0.1)  # its graceful stop ends before the add-on's quick stop
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


def test_the_armature_follows_the_stream_and_a_recording_keys_every_received_frame(addon, empty_scene):
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
    # the add-on's server runs without model data here: the panel says why the motion is random
    assert session.placeholder and session.message.endswith(live.PLACEHOLDER_NOTICE), session.message

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
    # The take plays at real speed: its scene frames span the time between its first and last frames.
    fps, scene = keyframes.scene_fps(), bpy.context.scene
    times = np.asarray(take.received_time_s)
    assert abs((scene.frame_end - scene.frame_start) / fps - (times[-1] - times[0])) <= 0.5 / fps
    placed = take_on_frames(take, fps)
    for tid in take.track_ids:
        arm, mesh = next(c for c in characters if c[0].name.startswith(f"track_{tid}"))
        assert mesh.type == "MESH" and mesh.parent == arm
        assert mesh.data.shape_keys is not None and len(mesh.data.shape_keys.key_blocks) >= 11
        for bone in (JOINT_NAMES[0], JOINT_NAMES[5]):
            np.testing.assert_array_equal(rotation_keys(arm, bone), placed.frame_ids[tid] + 1)


def test_stop_ends_the_session_on_the_server_and_keeps_the_characters(addon, monkeypatch):
    stopped = threading.Event()  # holds the connecting thread until Stop was pressed

    def load_body_model_after_stop(client, path):
        stopped.wait(10)
        return load_served_body_model(client, path)

    monkeypatch.setattr(live, "load_served_body_model", load_body_model_after_stop)
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
    # the server's reason: the one answer for a path it cannot read, whether missing, unreadable or no video
    assert "is not a readable video file on this machine" in session.message and "no-such-video.mp4" in session.message
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
        assert len(rotation_keys(arm, JOINT_NAMES[0])) == len(
            take_on_frames(take, keyframes.scene_fps()).frame_ids[tid]
        )


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
    with pytest.raises(RuntimeError, match="Nothing is being recorded"):
        bpy.ops.vibe_mocap.live_record_stop()


# -- recordings made in code, and a fake server ------------------------------------------------
def import_recording(body_model, take, fps: int) -> tuple:
    """Stop Recording on a session that recorded ``take``, in a scene of ``fps`` -> (armature, mesh)."""
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = fps, 1.0
    connection = LiveConnection(client=None)
    connection.recording_start()
    connection._take, connection.state = take, "ended"
    live._current["session"] = live.LiveSession(source="0", connection=connection, body_model=body_model)
    ((armature, mesh),) = live.stop_recording()
    return armature, mesh


def hidden_frames(mesh) -> list[int]:
    scene = bpy.context.scene
    hidden = []
    for frame in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(frame)
        if mesh.hide_viewport or mesh.hide_render:
            hidden.append(frame)
    return hidden


def test_a_recording_with_dropped_frames_imports_smooth_at_real_speed(addon, empty_scene, body_model):
    """2 s of a 30 frames/s camera where the server dropped every other frame, in a 24 frames/s
    scene: the body was hidden on each dropped frame, held still before it (CONSTANT keys), and the
    take played at the wrong speed (one scene frame per source frame)."""
    armature, mesh = import_recording(body_model, moving_take(range(0, 60, 2)), 24)
    scene = bpy.context.scene
    assert keyframes.scene_fps() == 24
    assert abs(scene.frame_end - scene.frame_start + 1 - 2 * 24) <= 1
    assert hidden_frames(mesh) == []
    np.testing.assert_array_equal(
        rotation_keys(armature, JOINT_NAMES[1]), np.arange(scene.frame_start, scene.frame_end + 1)
    )
    channels = keyframes.channels_of(armature)
    for fcurve in channels.fcurves:
        interpolation = np.empty(len(fcurve.keyframe_points), dtype=np.int32)
        fcurve.keyframe_points.foreach_get("interpolation", interpolation)
        assert np.all(interpolation == keyframes.LINEAR), fcurve.data_path


def test_a_person_missing_from_processed_frames_is_hidden_there(addon, empty_scene, body_model):
    absent = {20, 22, 24}  # frames the server processed without seeing the person
    armature, mesh = import_recording(body_model, moving_take(range(0, 60, 2), absent=absent), 24)
    scene = bpy.context.scene
    gap = [
        f for f in range(scene.frame_start, scene.frame_end + 1) if 20 / 30 <= (f - scene.frame_start) / 24 <= 24 / 30
    ]
    assert gap and set(gap) <= set(hidden_frames(mesh))
    assert scene.frame_start not in hidden_frames(mesh) and scene.frame_end not in hidden_frames(mesh)


def test_a_stall_in_the_stream_is_hidden_not_played_in_slow_motion(addon, empty_scene, body_model):
    """The last frame of a stalled stream comes 10 s late: the body walked through those 10 s in
    slow motion, from its pose before the stall to that last one."""
    armature, mesh = import_recording(body_model, moving_take([*range(0, 60, 2), 360]), 24)
    scene = bpy.context.scene
    shown = list(range(scene.frame_start, scene.frame_start + 47))  # up to the last frame before the stall (58/30 s)
    assert scene.frame_end == scene.frame_start + 288  # the last frame, 12 s in
    assert hidden_frames(mesh) == list(range(shown[-1] + 1, scene.frame_end))
    assert rotation_keys(armature, JOINT_NAMES[1]).tolist() == [*shown, scene.frame_end]


@pytest.fixture
def fake_server_setup(monkeypatch, reference_dir):
    """Live sessions go to the URL given (no add-on server is started), the usual requests time out
    after 2 s, and a fake server serves the reference body model."""
    monkeypatch.setattr(server_control, "server_for_capture", lambda url, token, start: (url, token))
    monkeypatch.setattr(live, "ServerClient", functools.partial(ServerClient, timeout_s=2.0))
    return {"body_model": reference_dir / "body_model.npz"}


@pytest.mark.parametrize("ending", ["the connection fails", "Stop Live while connecting"])
def test_record_pressed_while_connecting_ends_with_a_start_that_never_came(
    addon, body_model, monkeypatch, tmp_path, ending
):
    """The panel went on showing "Recording…" (and Stop Recording) under the error for good."""
    session = live.LiveSession(source="0", body_model=body_model)
    session.record_on_connect = True  # Record pressed while connecting
    if ending == "the connection fails":

        def unreachable(client, path):
            raise VibeError("Cannot reach the VIBE Mocap server.")

        monkeypatch.setattr(live, "load_served_body_model", unreachable)
    else:
        monkeypatch.setattr(live, "load_served_body_model", lambda client, path: body_model)
        session.stop_requested = True
    live._connect(
        session, server_control.ChosenServer("http://192.0.2.1:8765", "token", None), {}, tmp_path / "body_model.npz"
    )
    assert session.connection is None and not session.recording
    assert (session.state == "failed") == (ending == "the connection fails")


@pytest.mark.parametrize("ending", ["Stop Live", "the server refuses the start"])
def test_record_pressed_while_the_start_request_is_out_ends_with_a_session_that_recorded_nothing(
    addon, fake_server_setup, ending
):
    """The same as above, reached once the connection exists but the server has not answered its
    start: the panel showed "Recording…" and Stop Recording for good on a session that had ended."""
    gate = threading.Event()  # the server answers the start once the test opens it
    answer = {"live_id": "bad id"} if ending == "the server refuses the start" else None
    with FakeLiveServer([], start_gate=gate, start_answer=answer, **fake_server_setup) as server:
        session = live.start_live("0", server_url=server.url, token=server.token, use_timer=False)
        tick_until(lambda: session.connection is not None, 30)  # the start request is out
        live.start_recording()
        if ending == "Stop Live":
            live.stop_live()
        else:
            gate.set()
        tick_until(lambda: live.live_tick() is None, 30)
        gate.set()
    assert session.state in live.FINAL_STATES and not session.recording, session.message
    calls = draw_live_panel()
    assert ("operator", ("vibe_mocap.live_record",), {"icon": "REC"}) in calls
    assert not any(name == "label" and kw.get("icon") == "REC" for name, _, kw in calls), calls


def test_a_session_over_with_a_take_says_to_save_it(addon, body_model):
    """After the session ended with motion recorded, the panel still said "Recording…"."""
    take = moving_take(range(5))
    session = recorded_session(body_model, take, state="lost")
    calls = draw_live_panel()
    session.connection.recording_stop()  # the next test starts without this take
    assert ("operator", ("vibe_mocap.live_record_stop",), {"icon": "SNAP_FACE"}) in calls
    labels = [kw.get("text", args[0] if args else "") for name, args, kw in calls if name == "label"]
    assert "Recording…" not in labels and live.TAKE_AFTER_END in " ".join(labels), labels


def test_a_slow_start_bad_messages_and_a_lost_connection(addon, fake_server_setup):
    """The start request waits for the server to open its source (it timed out with the client's
    usual timeout and said the server was unreachable); malformed messages are counted in the panel;
    a lost connection asks the server to stop the session, which nobody follows any more."""
    bad_pose = frame_message(1, 10.05, [person(1, pose=[0.0] * 71)])
    after_a_stall = frame_message(3, 100.0, [person(1)])  # 90 s on: a gap, and the stream goes on
    messages = [frame_message(0, 10.0, [person(1)]), bad_pose, "{not json", frame_message(2, 10.1, [person(1)])]
    with FakeLiveServer([*messages, after_a_stall], after="close", start_delay_s=4.0, **fake_server_setup) as server:
        session = live.start_live("0", server_url=server.url, token=server.token, use_timer=False)
        tick_until(lambda: live.live_tick() is None, 30)
        assert server.wait_for_stop()
    assert session.state == "lost" and "lost" in session.message, session.message
    assert session.connection.frames_received == 3 and session.characters
    calls = draw_live_panel()
    assert any(name == "label" and "Skipped 2 malformed" in kw["text"] for name, _, kw in calls), calls
    assert any(name == "label" and "frame times jumped 1 time(s)" in kw["text"] for name, _, kw in calls), calls


def test_a_session_the_server_ends_as_failed_is_shown_failed_with_its_reason(addon, fake_server_setup):
    """It was shown as a normal end, the reason under an information icon."""
    reason = "The stream sent nothing for 10 s; check that it is still running."
    end = json.dumps({"type": "end", "status": "failed", "error": reason, "stats": {}})
    with FakeLiveServer([frame_message(0, 10.0, [person(1)]), end], **fake_server_setup) as server:
        session = live.start_live("0", server_url=server.url, token=server.token, use_timer=False)
        tick_until(lambda: live.live_tick() is None, 30)
    assert session.state == "failed" and session.message == reason
    state_line = next(kw for name, _, kw in draw_live_panel() if name == "label")
    assert reason.startswith(state_line["text"]) and state_line["icon"] == "ERROR", state_line


def test_stop_while_the_server_starts_the_session(addon, fake_server_setup):
    opened = threading.Event()  # the server answers the start once the test opens it
    messages = [frame_message(0, 10.0, [person(1)])]
    with FakeLiveServer(messages, start_gate=opened, **fake_server_setup) as server:
        session = live.start_live("0", server_url=server.url, token=server.token, use_timer=False)
        tick_until(lambda: session.connection is not None, 30)  # the start request is out
        live.stop_live()
        tick_until(lambda: live.live_tick() is None, 30)  # ended without waiting for the server's answer
        assert session.state == "ended" and not server.stop_requests
        opened.set()
        assert server.wait_for_stop()  # the session the server then started is stopped there
    assert server.stop_requests == [LIVE_ID] and server.streams_opened == 0


def test_record_while_recording_is_refused_and_the_take_is_kept(addon, body_model):
    """Record pressed again while recording started a new take in place of the one running: the
    motion recorded so far was lost. Record and Stop Recording are greyed out when they cannot run."""
    take = moving_take(range(5))
    session = recorded_session(body_model, take, state="streaming")
    try:
        assert not bpy.ops.vibe_mocap.live_record.poll() and bpy.ops.vibe_mocap.live_record_stop.poll()
        with pytest.raises(RuntimeError, match=re.escape(live.RECORDING_RUNS)):
            bpy.ops.vibe_mocap.live_record()
        with pytest.raises(VibeError, match=re.escape(live.RECORDING_RUNS)):
            live.start_recording()
        assert session.connection.recording_stop() is take and take.rows == 5
        assert bpy.ops.vibe_mocap.live_record.poll() and not bpy.ops.vibe_mocap.live_record_stop.poll()
        with pytest.raises(RuntimeError, match="Nothing is being recorded: press Record"):
            bpy.ops.vibe_mocap.live_record_stop()
    finally:
        session.connection.state = "ended"  # the next test may start a session


def test_the_panel_says_a_recording_is_full_until_it_is_saved(addon, empty_scene, body_model):
    """The size limit stayed in the panel after the take was saved, over the next recording too."""
    take = moving_take(range(5))
    take.full = True  # a frame did not fit
    session = recorded_session(body_model, take, state="streaming")
    try:
        labels = " ".join(kw.get("text", "") for name, args, kw in draw_live_panel() if name == "label")
        assert live.RECORDING_FULL in labels and "Recording…" not in labels
        live.stop_recording()
        live.start_recording()
        labels = " ".join(kw.get("text", "") for name, args, kw in draw_live_panel() if name == "label")
        assert "size limit" not in labels and "Recording…" in labels, labels
    finally:
        session.connection.recording_stop()
        session.connection.state = "ended"  # the next test may start a session


def recorded_session(body_model, take, state="ended") -> live.LiveSession:
    """The current session: a connection in ``state`` that recorded ``take`` and still records."""
    connection = LiveConnection(client=None)
    connection.recording_start()
    connection._take, connection.state = take, state
    session = live.LiveSession(source="0", connection=connection, body_model=body_model)
    live._current["session"] = session
    return session


def raise_oserror(errno: int, text: str):
    def fail(*args, **kwargs):
        raise OSError(errno, text)

    return fail


def test_a_recording_that_cannot_be_written_is_kept_until_a_retry_saves_it(
    addon, empty_scene, body_model, tmp_path, monkeypatch
):
    """The take was taken out of the connection before its file was written: a failed write lost it,
    showed a traceback, and could leave a partial .npz under the final name. A results folder that
    Blender could not make was taken to be the working folder: the take was written there."""
    take = moving_take(range(0, 60, 2))
    session = recorded_session(body_model, take)
    monkeypatch.chdir(tmp_path)  # Blender's working folder
    results = preferences.user_dir("results")
    saved = sorted(results.iterdir())
    aside = results.rename(results.with_name("results-aside"))
    results.write_text("a file where the results folder should be")
    try:
        with pytest.raises(
            RuntimeError, match=rf"cannot make its folder '{re.escape(str(results))}'.*Move that file away"
        ):
            bpy.ops.vibe_mocap.live_record_stop()  # one report, no traceback
    finally:
        results.unlink()
        aside.rename(results)
    assert list(tmp_path.iterdir()) == []
    assert session.unsaved_take is take and session.recording and session.last_result_path is None
    calls = draw_live_panel()
    assert ("operator", ("vibe_mocap.live_record_stop",), {"icon": "SNAP_FACE"}) in calls
    assert any(kw.get("text", "").startswith("The last recording is not saved") for _, _, kw in calls), calls
    with pytest.raises(VibeError, match="not saved yet"):
        live.start_recording()  # one take at a time: the unsaved one first

    with monkeypatch.context() as disk_full:  # the write fails at its end: nothing under the final name
        disk_full.setattr(atomic_file.os, "replace", raise_oserror(28, "No space left on device"))
        with pytest.raises(VibeError, match=r"could not be saved in .*No space left on device.*the take is kept"):
            live.stop_recording()
    assert sorted(results.iterdir()) == saved and session.unsaved_take is take

    def open_on_a_full_disk(file, mode="r", *args, **kwargs):
        opened = open(file, mode, *args, **kwargs)
        return DiskFullAfter(opened, 4096) if mode == "wb" else opened  # (the file the take is written into)

    with monkeypatch.context() as disk_full:  # the disk fills while the take is compressed into the file
        disk_full.setattr(atomic_file, "open", open_on_a_full_disk, raising=False)  # the builtin, as it finds it
        with pytest.raises(VibeError, match=r"could not be saved in .*No space left on device.*the take is kept"):
            live.stop_recording()
    assert sorted(results.iterdir()) == saved and session.unsaved_take is take  # no part file either

    ((armature, _),) = live.stop_recording()  # the retry saves it
    assert session.unsaved_take is None and session.last_take is take and not session.recording
    assert sorted(results.iterdir()) == sorted([*saved, session.last_result_path])
    assert rotation_keys(armature, JOINT_NAMES[1]).size > 0


class DiskFullAfter:
    """A binary file on a disk that is full once ``room`` bytes are written to it."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_a_take_not_saved_is_saved_when_the_addon_goes_and_the_next_run_says_where(addon, empty_scene, body_model):
    """Disabling the add-on, Reload Scripts or quitting Blender (which disables its add-ons) threw away
    a take Stop Recording had not saved, without a word: it lived only in the session's memory."""
    take = moving_take(range(30))
    session = recorded_session(body_model, LiveTake(), state="streaming")
    session.connection.recording_stop()
    bpy.context.scene.render.fps = 25
    live.start_recording()  # notes where the take goes, and at what rate: at exit Blender's data may be gone
    session.connection._take = take  # recording when the add-on goes
    results = preferences.user_dir("results")
    before = set(results.iterdir())
    try:
        live.unregister()
    finally:
        session.connection.state = "ended"  # the next test may start a session
        live.register()  # as the add-on enabled again, or the next run of Blender
    (saved,) = set(results.iterdir()) - before - {results / SAVED_ON_EXIT_NOTE}
    assert session.last_result_path == saved and not session.recording
    result = load_result(saved)
    assert result.video.fps == 25.0 and len(result.tracks[0].frame_ids) == len(take_on_frames(take, 25).frame_ids[1])

    notice = live.takes_saved_on_exit_notice()
    assert notice is not None and f"'{saved}'" in notice and "File > Import > VIBE Mocap" in notice
    calls = draw_live_panel()
    shown = " ".join(kw.get("text", "") for name, _, kw in calls if name == "label")
    assert str(saved) in shown and "Stop Recording had not saved when Blender quit" in shown, shown
    assert ("operator", ("vibe_mocap.live_dismiss_saved_takes",), {"icon": "CHECKMARK"}) in calls
    assert bpy.ops.vibe_mocap.live_dismiss_saved_takes() == {"FINISHED"}
    assert live.takes_saved_on_exit_notice() is None and saved.is_file()
    assert not (results / SAVED_ON_EXIT_NOTE).exists()
    live.register()  # the next run has nothing to tell
    assert live.takes_saved_on_exit_notice() is None


def test_a_take_too_long_for_the_scenes_frames_is_saved_on_exit_at_a_rate_that_places_it(
    addon, body_model, tmp_path, monkeypatch, capsys
):
    """A take kept after Stop Recording found it too long for the scene's frame rate is saved on the way
    out at half that rate, and half again, until it fits: without Blender, no rate is lowered after. A
    save that fails there says why on the console and leaves the add-on's unregister to go on."""
    take = moving_take(range(60))  # 2 s of a 30 frames/s source
    session = recorded_session(body_model, take, state="lost")
    session.unsaved_take, session.results_dir, session.scene_fps = session.connection.recording_stop(), tmp_path, 120.0
    monkeypatch.setattr(live_client, "MAX_RECORDED_FRAMES", 100)  # the limit, scaled down to this take
    monkeypatch.setattr(live, "user_dir", None)  # at exit nothing of Blender's is read: noted at the start
    with monkeypatch.context() as disk_full:
        disk_full.setattr(atomic_file.os, "replace", raise_oserror(28, "No space left on device"))
        live.save_take_on_exit()
    assert "could not be saved on exit: " in capsys.readouterr().err and session.unsaved_take is take
    assert list(tmp_path.iterdir()) == []
    live.save_take_on_exit()
    assert session.unsaved_take is None and session.last_result_path.parent == tmp_path
    assert load_result(session.last_result_path).video.fps == 30.0  # 120 and 60 place more than 100 frames
    assert (tmp_path / SAVED_ON_EXIT_NOTE).read_text() == f"{session.last_result_path.name}\n"


def test_a_take_recording_when_blender_quits_is_saved(tmp_path):
    """Quitting runs Python's exit handlers (in the bpy module build, too, where no add-on is disabled
    first): the take recording then is saved, and the next run finds the note."""
    script = tmp_path / "quit.py"
    script.write_text(
        textwrap.dedent(f"""
        import atexit, os, sys
        from pathlib import Path
        atexit.register(os._exit, 0)  # after the add-on's handler (last in, first out): the module teardown can hang
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
        from fake_live_server import moving_take
        from vibe_blender import live
        from vibe_blender.core.live_client import LiveConnection

        live.register()
        connection = LiveConnection(client=None)
        connection.recording_start()
        connection._take, connection.state = moving_take(range(30)), "streaming"
        session = live.LiveSession(source="0", connection=connection, results_dir=Path(sys.argv[1]), scene_fps=24.0)
        live._current["session"] = session
        print("RECORDING", flush=True)
        """)
    )
    results = tmp_path / "results"
    env = dict(os.environ, TMPDIR=str(tmp_path))  # Blender's session folder, which os._exit leaves behind
    done = subprocess.run(
        [sys.executable, str(script), str(results)], capture_output=True, text=True, timeout=120, env=env
    )
    assert "RECORDING" in done.stdout and done.returncode == 0, done.stdout + done.stderr
    (name,) = (results / SAVED_ON_EXIT_NOTE).read_text().split()
    assert len(load_result(results / name).tracks[0].frame_ids) == len(
        take_on_frames(moving_take(range(30)), 24.0).frame_ids[1]
    )


def frames_of(take: LiveTake) -> list[LiveFrameMessage]:
    """The frames a connection added to ``take``, as they were received."""
    rows = {t: dict(zip(take.frame_ids[t].tolist(), take.values_at(take.track_rows(t)))) for t in take.track_ids}
    return [
        LiveFrameMessage(
            i,
            time_s,
            tuple(LivePersonFrame(t, i, *np.split(rows[t][i], [72, 82])) for t in take.track_ids if i in rows[t]),
            None,
        )
        for i, time_s in zip(take.received_index, take.received_time_s)
    ]


def journals() -> list[Path]:
    return sorted((preferences.user_dir("cache") / JOURNAL_FOLDER).glob("*.journal"))


def test_a_take_recording_when_blender_crashed_is_saved_by_the_next_run_which_says_where(
    addon, empty_scene, body_model
):
    """A crash (or Blender killed) lost the take recording: no exit handler runs. Its journal, which
    the run that crashed left behind, is saved as a take when the add-on registers again."""
    take = moving_take(range(0, 60, 2))
    take.warnings.append("The video ended early.")
    child = subprocess.Popen([sys.executable, "-c", ""])  # the run that crashed: its process is gone
    child.wait()
    results = preferences.user_dir("results")
    journal = TakeJournal.create(
        preferences.user_dir("cache") / JOURNAL_FOLDER, scene_fps=25.0, results_dir=results, owner=(child.pid, 0)
    )
    journal.add_warnings(take.warnings)
    for frame in frames_of(take):
        journal.add_frame(frame)
    journal._file.close()  # the run crashed: its lock on the journal went with it
    journal.path.write_bytes(journal.path.read_bytes()[:-100])  # the crash cut the last frame's record
    before = set(results.iterdir())
    live.register()  # the next run
    (saved,) = set(results.iterdir()) - before - {results / SAVED_ON_EXIT_NOTE}
    assert not journal.path.exists()
    result = load_result(saved)
    assert result.video.fps == 25.0 and "The video ended early." in result.meta["warnings"]
    assert result.meta["frames_received"] == str(len(take.received_index) - 1)
    notice = live.takes_saved_on_exit_notice()
    assert f"'{saved}'" in notice and "when Blender quit or stopped unexpectedly" in notice, notice
    ((armature, _),) = import_motion_file(saved, body_model, ImportOptions(add_camera=False))
    assert len(rotation_keys(armature, JOINT_NAMES[0])) == len(result.tracks[0].frame_ids)
    live.dismiss_takes_saved_on_exit()


@pytest.mark.parametrize("then", ["gone", "a file in its place"])
def test_a_crashed_take_whose_results_folder_cannot_take_it_is_saved_in_the_results_folder(
    addon, empty_scene, tmp_path, then
):
    """A take recorded into a folder since removed (a drive unplugged) or unwritable was never saved,
    and its journal was tried again at every start."""
    then_folder = tmp_path / "unplugged drive"
    if then == "a file in its place":
        then_folder.write_bytes(b"")
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    journal = TakeJournal.create(
        preferences.user_dir("cache") / JOURNAL_FOLDER, scene_fps=24.0, results_dir=then_folder, owner=(child.pid, 0)
    )
    for frame in frames_of(moving_take(range(10))):
        journal.add_frame(frame)
    journal._file.close()  # the run crashed: its lock on the journal went with it
    results = preferences.user_dir("results")
    before = set(results.iterdir())
    live.register()
    (saved,) = set(results.iterdir()) - before - {results / SAVED_ON_EXIT_NOTE}
    assert not journal.path.exists() and not then_folder.is_dir()
    assert f"'{saved}'" in live.takes_saved_on_exit_notice()
    live.dismiss_takes_saved_on_exit()


def test_a_journal_that_cannot_be_read_is_left_in_place_and_said_where(addon, capsys):
    folder = preferences.user_dir("cache") / JOURNAL_FOLDER
    folder.mkdir(exist_ok=True)
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    bad = folder / f"take-{child.pid}-0123456789abcdef.journal"
    bad.write_bytes(b"not a journal at all, whatever its name says")
    try:
        live.register()
        assert bad.exists() and f"it is kept in '{bad}'" in capsys.readouterr().err
        assert live.takes_saved_on_exit_notice() is None
    finally:
        bad.unlink()


def test_a_recording_is_journaled_until_stop_recording_saves_it(addon, empty_scene, body_model):
    take = moving_take(range(0, 30, 2))
    session = recorded_session(body_model, LiveTake(), state="streaming")
    session.connection.recording_stop()
    before = set(journals())  # those of takes other tests swapped out of their connection
    live.start_recording()
    for frame in frames_of(take):
        session.connection._record(frame)
    (journal,) = set(journals()) - before
    assert journal.name.startswith(f"take-{os.getpid()}-") and read_journal(journal).take.rows == take.rows == 15
    session.connection.state = "ended"
    live.stop_recording()
    assert set(journals()) == before and session.last_result_path.is_file()

    session.connection.state = "streaming"
    live.start_recording()
    assert len(set(journals()) - before) == 1
    session.unsaved_take = session.connection.recording_stop()  # as after a save that failed
    live.discard_take()
    assert set(journals()) == before
    session.connection.state = "ended"


def test_a_take_is_compressed_straight_into_its_file(addon, tmp_path):
    """The take was compressed into memory, then written: up to about 0.6 GB held at once at the
    recording's cap. Now memory holds a piece of it at a time (32 tracks of incompressible arrays
    here, 10 MB in the file; writing one array takes about 1.5 MB, the whole file took 12 MB)."""
    rng = np.random.default_rng(0)
    T = 1000

    def track(track_id: int) -> Track:
        return Track(
            track_id=track_id,
            frame_ids=np.arange(T),
            pose=rng.uniform(-3, 3, (T, 72)).astype(np.float32),
            betas=rng.uniform(-3, 3, (T, 10)).astype(np.float32),
            betas_track=np.zeros(10, np.float32),
            pred_cam=np.zeros((T, 3), np.float32),
            orig_cam=np.zeros((T, 4), np.float32),
            bboxes=np.zeros((T, 4), np.float32),
            joints3d=np.zeros((T, 0, 3), np.float32),
            trans_cam_m=rng.uniform(-3, 3, (T, 3)).astype(np.float32),
        )

    video = VideoInfo(name="take", fps=30.0, width=1000, height=1000, frame_count=T)
    result = MocapResult(video=video, tracks=[track(i) for i in range(32)], model_name="live", focal_length_px=1000.0)
    path = tmp_path / "results" / "take.npz"
    tracemalloc.start()
    try:
        live._write_result(path, result)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = path.stat().st_size
    assert size > 8_000_000 and peak_bytes < size / 4, (size, peak_bytes)
    assert os.stat(path).st_mode & 0o777 == 0o600 and list(path.parent.iterdir()) == [path]
    np.testing.assert_array_equal(load_result(path).track(7).pose, result.tracks[7].pose)


def test_live_characters_and_the_built_take_honour_the_unit_scale(addon, empty_scene, body_model):
    """Live characters were built at one Blender unit per metre whatever the scene's Unit Scale: in
    a scene counted in centimetres they were 100 times too small and nearer the origin than the
    take built from the same frames. A person walking with a still pose, so that the live character
    (its feet put on the floor from the frame it appears with) and the built take stand on the same
    floor."""
    take = moving_take(range(30), omega=0.0)
    last = LiveFrameMessage(
        take.received_index[-1],
        take.received_time_s[-1],
        (LivePersonFrame(1, take.frame_ids[1][-1], take.pose[1][-1], take.betas[1][-1], take.trans_cam_m[1][-1]),),
        None,
    )
    live_joints = {}
    for scale_length in (1.0, 0.01):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        scene.unit_settings.scale_length = scale_length
        scene.render.fps, scene.render.fps_base = 30, 1.0  # one scene frame per frame of the take
        session = recorded_session(body_model, take)
        live.show_frame(session, last)
        live_armature = bpy.data.objects[session.characters[1].armature_name]
        bpy.context.view_layer.update()
        live_joints[scale_length] = evaluated_joints(live_armature)
        ((built, _),) = live.stop_recording()
        scene.frame_set(scene.frame_end)  # the take's last frame, the one the live character shows
        np.testing.assert_allclose(evaluated_joints(built), live_joints[scale_length], atol=1e-4 / scale_length)
    np.testing.assert_allclose(live_joints[0.01], 100 * live_joints[1.0], atol=1e-3)
    assert np.linalg.norm(live_joints[1.0][0]) > 1  # a place away from the origin: scaling it shows


def _frame_of(take, people) -> LiveFrameMessage:
    """The take's last frame with the persons ``people`` (track ids) in it, as the server sends it."""
    i = len(take.received_index) - 1
    return LiveFrameMessage(
        take.received_index[i],
        take.received_time_s[i],
        tuple(
            LivePersonFrame(p, take.frame_ids[1][-1], take.pose[1][-1], take.betas[1][-1], take.trans_cam_m[1][-1])
            for p in people
        ),
        None,
    )


def test_a_person_seen_after_the_live_collection_was_excluded_is_built_in_the_view_layer(addon, body_model):
    """Building a character in an excluded collection raised in the timer, which Blender then drops:
    the view froze on "streaming" and half-built armatures piled up."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    take = moving_take(range(5))
    session = recorded_session(body_model, take, state="streaming")
    live.show_frame(session, _frame_of(take, [1]))
    first = bpy.data.objects[session.characters[1].armature_name].users_collection[0]
    bpy.context.view_layer.layer_collection.children[first.name].exclude = True
    live.show_frame(session, _frame_of(take, [1, 2]))
    second = bpy.data.objects[session.characters[2].armature_name]
    assert second.users_collection[0] != first and second.name in bpy.context.view_layer.objects
    assert [o.name for o in bpy.data.objects if o.type == "ARMATURE"] == ["live_1", "live_2"]


def test_a_renamed_live_character_goes_on_following_its_person(addon, body_model):
    """The view found its characters by name: after the user renamed "live_1" to "Actor", the next
    frame built a second "live_1" and "Actor" froze."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    take = moving_take(range(5))
    session = recorded_session(body_model, take, state="streaming")
    live.show_frame(session, _frame_of(take, [1]))
    bpy.data.objects["live_1"].name = "Actor"
    actor = bpy.data.objects["Actor"]
    actor.pose.bones[JOINT_NAMES[0]].location = (0.0, 0.0, 0.0)
    live.show_frame(session, _frame_of(take, [1]))
    assert [o.name for o in bpy.data.objects if o.type == "ARMATURE"] == ["Actor"]
    assert session.characters[1].armature_name == "Actor"
    assert np.array(actor.pose.bones[JOINT_NAMES[0]].location).any()  # posed again


def test_a_duplicated_live_character_leaves_the_original_following_its_person(addon, body_model):
    """A duplicate (Shift+D) copies the character's tag: with the original renamed, the view found
    the copy first (by name order) and drove it, and the original froze."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    take = moving_take(range(5))
    session = recorded_session(body_model, take, state="streaming")
    live.show_frame(session, _frame_of(take, [1]))
    original = bpy.data.objects["live_1"]
    copy = original.copy()
    bpy.context.scene.collection.objects.link(copy)
    original.name = "Zed"  # after the copy's "live_1.001" in name order
    assert copy.get(live.LIVE_TAG) == original.get(live.LIVE_TAG)
    for obj in (original, copy):
        obj.pose.bones[JOINT_NAMES[0]].location = (0.0, 0.0, 0.0)
    live.show_frame(session, _frame_of(take, [1]))
    assert session.characters[1].armature_name == "Zed"
    assert np.array(original.pose.bones[JOINT_NAMES[0]].location).any()
    assert not np.array(copy.pose.bones[JOINT_NAMES[0]].location).any()


def test_an_armature_that_only_has_a_live_characters_name_is_left_alone(addon, body_model):
    """After File > Open, any armature named "live_1" in the opened file was taken over as the live
    character; a rig that is no SMPL character ended the session with "unexpected AttributeError"."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    take = moving_take(range(5))
    session = recorded_session(body_model, take, state="streaming")
    live.show_frame(session, _frame_of(take, [1]))
    bpy.ops.wm.read_factory_settings(use_empty=True)  # File > Open of a file with its own "live_1"
    theirs = bpy.data.objects.new("live_1", bpy.data.armatures.new("their rig"))
    bpy.context.scene.collection.objects.link(theirs)
    live.show_frame(session, _frame_of(take, [1]))
    ours = bpy.data.objects[session.characters[1].armature_name]
    assert ours != theirs and ours.name == "live_1.001" and not theirs.data.bones
    assert live.LIVE_TAG not in theirs and np.array(ours.pose.bones[JOINT_NAMES[0]].location).any()


def test_a_person_appearing_leaves_the_user_in_edit_mode(addon, body_model):
    """A new person in the live view (from the timer, at any moment) knocked the object the user was
    editing out of Edit Mode into Object Mode."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    mesh = bpy.data.meshes.new("cube")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    cube = bpy.data.objects.new("cube", mesh)
    bpy.context.scene.collection.objects.link(cube)
    bpy.context.view_layer.objects.active = cube
    bpy.ops.object.mode_set(mode="EDIT")
    take = moving_take(range(5))
    session = recorded_session(body_model, take, state="streaming")
    for _ in range(2):  # (one character built a frame)
        live.show_frame(session, _frame_of(take, [1, 2]))
    assert len(session.characters) == 2
    assert bpy.context.view_layer.objects.active == cube and cube.mode == "EDIT"


def test_a_crowd_arriving_is_built_one_character_a_frame(addon, body_model):
    """Each character takes a good part of a second: 32 new people in one frame held Blender up for
    half a minute in one timer step."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    take = moving_take(range(5))
    session = recorded_session(body_model, take, state="streaming")
    for shown in range(1, 4):
        live.show_frame(session, _frame_of(take, [1, 2, 3]))
        assert sorted(session.characters) == [1, 2, 3][:shown]
    posed = [bpy.data.objects[c.armature_name].pose.bones[JOINT_NAMES[0]].location for c in session.characters.values()]
    assert all(np.array(location).any() for location in posed)


def test_past_the_most_characters_a_new_person_takes_over_the_one_seen_longest_ago(addon, body_model, monkeypatch):
    """The tracker gives a person a new id after a missed detection: an hour's session built hundreds."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    monkeypatch.setattr(live, "MAX_CHARACTERS", 2)
    take = moving_take(range(5))
    session = recorded_session(body_model, take, state="streaming")
    for people in ([1], [2], [1], [1, 3]):  # 2 was seen longest ago when 3 comes
        live.show_frame(session, _frame_of(take, people))
    two_was = session.characters[3].armature_name
    assert sorted(session.characters) == [1, 3] and two_was == "live_2"
    assert bpy.data.objects[two_was][live.LIVE_TAG] == f"{session.uid}:3"
    assert len([o for o in bpy.data.objects if o.type == "ARMATURE"]) == 2
    assert "More than 2 people were tracked" in session.message
    bpy.data.objects.remove(bpy.data.objects["live_1"])  # one the user deleted no longer counts
    live.show_frame(session, _frame_of(take, [3, 4]))
    assert sorted(session.characters) == [3, 4] and session.characters[4].armature_name != "live_1"


def test_a_frame_the_view_cannot_show_ends_the_session_with_the_reason(addon, body_model, monkeypatch):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    take = moving_take(range(5))
    session = recorded_session(body_model, take, state="streaming")
    session.connection._latest = _frame_of(take, [1])
    monkeypatch.setattr(session.connection, "stop", lambda: None)  # no server behind this connection

    def broken(*args):
        raise RuntimeError("ViewLayer does not contain object")

    monkeypatch.setattr(live, "show_frame", broken)
    assert live.live_tick() is None  # the timer ends of its own, rather than be dropped by Blender
    assert session.state == "failed" and session.stop_requested
    assert session.message == (
        "The live view stopped: unexpected RuntimeError: ViewLayer does not contain object. Start it again; any "
        "recording is kept."
    )
    assert session.connection.recording_stop() is take  # the recording so far is kept


def test_a_take_too_long_for_the_scenes_frames_is_kept_until_a_lower_frame_rate_places_it(
    addon, empty_scene, body_model, monkeypatch
):
    """Stop Recording threw such a take away ("no retry would place it"), though the limit is on the
    frames at the scene's rate: a lower rate places it."""
    take = moving_take(range(60))  # 2 s of a 30 frames/s source
    session = recorded_session(body_model, take)
    monkeypatch.setattr(live_client, "MAX_RECORDED_FRAMES", 100)  # the limit, scaled down to this take
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 60, 1.0  # 119 frames
    with pytest.raises(
        RuntimeError, match=r"too long for the scene's frames: at 60 frames/s.*more than 100 .*The take is kept"
    ):
        bpy.ops.vibe_mocap.live_record_stop()  # one report, no traceback
    assert session.unsaved_take is take and session.recording and session.last_result_path is None
    with pytest.raises(VibeError, match="lower the scene's frame rate first"):
        live.start_recording()

    scene.render.fps = 24  # 48 frames
    ((armature, _),) = live.stop_recording()
    assert session.unsaved_take is None and session.last_take is take and session.last_result_path.is_file()
    assert len(rotation_keys(armature, JOINT_NAMES[0])) == len(take_on_frames(take, 24).frame_ids[1]) == 48


def test_a_saved_take_imported_from_its_file_leaves_the_scenes_camera_and_resolution(addon, empty_scene, body_model):
    """A take has no video: File > Import (camera on by default) set the render size to the take's
    stand-in 1000 x 1000 and made a camera of it the scene's, and told to pick a video that never was."""
    from vibe_blender.importer import ImportOptions, import_motion_file

    session = recorded_session(body_model, moving_take(range(30)))
    live.stop_recording()
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    own = bpy.data.objects.new("MyCam", bpy.data.cameras.new("MyCam"))
    scene.collection.objects.link(own)
    scene.camera = own
    warnings = []
    options = ImportOptions(capture_video_path="/videos/walk.mp4")  # the capture panel's video, as its Import has
    characters = import_motion_file(session.last_result_path, body_model, options, warn=warnings.append)
    assert len(characters) == 1 and warnings == []
    assert (scene.render.resolution_x, scene.render.resolution_y) == (1920, 1080) and scene.camera == own


def test_a_saved_take_that_cannot_be_imported_says_where_it_is(addon, empty_scene, body_model, monkeypatch):
    """A take within what a result may hold but with more motion than an import takes: saved, then
    refused by the import. Before, the message gave neither the file's folder nor a way to import it."""
    from vibe_blender import importer

    take = moving_take(range(60))
    session = recorded_session(body_model, take)
    monkeypatch.setattr(importer, "MAX_PERSON_FRAMES", 10)  # the import's limit, scaled down to this take
    with pytest.raises(VibeError, match="The recording is saved as '.*live_.*npz' but could not be imported") as err:
        live.stop_recording()
    assert "File > Import > VIBE Mocap" in str(err.value) and "more than 10 would need" in str(err.value)
    assert session.last_result_path.is_file() and str(session.last_result_path) in str(err.value)


def test_a_recording_with_a_person_20_km_away_saves_and_imports_without_that_person_there(
    addon, empty_scene, fake_server_setup
):
    """A tiny camera scale puts a person 20 km from the camera: the stream took that frame, and the whole
    saved recording was refused by its import (and by File > Import), a result holding at most 10 km.
    Then the whole frame was skipped, everyone in it, and the panel blamed the server's version."""
    far = person(1, trans=(0.0, 0.0, 20_000.0))
    messages = [frame_message(i, 10.0 + i / 30, [far if i == 2 else person(1), person(2)]) for i in range(5)] + [END]
    with FakeLiveServer(messages, **fake_server_setup) as server:
        session = live.start_live("0", server_url=server.url, token=server.token, use_timer=False)
        live.start_recording()
        tick_until(lambda: live.live_tick() is None, 30)
    assert session.state == "ended" and session.connection.bad_messages == 0, session.message
    shown = " ".join(kw.get("text", "") for name, _, kw in draw_live_panel() if name == "label")
    assert "Left out 1 person-frame(s)" in shown and "update the server" not in shown, shown
    assert len(live.stop_recording()) == 2
    take = session.last_take
    assert take.frame_ids[1].tolist() == [0, 1, 3, 4] and take.frame_ids[2].tolist() == [0, 1, 2, 3, 4]
    result = load_result(session.last_result_path)
    assert np.abs(result.tracks[0].trans_cam_m).max() == 3.0
    assert result.meta["warnings"] == live_client.dropped_people_note(1)


def test_a_take_of_more_tracks_than_a_result_holds_keeps_the_longest_and_says_so(addon, monkeypatch):
    """A take of more than 10,000 tracks (a crowd; SORT gives a person a new id after a miss) was saved
    as a file that its own reader refuses."""
    monkeypatch.setattr(live, "MAX_TRACKS", 2)
    take = moving_take(range(30))
    zeros = np.zeros(72, np.float32), np.zeros(10, np.float32), np.zeros(3, np.float32)
    for index in range(30, 40):
        people = [LivePersonFrame(tid, index, *zeros) for tid in ((7, 8) if index < 35 else (7,))]
        take.add(LiveFrameMessage(index, 5000.0 + index / 30, tuple(people), None))
    result = live.take_to_result(take, "crowd", fps=24.0)
    assert [t.track_id for t in result.tracks] == [1, 7]
    assert (
        result.meta["warnings"]
        == "3 people were tracked; the result keeps the 2 tracked longest, the most a result file holds."
    )


def test_a_saved_take_that_does_not_read_back_is_kept_and_not_sent_to_file_import(
    addon, empty_scene, body_model, monkeypatch
):
    """A take holding a value the result file refuses was saved, its take dropped, and the failed import
    said "Import it with File > Import", which refuses that file the same way."""
    take = moving_take(range(30), betas={5: np.full(10, 50.0)})  # beyond ±10: no result file holds it
    session = recorded_session(body_model, take)
    with pytest.raises(VibeError, match="saved as '.*live_.*npz' but does not read back") as err:
        live.stop_recording()
    assert "nor can File > Import read it" in str(err.value) and "beyond ±10" in str(err.value)
    assert "Import it with" not in str(err.value)
    assert session.last_result_path.is_file() and str(session.last_result_path) in str(err.value)


def test_a_take_that_is_not_saved_is_thrown_away_only_when_asked(addon, body_model, fake_server_setup):
    session = recorded_session(body_model, moving_take(range(0, 60, 2)), state="lost")
    with pytest.raises(VibeError, match="no unsaved recording to discard"):
        live.discard_take()  # still recording: Stop Recording saves it
    assert ("operator", ("vibe_mocap.live_discard_take",), {"icon": "TRASH"}) not in draw_live_panel()
    session.unsaved_take = session.connection.recording_stop()  # as after a save that failed
    assert ("operator", ("vibe_mocap.live_discard_take",), {"icon": "TRASH"}) in draw_live_panel()
    assert bpy.ops.vibe_mocap.live_discard_take() == {"FINISHED"}  # the button (a script call skips its question)
    assert session.unsaved_take is None and not session.recording and session.last_take is None
    with pytest.raises(RuntimeError, match="no unsaved recording to discard"):
        bpy.ops.vibe_mocap.live_discard_take()
    with FakeLiveServer([frame_message(0, 10.0, [person(1)])], **fake_server_setup) as server:
        new = live.start_live("0", server_url=server.url, token=server.token, use_timer=False)
        assert live.current_session() is new is not session
        live.stop_live()
        tick_until(lambda: live.live_tick() is None, 30)


def test_start_live_keeps_a_recording_that_was_not_saved(addon, empty_scene, body_model, fake_server_setup):
    """Start Live after a dropped connection replaced the session and threw its recording away."""
    take = moving_take(range(0, 60, 2))
    session = recorded_session(body_model, take, state="lost")
    with FakeLiveServer([frame_message(0, 10.0, [person(1)])], **fake_server_setup) as server:
        start = functools.partial(live.start_live, "0", server_url=server.url, token=server.token, use_timer=False)
        with pytest.raises(VibeError, match="holds a recording that is not saved: press Stop Recording"):
            start()
        assert live.current_session() is session and session.recording
        assert len(live.stop_recording()) == 1
        assert session.last_take is take and session.last_result_path.is_file()
        new = start()  # the take is saved: nothing is lost any more
        assert live.current_session() is new is not session
        live.stop_live()
        tick_until(lambda: live.live_tick() is None, 30)

        # a lost session whose recording holds nobody has nothing to lose
        session = recorded_session(body_model, moving_take(range(0, 10), absent=set(range(10))), state="lost")
        assert session.recording
        new = start()
        assert live.current_session() is new is not session
        live.stop_live()
        tick_until(lambda: live.live_tick() is None, 30)


def test_the_servers_warning_is_in_the_panel_and_the_imported_take(addon, empty_scene, fake_server_setup):
    """The server ran HOG in place of YOLO (no yolov3.weights): `vibe-mocap live` said so, the Live
    panel did not."""
    said = "yolov3.weights is not in the model data, so people were found with HOG"
    messages = [frame_message(i, 10.0 + i / 30, [person(1)]) for i in range(3)] + [END]
    with FakeLiveServer(messages, start_answer={"warnings": [said]}, **fake_server_setup) as server:
        session = live.start_live("0", server_url=server.url, token=server.token, use_timer=False)
        live.start_recording()
        tick_until(lambda: live.live_tick() is None, 30)
    assert session.state == "ended" and session.message.endswith(said), session.message
    shown = " ".join(kw["text"] for name, _, kw in draw_live_panel() if name == "label")  # lines wrapped
    assert said in shown, shown
    assert len(live.stop_recording()) == 1
    assert load_result(session.last_result_path).meta["warnings"] == said
    warnings = []
    options = ImportOptions(add_camera=False)
    import_motion_file(session.last_result_path, session.body_model, options, warn=warnings.append)
    assert any(w.endswith(f", when captured: {said}") for w in warnings), warnings


def test_the_live_view_goes_on_in_a_file_opened_meanwhile(addon, fake_server_setup):
    """File > New or Open during a live session removed its timer (not persistent): the view froze
    while the session ran on. The characters were in the old file: they are built again in the new one."""
    messages = [frame_message(0, 10.0, [person(1)]), HOLD, frame_message(1, 10.1, [person(1, trans=(0.5, 0, 3))]), END]
    with FakeLiveServer(messages, **fake_server_setup) as server:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        session = live.start_live("0", server_url=server.url, token=server.token)
        try:
            tick_until(lambda: session.characters)
            before = session.characters[1].armature_name
            bpy.ops.wm.read_factory_settings(use_empty=True)  # File > New
            assert bpy.app.timers.is_registered(live.live_tick)
        finally:
            if bpy.app.timers.is_registered(live.live_tick):  # it never fires in the bpy module: called below
                bpy.app.timers.unregister(live.live_tick)
        assert before not in bpy.data.objects
        bpy.data.objects.new(before, bpy.data.meshes.new("mesh"))  # an object of the new file has its name
        server.resume.set()
        tick_until(lambda: live.live_tick() is None, 30)
    assert session.state == "ended" and session.frames_shown == 2, session.message
    assert not session.placeholder and "model data" not in session.message  # a server with a real model
    armature = bpy.data.objects[session.characters[1].armature_name]
    assert armature.type == "ARMATURE" and armature.name != before and armature.name in bpy.context.scene.objects
    assert np.array(armature.pose.bones[JOINT_NAMES[0]].location).any()  # posed for the second frame
